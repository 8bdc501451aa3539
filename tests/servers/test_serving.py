"""serve_in_thread: loopback only, real port from port 0, bound once, stops cleanly."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from opapprove.servers import serving
from opapprove.servers.serving import ServerStartError, listening_socket, serve_in_thread


def hello_app() -> Starlette:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)])


def test_port_zero_gets_a_real_port_and_stops() -> None:
    with serve_in_thread(hello_app()) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(server.url).text == "hello"
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url, timeout=2)


def test_refuses_non_loopback_hosts() -> None:
    with pytest.raises(ServerStartError, match="loopback"):
        serve_in_thread(hello_app(), host="0.0.0.0")


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError, match="in use"):
            serve_in_thread(hello_app(), port=port)


def test_run_sandbox_serves_until_stopped() -> None:
    from opapprove.servers.sandbox import SandboxConfig
    from opapprove.servers.serving import run_sandbox

    stop = threading.Event()
    urls: list[str] = []
    seen: list[int] = []

    def ready(url: str) -> None:
        urls.append(url)
        seen.append(httpx.get(f"{url}/buyer", headers={"Accept": "application/json"}).status_code)
        stop.set()

    runner = threading.Thread(
        target=run_sandbox, args=(SandboxConfig(),), kwargs={"on_ready": ready, "stop": stop}
    )
    runner.start()
    runner.join(30)
    assert not runner.is_alive()
    assert seen == [200]
    with pytest.raises(httpx.TransportError):
        httpx.get(urls[0], timeout=2)


def test_serves_on_the_socket_it_was_given_and_reports_its_port() -> None:
    # `opapprove sandbox --port N` binds once and hands the socket over: no moment between a
    # probe and a second bind in which another process could take the port.
    from opapprove.servers.sandbox import SandboxConfig
    from opapprove.servers.serving import run_sandbox

    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    stop = threading.Event()
    urls: list[str] = []
    seen: list[int] = []

    def ready(url: str) -> None:
        urls.append(url)
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        seen.append(httpx.get(f"{url}/buyer", headers={"Accept": "application/json"}).status_code)
        stop.set()

    runner = threading.Thread(
        target=run_sandbox,
        args=(SandboxConfig(),),
        kwargs={"sock": sock, "on_ready": ready, "stop": stop},
    )
    runner.start()
    runner.join(30)
    assert not runner.is_alive()
    assert urls == [f"http://127.0.0.1:{port}"]
    assert seen == [200]
    assert sock.fileno() == -1  # closed with the server


def test_a_request_head_that_trickles_in_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slowloris: a client that opens a connection and says nothing, or sends its headers a
    few bytes at a time, is disconnected once the head is HEAD_TIMEOUT_SECONDS late, however
    steadily bytes come; a request whose head arrives in time is served as before."""
    monkeypatch.setattr(serving, "HEAD_TIMEOUT_SECONDS", 0.2)
    head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 40

    def closed_after(sock: socket.socket, trickle: bytes) -> float:
        """Seconds until the server closed ``sock`` while ``trickle`` went out a byte every
        20 ms (nothing is answered: a closed connection reads b"")."""
        started = time.monotonic()
        sock.settimeout(0.02)
        for byte in trickle:
            try:
                if sock.recv(1) == b"":
                    break
            except TimeoutError:
                pass
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
        else:
            sock.settimeout(5)
            assert sock.recv(1) == b""
        return time.monotonic() - started

    with serve_in_thread(hello_app()) as server:
        for trickle in (b"", head):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                assert closed_after(sock, trickle) < 5
        # A kept-alive connection: answered, then the next head trickles in and is cut off.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            assert closed_after(sock, head) < 5
        assert httpx.get(server.url).text == "hello"
