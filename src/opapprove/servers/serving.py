"""Serve an ASGI app with uvicorn on loopback, in a background thread.

``serve_in_thread(app)`` binds 127.0.0.1 (port 0 picks a free port) once, in the caller's
thread, hands that socket to uvicorn, waits until it serves, and returns a ``RunningServer``
whose ``.url`` holds the port of that socket. Binding before uvicorn (and never probing a port
and binding it again) leaves no moment in which another process can take the port.

Connections are served by a uvicorn h11 protocol that closes a connection whose request
head trickles in (``GuardedH11Protocol``), and also hands the app a way to close the
connection without answering (``scope["extensions"]["opapprove.close_connection"]``),
which the sandbox's drop faults use; uvicorn itself would answer 500 instead.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from opapprove.servers.sandbox.config import SandboxConfig

CLOSE_EXTENSION = "opapprove.close_connection"
_LOOPBACK_NAMES = {"localhost"}


class ServerStartError(RuntimeError):
    """The server could not start listening (one line: what, why, what to do)."""


# How long a request's head (its request line and headers) may take to arrive. uvicorn has
# no such limit: its keep-alive timer stops at a request's first byte, and a new connection
# has none, so a client sending a header a byte at a time (slowloris) holds a connection,
# and its memory, for as long as it likes.
HEAD_TIMEOUT_SECONDS = 10.0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head has not arrived
    HEAD_TIMEOUT_SECONDS after the connection opened or the head's first byte came."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state != h11.IDLE:  # the head is in: the app's own limits apply
            self._stop_head_timer()
        elif self._head_timer is None:  # the first bytes of the next request's head
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state == h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class ClosableH11Protocol(GuardedH11Protocol):
    """The guarded h11 protocol, plus a per-connection ``close`` callable in the scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        inner = self.app

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope.get("type") == "http":
                extensions = dict(scope.get("extensions") or {})
                extensions[CLOSE_EXTENSION] = transport.close
                scope["extensions"] = extensions
            await inner(scope, receive, send)

        self.app = app


class _Server(uvicorn.Server):
    """Tells a waiting thread when its sockets listen (or when starting gave up)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RunningServer:
    """A uvicorn server in a daemon thread; ``stop()`` (or leaving ``with``) shuts it down."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str, port: int):
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C in the main thread interrupts the wait)."""
        while self._thread.is_alive():
            self._thread.join(0.5)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningServer({self.url})"


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, bound as uvicorn binds (a port in TIME_WAIT is
    reused); OSError if it cannot be."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError:
        sock.close()
        raise
    return sock


def serve_in_thread(
    app: Callable[..., Any],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sock: socket.socket | None = None,
    start_timeout: float = 15.0,
    log_handler: logging.Handler | None = None,
) -> RunningServer:
    """Serve on ``sock`` if given (a listening socket; the server closes it when it stops),
    else on a socket bound here to ``host:port``. ``log_handler`` also gets uvicorn's own
    lines."""
    if sock is None:
        if not _is_loopback(host):
            raise ServerStartError(
                f"refusing to bind {host}: opapprove servers listen on loopback only; use 127.0.0.1"
            )
        try:
            sock = listening_socket(host, port)
        except OSError as exc:
            why = exc.strerror or exc
            if exc.errno == errno.EADDRINUSE:
                raise ServerStartError(
                    f"port {port} on {host} is in use ({why}); use port 0 for a free one"
                ) from exc
            raise ServerStartError(f"cannot listen on {host}:{port}: {why}") from exc
    bound_host, bound_port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=bound_host,
        port=bound_port,
        log_level="warning",
        access_log=False,
        http=ClosableH11Protocol,
        lifespan="off",
        loop="asyncio",
    )
    if log_handler is not None:
        # After Config: uvicorn's dictConfig there drops handlers added before it.
        logging.getLogger("uvicorn.error").addHandler(log_handler)
    server = _Server(config)
    started = server.ready
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # uvicorn exits with SystemExit when it cannot serve
            failure.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=run, name=f"uvicorn-{host}:{bound_port}", daemon=True)
    thread.start()
    if not started.wait(start_timeout) or not server.started:
        server.should_exit = True
        sock.close()
        why = f" ({failure[0]!r})" if failure else ""
        raise ServerStartError(f"could not start a server on {host}:{bound_port}{why}")
    return RunningServer(server, thread, host, bound_port)


def run_sandbox(
    config: SandboxConfig,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    sock: socket.socket | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve the sandbox until Ctrl-C (or ``stop`` is set); ``on_ready`` gets its URL.

    This is what ``opapprove sandbox`` runs. With ``config.public_url`` unset the sandbox
    takes its origin from each request's Host header, so port 0, ``localhost`` and
    ``127.0.0.1`` all work; print ``describe(config, url)`` from ``on_ready``. ``sock``: a
    socket the caller bound already (``host`` and ``port`` are then not used).
    """
    # Imported here: serving is generic and must not pull the sandbox in for other servers.
    from opapprove.servers.sandbox.app import create_app

    app = create_app(config)
    server = serve_in_thread(app, host=host, port=port, sock=sock)
    try:
        if on_ready is not None:
            on_ready(server.url)
        if stop is None:
            server.wait()
        else:
            while server.running and not stop.wait(0.2):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        app.sandbox.close()


class LateApp:
    """An ASGI app whose inner app is set after serving starts.

    The listener's settings need the listener's own URL, which exists only once its socket
    listens. It also remembers the server thread's loop, so the listener's Flow can be
    closed on the loop its HTTP clients were made on.
    """

    def __init__(self) -> None:
        self.inner: Callable[..., Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.inner is not None, "serve the inner app before sending requests"
        self.loop = asyncio.get_running_loop()
        await self.inner(scope, receive, send)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Run ``coro`` on the server's loop (if it ever served) and wait for its result."""
        if self.loop is None:
            coro.close()
            return None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
