"""The asyncio network backend and connection pool, against real loopback servers.

The server here is a few lines of HTTP/1.1 on ``asyncio.start_server`` so that each test
can see what a pool does to it: how many connections it opens, how many at once, and
what happens when the server hangs up on an idle one or stalls.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opapprove.openpayments import asyncio_pool, errors
from opapprove.openpayments.asyncio_pool import (
    AsyncioBackend,
    AsyncioConnectionPool,
    pooled_transport,
)
from opapprove.openpayments.client import OpenPaymentsClient
from opapprove.openpayments.transport import SchemeTransport


@dataclass
class Server:
    delay: float = 0.0
    hang_up_after_response: bool = False
    stall: bool = False
    url: str = ""
    accepted: int = 0
    open_now: int = 0
    most_open: int = 0
    served: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                if self.stall:
                    await asyncio.sleep(3600)
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.served += 1
                body = b'{"ok":true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                if self.hang_up_after_response:
                    break  # no "Connection: close": the client only sees the socket close
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            return  # the test's loop is ending; asyncio would log a cancelled handler
        finally:
            self.open_now -= 1
            writer.close()


S = TypeVar("S", bound=Server)


@asynccontextmanager
async def serving(server: S, tls: ssl.SSLContext | None = None) -> AsyncIterator[S]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listener.close()
        for writer in server.writers:
            writer.close()


def _client(
    *,
    max_connections: int = 100,
    keepalive: int = 100,
    verify: ssl.SSLContext | bool = False,
    timeout: float | httpx.Timeout = 5.0,
    keepalive_expiry: float = 5.0,
) -> httpx.AsyncClient:
    transport = pooled_transport(
        verify,
        max_connections=max_connections,
        max_keepalive_connections=keepalive,
        keepalive_expiry=keepalive_expiry,
    )
    return httpx.AsyncClient(transport=transport, timeout=timeout)


@asynccontextmanager
async def one_connection_to(
    server: S, *, pool_timeout: float
) -> AsyncIterator[tuple[S, httpx.AsyncClient]]:
    """``server`` served, and a client allowed one connection that waits ``pool_timeout`` s
    for it to come free."""
    timeout = httpx.Timeout(5.0, pool=pool_timeout)
    async with serving(server), _client(max_connections=1, timeout=timeout) as client:
        yield server, client


def test_the_open_payments_client_sends_through_this_pool() -> None:
    async def main() -> None:
        async with serving(Server()) as server:
            client = OpenPaymentsClient()
            try:
                await client._http.get(f"{server.url}/x")
                transport = client._http._transport
                assert isinstance(transport, SchemeTransport) and transport._plain is not None
                pool = transport._plain._pool
                assert isinstance(pool, AsyncioConnectionPool)
                assert isinstance(pool._network_backend, AsyncioBackend)
            finally:
                await client.aclose()

    asyncio.run(main())


def test_a_burst_reuses_connections_instead_of_reconnecting() -> None:
    async def main() -> None:
        async with serving(Server(delay=0.05)) as server, _client() as client:
            for _ in range(3):
                answers = await asyncio.gather(
                    *(client.get(f"{server.url}/r/{i}") for i in range(64))
                )
                assert all(a.status_code == 200 for a in answers)
            assert server.served == 192
            # One connection per request in flight, opened once, then reused (httpx's own
            # pool keeps 20 and reconnects for the other 44 of every burst).
            assert server.accepted == 64

    asyncio.run(main())


def test_never_more_connections_than_the_limit() -> None:
    async def main() -> None:
        async with serving(Server(delay=0.02)) as server, _client(max_connections=3) as client:
            answers = await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(20)))
            assert [a.status_code for a in answers] == [200] * 20
            assert server.most_open <= 3
            assert server.accepted == 3

    asyncio.run(main())


def test_idle_connections_beyond_the_keepalive_limit_are_closed() -> None:
    async def main() -> None:
        async with serving(Server(delay=0.05)) as server, _client(keepalive=2) as client:
            await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(6)))
            await client.get(f"{server.url}/again")  # the pool tidies up on each request
            await asyncio.sleep(0.05)
            assert server.accepted == 6
            assert server.open_now <= 2

    asyncio.run(main())


def test_a_server_hang_up_on_an_idle_connection_costs_a_new_connection_not_an_error() -> None:
    async def main() -> None:
        async with serving(Server(hang_up_after_response=True)) as server, _client() as client:
            for i in range(5):
                await asyncio.sleep(0.02)  # the loop sees the close before the next request
                answer = await client.get(f"{server.url}/{i}")
                assert answer.json() == {"ok": True}
            assert server.accepted == 5

    asyncio.run(main())


def test_a_stalled_server_is_a_read_timeout() -> None:
    async def main() -> None:
        async with serving(Server(stall=True)) as server, _client(timeout=0.3) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"{server.url}/slow")

    asyncio.run(main())


def test_nothing_listening_is_a_connect_error() -> None:
    async def main() -> None:
        async with _client() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("http://127.0.0.1:1/x")

    asyncio.run(main())


def test_the_client_reports_a_stalled_server_as_its_timeout_error() -> None:
    async def main() -> None:
        async with serving(Server(stall=True)) as server:
            client = OpenPaymentsClient(timeout=0.3, retries=0)
            try:
                with pytest.raises(errors.TransportError) as caught:
                    await client.get_wallet_address(f"{server.url}/alice")
                assert "timed out" in str(caught.value).lower()
            finally:
                await client.aclose()

    asyncio.run(main())


# ----------------------------------------------------------------------------- TLS


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for 127.0.0.1 and a client context that trusts only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "cert.pem"
    key_pem = tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_pem, key_pem)
    client = ssl.create_default_context(cafile=str(cert_pem))
    return server, client


def test_https_upgrades_the_connection_and_reuses_it(tmp_path: Path) -> None:
    server_tls, client_tls = _self_signed(tmp_path)

    async def main() -> None:
        async with serving(Server(), tls=server_tls) as server, _client(verify=client_tls) as c:
            for i in range(3):
                answer = await c.get(f"{server.url}/{i}")
                assert answer.json() == {"ok": True}
            assert server.accepted == 1

    asyncio.run(main())


def test_an_untrusted_certificate_is_a_connect_error(tmp_path: Path) -> None:
    server_tls, _ = _self_signed(tmp_path)

    async def main() -> None:
        async with serving(Server(), tls=server_tls) as server, _client(verify=True) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{server.url}/x")

    asyncio.run(main())


def test_under_steady_load_each_request_is_assigned_once() -> None:
    """64 workers, each sending requests back to back over kept-alive connections.

    httpcore's own assignment can hand one idle connection to several queued requests;
    all but one then go round again, each pass scanning every connection (a bulk replay
    spent 4x its CPU there). Here each request takes one pass to send and one to finish.
    """
    passes = 0

    class Counted(AsyncioConnectionPool):
        def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
            nonlocal passes
            passes += 1
            return super()._assign_requests_to_connections()

    async def main() -> None:
        async with serving(Server(delay=0.01)) as server:
            transport = httpx.AsyncHTTPTransport()
            transport._pool = Counted(
                ssl_context=None,
                max_connections=100,
                max_keepalive_connections=100,
                keepalive_expiry=5.0,
            )
            async with httpx.AsyncClient(transport=transport) as client:

                async def worker(n: int) -> None:
                    for i in range(10):
                        answer = await client.get(f"{server.url}/{n}/{i}")
                        assert answer.status_code == 200

                await asyncio.gather(*(worker(n) for n in range(64)))
            assert server.served == 640
            assert server.accepted <= 64

    asyncio.run(main())
    assert passes <= 2 * 640 + 64


def test_closing_the_client_closes_every_connection(tmp_path: Path) -> None:
    server_tls, client_tls = _self_signed(tmp_path)

    async def main(tls: bool) -> None:
        server = Server(delay=0.02)
        context = server_tls if tls else None
        async with serving(server, tls=context):
            client = _client(verify=client_tls if tls else False)
            await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(8)))
            assert server.open_now == 8
            await client.aclose()
            for _ in range(100):
                if server.open_now == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.open_now == 0

    asyncio.run(main(tls=False))
    asyncio.run(main(tls=True))


def test_a_name_whose_first_address_refuses_still_connects() -> None:
    # "localhost" usually resolves to ::1 first; the server listens on 127.0.0.1 only.
    async def main() -> None:
        async with serving(Server()) as server, _client() as client:
            port = server.url.rsplit(":", 1)[1]
            answer = await client.get(f"http://localhost:{port}/x")
            assert answer.json() == {"ok": True}

    asyncio.run(main())


@pytest.mark.parametrize("seed", range(5))
def test_random_load_with_hang_ups_and_tight_limits(seed: int) -> None:
    """Every request answered, never more connections than allowed, whatever the mix."""
    import random

    rng = random.Random(seed)

    class Flaky(Server):
        async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.delay = rng.choice((0.0, 0.001, 0.01))
            self.hang_up_after_response = rng.random() < 0.3
            await super().handle(reader, writer)

    async def main() -> None:
        async with (
            serving(Flaky()) as server,
            _client(max_connections=5, keepalive=2) as client,
        ):

            async def worker(n: int) -> None:
                for i in range(8):
                    if rng.random() < 0.3:
                        await asyncio.sleep(rng.random() * 0.02)
                    answer = await client.get(f"{server.url}/{n}/{i}")
                    assert answer.json() == {"ok": True}

            await asyncio.gather(*(worker(n) for n in range(30)))
            assert server.served == 240
            assert server.most_open <= 5

    asyncio.run(main())


# ------------------------------------------------- scripted servers: what wallets do

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Scripted(Server):
    """A server that plays ``script`` on every connection it accepts."""

    script: Script | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.script is not None
        self.accepted += 1
        self.open_now += 1
        self.writers.append(writer)
        try:
            await self.script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            return
        finally:
            self.open_now -= 1
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head (its body read and dropped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "content-length" and int(value):
            await reader.readexactly(int(value))
    return head


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _answer_ok_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await _read_request(reader)
        writer.write(OK)
        await writer.drain()


async def _cancel(task: asyncio.Task[httpx.Response]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _full_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener that never accepts, its queue filled: a connect to it gets no answer.

    Linux drops a SYN to a full accept queue, so the connect waits as it would for a
    host that is down (a blackhole address is not reliable in every sandbox).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(listener.getsockname())
        except BlockingIOError:
            pass
        fillers.append(filler)
    return listener, fillers


# ---------------------------------------------------------------- response bodies


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_body_of_many_reads_arrives_whole(tmp_path: Path, tls: bool) -> None:
    server_tls, client_tls = _self_signed(tmp_path)
    body = bytes(range(256)) * 4096  # 1 MiB: 16 reads of 64 KiB; asyncio pauses at 128 KiB

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async def main() -> None:
        async with (
            serving(Scripted(script=script), tls=server_tls if tls else None) as server,
            _client(verify=client_tls if tls else False) as client,
        ):
            for i in range(2):
                answer = await client.get(f"{server.url}/{i}")
                assert answer.content == body
            assert server.accepted == 1

    asyncio.run(main())


def test_a_chunked_body_arrives_whole_and_the_connection_is_reused() -> None:
    parts = [bytes([65 + i % 26]) * (1000 + 997 * i) for i in range(100)]  # ~5 MiB

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in parts:
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def main() -> None:
        async with serving(Scripted(script=script)) as server, _client() as client:
            for i in range(2):
                answer = await client.get(f"{server.url}/{i}")
                assert answer.content == b"".join(parts)
            assert server.accepted == 1

    asyncio.run(main())


def test_a_body_that_ends_with_the_connection_is_read_to_the_end_and_not_reused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        # No length: the body is everything up to the close.
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"y" * 200_000)
        await writer.drain()

    async def main() -> None:
        async with serving(Scripted(script=script)) as server, _client() as client:
            for i in range(3):
                answer = await client.get(f"{server.url}/{i}")
                assert answer.content == b"y" * 200_000
            assert server.accepted == 3

    asyncio.run(main())


def test_a_trickled_body_is_read_to_the_end_while_each_byte_comes_in_time() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"z")
        await writer.drain()

    async def main() -> None:
        # The whole body takes longer than the read timeout, each byte well within it.
        async with serving(Scripted(script=script)) as server, _client(timeout=0.3) as client:
            answer = await client.get(f"{server.url}/slow")
            assert answer.content == b"z" * 10

    asyncio.run(main())


def test_answers_without_a_body_leave_the_connection_ready_for_the_next() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await _read_request(reader)
            if head.startswith(b"HEAD"):  # the length of the body a GET would get, no body
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n")
            elif head.startswith(b"DELETE"):
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                writer.write(OK)
            await writer.drain()

    async def main() -> None:
        async with serving(Scripted(script=script)) as server, _client() as client:
            for _ in range(2):
                head = await client.head(f"{server.url}/x")
                assert (head.status_code, head.content) == (200, b"")
                gone = await client.delete(f"{server.url}/x")
                assert (gone.status_code, gone.content) == (204, b"")
                answer = await client.get(f"{server.url}/x")
                assert answer.content == b"ok"
            assert server.accepted == 1

    asyncio.run(main())


# ------------------------------------------------------------------- cancellation


def test_a_request_cancelled_while_connecting_gives_its_slot_back() -> None:
    listener, fillers = _full_listener()
    silent = f"http://127.0.0.1:{listener.getsockname()[1]}"

    async def main() -> None:
        async with one_connection_to(Scripted(script=_answer_ok_forever), pool_timeout=0.5) as (
            server,
            client,
        ):
            connecting = asyncio.create_task(client.get(f"{silent}/x"))
            await asyncio.sleep(0.1)
            await _cancel(connecting)
            answer = await client.get(f"{server.url}/next")
            assert answer.content == b"ok"

    try:
        asyncio.run(main())
    finally:
        for sock in (listener, *fillers):
            sock.close()


def test_a_request_cancelled_while_awaiting_its_answer_gives_its_slot_back() -> None:
    async def main() -> None:
        async with one_connection_to(Server(delay=0.3), pool_timeout=1.0) as (server, client):
            waiting = asyncio.create_task(client.get(f"{server.url}/first"))
            await asyncio.sleep(0.1)
            await _cancel(waiting)
            answer = await client.get(f"{server.url}/next")
            assert answer.json() == {"ok": True}
            # The cancelled request's connection was mid-exchange, so it was not reused.
            assert server.accepted == 2

    asyncio.run(main())


def test_a_request_cancelled_while_queued_for_a_connection_leaves_the_queue() -> None:
    async def main() -> None:
        async with one_connection_to(Server(delay=0.2), pool_timeout=1.0) as (server, client):
            first = asyncio.create_task(client.get(f"{server.url}/first"))
            await asyncio.sleep(0.05)
            queued = asyncio.create_task(client.get(f"{server.url}/queued"))
            await asyncio.sleep(0.05)
            await _cancel(queued)
            assert (await first).json() == {"ok": True}
            assert (await client.get(f"{server.url}/next")).json() == {"ok": True}
            assert server.served == 2
            assert server.accepted == 1

    asyncio.run(main())


def test_a_request_cancelled_as_it_is_handed_a_new_connection_gives_the_slot_back() -> None:
    """One connection allowed; the answer ahead ends with ``Connection: close``, so
    closing it hands the waiting request a new connection, not yet opened; that request
    is cancelled before it runs.

    httpcore's own pool keeps that connection, never opened and no one's, for good: with
    one slot, every later request waits for it and ends in a PoolTimeout.
    """

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def main() -> None:
        async with one_connection_to(Scripted(script=script), pool_timeout=0.5) as (server, client):
            transport = client._transport
            assert isinstance(transport, httpx.AsyncHTTPTransport)
            pool = transport._pool
            async with client.stream("GET", f"{server.url}/first") as first:
                queued = asyncio.create_task(client.get(f"{server.url}/queued"))
                await asyncio.sleep(0.05)
                await first.aread()
            # The queued request now holds a connection it has not started on.
            assert [r.is_queued() for r in pool._requests] == [False]
            assert [c.info() for c in pool.connections] == ["CONNECTING"]
            await _cancel(queued)
            answer = await client.get(f"{server.url}/next")
            assert answer.content == b"ok"

    asyncio.run(main())


def test_a_request_cancelled_during_the_tls_handshake_closes_its_socket() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # no handshake; wait for the client to go

    async def main() -> None:
        async with serving(Scripted(script=mute)) as server, _client() as client:
            url = server.url.replace("http://", "https://")
            handshaking = asyncio.create_task(client.get(f"{url}/x"))
            await asyncio.sleep(0.1)
            assert server.open_now == 1
            await _cancel(handshaking)
            for _ in range(100):
                if server.open_now == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.open_now == 0  # closed now, not when the socket is collected

    asyncio.run(main())


# ----------------------------------------------------------------------- timeouts


def test_a_connect_that_gets_no_answer_is_a_connect_timeout() -> None:
    listener, fillers = _full_listener()

    async def main() -> None:
        async with _client(timeout=0.2) as client:
            with pytest.raises(httpx.ConnectTimeout):
                await client.get(f"http://127.0.0.1:{listener.getsockname()[1]}/x")

    try:
        asyncio.run(main())
    finally:
        for sock in (listener, *fillers):
            sock.close()


def test_a_tls_handshake_that_gets_no_answer_is_a_connect_timeout() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def main() -> None:
        async with serving(Scripted(script=mute)) as server, _client(timeout=0.2) as client:
            with pytest.raises(httpx.ConnectTimeout):
                await client.get(server.url.replace("http://", "https://") + "/x")

    asyncio.run(main())


def test_every_connection_busy_past_the_pool_timeout_is_a_pool_timeout() -> None:
    async def main() -> None:
        async with one_connection_to(Server(delay=0.3), pool_timeout=0.1) as (server, client):
            busy = asyncio.create_task(client.get(f"{server.url}/busy"))
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.PoolTimeout):
                await client.get(f"{server.url}/waits")
            assert (await busy).json() == {"ok": True}
            assert (await client.get(f"{server.url}/after")).json() == {"ok": True}

    asyncio.run(main())


# --------------------------------------------------------------------- keep-alive


class _PoolClock:
    """The pool module's ``time``: its monotonic clock moves only when the test moves it,
    so whether a keep-alive window has run out does not hang on how busy the machine is
    (two requests 0.05 s apart were once 0.2 s apart on a loaded CI machine)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def pool_clock(monkeypatch: pytest.MonkeyPatch) -> _PoolClock:
    clock = _PoolClock()
    monkeypatch.setattr(asyncio_pool, "time", clock)
    return clock


def test_an_idle_connection_past_its_keepalive_expiry_is_not_reused(
    pool_clock: _PoolClock,
) -> None:
    async def main() -> None:
        async with serving(Server()) as server, _client(keepalive_expiry=0.2) as client:
            await client.get(f"{server.url}/1")
            pool_clock.now += 0.05
            await client.get(f"{server.url}/2")
            assert server.accepted == 1
            pool_clock.now += 0.3
            await client.get(f"{server.url}/3")  # the pool looks when it next assigns
            assert server.accepted == 2
            await asyncio.sleep(0.05)
            assert server.open_now == 1  # and closed the old one

    asyncio.run(main())


@pytest.mark.parametrize("then_close", [True, False], ids=["then-close", "kept-open"])
def test_an_idle_connection_the_server_wrote_on_is_not_reused(then_close: bool) -> None:
    """Some servers answer an idle connection's timeout with a "408 Request Timeout"
    before closing it (Go's client has a special case for it). That answer is no one's:
    sent on it, a request would get the 408 (or a reset) instead of its own answer.
    """

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")
        await writer.drain()
        if not then_close:
            await _answer_ok_forever(reader, writer)

    async def main() -> None:
        async with serving(Scripted(script=script)) as server, _client() as client:
            await client.get(f"{server.url}/first")
            await asyncio.sleep(0.15)
            answer = await client.post(f"{server.url}/pay", content=b"{}")
            assert (answer.status_code, answer.content) == (200, b"ok")
            assert server.accepted == 2

    asyncio.run(main())


def _hang_up_unseen(server: Scripted) -> None:
    """The server sends its FIN on the idle connection while the client's loop is busy:
    the kernel has it, the event loop has not looked yet."""
    sock = server.writers[0].get_extra_info("socket")
    sock.shutdown(socket.SHUT_WR)
    time.sleep(0.01)  # loopback delivers it meanwhile; the loop does not run


async def _answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(OK)
    await writer.drain()
    await reader.read()  # a request after the FIN gets no answer


def test_a_hang_up_the_loop_has_not_seen_yet_costs_a_new_connection() -> None:
    async def main() -> None:
        async with serving(Scripted(script=_answer_once)) as server, _client() as client:
            await client.get(f"{server.url}/first")
            await asyncio.sleep(0.02)
            _hang_up_unseen(server)
            # A POST is never retried (money moves once), so the pool must not send it on
            # the dead connection: the one about to be reused is polled first.
            answer = await client.post(f"{server.url}/pay", content=b"{}")
            assert answer.content == b"ok"
            assert server.accepted == 2

    asyncio.run(main())


def test_the_client_is_answered_after_a_hang_up_the_loop_had_not_seen() -> None:
    """Through the whole client: the GET after an unseen hang-up is answered."""
    server = Scripted()

    async def answer_wallet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        document = {
            "id": f"{server.url}/alice",
            "assetCode": "USD",
            "assetScale": 2,
            "authServer": f"{server.url}/auth",
            "resourceServer": server.url,
        }
        body = json.dumps(document).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        await reader.read()

    server.script = answer_wallet

    async def main() -> None:
        async with serving(server):
            client = OpenPaymentsClient(retries=1, retry_backoff=0.01)
            try:
                await client.get_wallet_address(f"{server.url}/alice")
                await asyncio.sleep(0.02)
                _hang_up_unseen(server)
                again = await client.get_wallet_address(f"{server.url}/alice")
                assert again.id == f"{server.url}/alice"
                assert server.accepted == 2  # the first connection, then a new one
            finally:
                await client.aclose()

    asyncio.run(main())


# ------------------------------------------- a keep-alive running out as a request starts


async def _keep_alive_for(
    seconds: float, served: list[bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A server's keep-alive, as uvicorn's: an idle connection is closed after ``seconds``."""
    while True:
        try:
            head = await asyncio.wait_for(_read_request(reader), seconds)
        except TimeoutError:
            return  # Scripted closes it (a full close: what follows gets a reset)
        served.append(head)
        writer.write(OK)
        await writer.drain()


@dataclass
class _LateBy:
    """A trace hook holding the request for ``seconds`` as httpcore starts ``step``, as a
    loop busy with 64 requests does (bench, 1,000 grants)."""

    seconds: float
    step: str
    held: int = 0

    async def __call__(self, name: str, info: object) -> None:
        if name == f"http11.{self.step}.started":
            self.held += 1
            await asyncio.sleep(self.seconds)


def test_a_keep_alive_run_out_before_the_first_byte_costs_a_new_connection_not_an_error() -> None:
    """Was ``httpx.ReadError: [Errno 32] Broken pipe`` on a POST: the server closed the idle
    connection after the pool had checked it, the headers went out into the reset."""
    served: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _keep_alive_for(0.15, served, reader, writer)

    async def main() -> None:
        async with serving(Scripted(script=script)) as server, _client() as client:
            await client.post(f"{server.url}/first", content=b"{}")
            await asyncio.sleep(0.1)
            late = _LateBy(0.12, "send_request_headers")
            answer = await client.post(
                f"{server.url}/pay", content=b'{"a":1}', extensions={"trace": late}
            )
            assert answer.content == b"ok"
            assert server.accepted == 2 and late.held >= 1
            assert [h.split(b" ")[1] for h in served] == [b"/first", b"/pay"]  # each once

    asyncio.run(main())


def test_a_post_whose_bytes_went_out_is_never_sent_again() -> None:
    """Once a byte of the request is out, the server may have acted on it: an error, not a
    second POST (money moves once)."""
    served: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(await _read_request(reader))
        writer.write(OK)
        await writer.drain()
        served.append(await _read_request(reader))  # acted on, then the connection drops

    async def main() -> None:
        async with serving(Scripted(script=script)) as server, _client() as client:
            await client.post(f"{server.url}/first", content=b"{}")
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(f"{server.url}/pay", content=b"{}")
            await asyncio.sleep(0.05)
            assert (server.accepted, len(served)) == (1, 2)

    asyncio.run(main())


@dataclass
class _ClosedLate:
    """A trace hook moving the pool's clock ``seconds`` on as httpcore closes a response:
    the response is closed that long after its last byte came, as on a busy loop."""

    clock: _PoolClock
    seconds: float
    held: int = 0

    async def __call__(self, name: str, info: object) -> None:
        if name == "http11.response_closed.started":
            self.held += 1
            self.clock.now += self.seconds


def test_the_keep_alive_counts_from_the_servers_last_byte_not_from_closing_the_response(
    pool_clock: _PoolClock,
) -> None:
    """A server's keep-alive starts when it sends its answer; a busy client closes the
    response later. Reusing until then + expiry would send into the server's close."""

    async def main() -> None:
        async with serving(Server()) as server, _client(keepalive_expiry=0.2) as client:
            # The answer came; the response is closed 0.3 s later (between the check of
            # the previous and the first byte of the next request lie a few such turns).
            late = _ClosedLate(pool_clock, 0.3)
            await client.get(f"{server.url}/1", extensions={"trace": late})
            assert late.held == 1
            await client.get(f"{server.url}/2")
            assert server.accepted == 2  # 0.3 s after the server's last byte: not reused
            await client.get(f"{server.url}/3")
            assert server.accepted == 2  # just answered: reused

    asyncio.run(main())


# ---------------------------------------------------------------- TLS, cut short


@pytest.mark.parametrize("how", ["close", "abort", "reset"])
def test_a_tls_answer_cut_short_is_an_error_not_a_hang(tmp_path: Path, how: str) -> None:
    server_tls, client_tls = _self_signed(tmp_path)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        await writer.drain()
        await asyncio.sleep(0.05)
        if how == "close":  # close_notify, then FIN
            writer.close()
        elif how == "abort":  # FIN, no close_notify
            writer.transport.abort()
        else:  # RST
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    async def main() -> None:
        async with (
            serving(Scripted(script=script), tls=server_tls) as server,
            _client(verify=client_tls, timeout=5.0) as client,
        ):
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await client.get(f"{server.url}/x")

    asyncio.run(main())


def test_readability_without_poll_falls_back_to_select(monkeypatch: pytest.MonkeyPatch) -> None:
    import select as select_module
    import socket as socket_module

    from opapprove.openpayments import asyncio_pool

    left, right = socket_module.socketpair()
    try:
        monkeypatch.delattr(select_module, "poll")
        assert asyncio_pool.is_socket_readable(left) is False
        right.sendall(b"x")
        assert asyncio_pool.is_socket_readable(left) is True
    finally:
        left.close()
        right.close()
