"""An httpcore network backend on asyncio streams, for the client's connection pool.

httpx's default backend goes through anyio, and two of its costs dominate a bulk replay
(64 requests in flight, 1,000 grants; bench/RESULTS.md, "bulk"):

- Before reusing a connection, httpcore asks every idle one whether its socket is
  readable (a server that hung up). Through anyio that is a typed-attribute lookup and a
  ``poll`` system call per idle connection per request: with 64 kept alive, 4x the CPU
  of the whole replay. So httpx keeps only 20 alive and the rest reconnect, ~15% of the
  replay's CPU. Here the stream answers from what the loop has already read (``at_eof()``,
  unread bytes) and polls only when that says nothing, and the pool asks only the
  connection it is about to reuse, plus every idle one twice a second.
- Every read and write runs in an anyio cancel scope and every connect in a task group;
  ``asyncio.timeout`` (Python 3.11) is a timer handle.

The backend speaks only TCP (plus TLS upgrade), which is all the client opens.

httpcore's pool has two faults a bulk replay hits (``AsyncioConnectionPool`` mends them):
it closes every idle connection whenever the pool holds more than the keep-alive limit
(it counts all connections, not the idle ones), and within one assignment pass it hands
one idle connection to several queued requests, all but one of which then go round its
retry loop again, each time scanning every connection (4x the replay's CPU at 64 kept).
A third, found in review: a connection handed to a request that is cancelled before it
starts on it is never used or closed, and holds its slot for good.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any, SupportsIndex

import httpcore
import httpx
from httpcore import AsyncNetworkBackend, AsyncNetworkStream
from httpcore._utils import is_socket_readable  # the check httpcore's own backend makes

# How often every idle connection is checked for an expired keep-alive or a hang-up.
SWEEP_SECONDS = 0.5

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _Reader(asyncio.StreamReader):
    """asyncio's stream reader, noting when the server last sent something."""

    last_data_at = 0.0

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        # Called as the bytes come off the socket, not when some task gets round to
        # reading them: on a busy loop that is up to a whole pass earlier.
        self.last_data_at = time.monotonic()
        super().feed_data(data)


class AsyncioStream(AsyncNetworkStream):
    """One connection. ``reuse_within``: seconds after the server last sent something
    during which the connection may carry another request (see ``_quiet_too_long``)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        reuse_within: float | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._reuse_within = reuse_within
        self._opened_at = time.monotonic()
        self._answered = False  # it has carried an answer: a next request reuses it
        self._sending = False  # a request's bytes are going out (no read since)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._sending = False
        self._answered = True
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "read timed out") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if not self._sending:
            self._sending = True
            if self._answered and self._peer_gone():
                # The server closed this kept-alive connection after the pool checked it
                # and before this request's first byte (its keep-alive ran out while the
                # loop was busy). Nothing of the request went out, so the pool may send it
                # on another connection; written, it would be a reset ("Broken pipe"),
                # and a POST that may have arrived is never sent twice.
                raise httpcore.ConnectionNotAvailable()
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "write timed out") from exc
        except (OSError, RuntimeError) as exc:
            # RuntimeError: the transport was closed under the write (asyncio's wording).
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        # As anyio does: close (a TLS stream sends its close_notify), let that go out, then
        # drop the socket. Waiting for the peer's answer (asyncio's wait_closed) can take
        # up to 30 s per TLS connection, and the pool closes its connections one by one.
        transport = self._writer.transport
        if not transport.is_closing():
            transport.close()
        await asyncio.sleep(0)
        transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(str(exc) or "TLS handshake timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def _peer_gone(self) -> bool:
        """Whether the server hung up (or sent something unasked) on this connection.

        The transport has already moved any such bytes off the socket into the reader, so
        they count too: a "408 Request Timeout" sent before an idle close is not at_eof()
        (bytes unread), and reused, it would be read as the answer to the next request."""
        reader = self._reader
        unread = getattr(reader, "_buffer", None)  # asyncio's, not in its API
        if reader.at_eof() or reader.exception() is not None or unread:
            return True
        # What the loop has not read yet: a hang-up that arrived while it was busy. One
        # poll, as httpcore's own backend does; asked of the connection about to be
        # reused, not of every idle one on every request.
        return is_socket_readable(self._writer.get_extra_info("socket"))

    def _quiet_too_long(self) -> bool:
        """The server has sent nothing for ``reuse_within`` seconds.

        A server's keep-alive (uvicorn's and Node's: 5 s) runs from when it sent its last
        answer, and httpcore's expiry from when the response was closed here, which on a
        loop busy with 64 requests comes later. Counted from the last byte received, the
        margin below the server's keep-alive is not used up before the request is sent."""
        if self._reuse_within is None:
            return False
        last = getattr(self._reader, "last_data_at", 0.0) or self._opened_at
        return time.monotonic() - last > self._reuse_within

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks this of an idle connection, before reusing it and in the pool's
            # sweeps: True means the server hung up (or may be about to), so do not reuse.
            return self._peer_gone() or self._quiet_too_long()
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class AsyncioConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's pool on `AsyncioBackend`, HTTP/1.1 only, with its faults mended.

    Only the assignment step is replaced; requests, responses, closing and errors stay
    httpcore's. A connection carries one request at a time (HTTP/1.1), so one that has a
    request assigned, started or not, is never handed another.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_keepalive_connections: int,
        keepalive_expiry: float | None,
    ) -> None:
        super().__init__(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=AsyncioBackend(reuse_within=keepalive_expiry),
        )
        self._next_sweep = 0.0

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        # Called as each request starts and as each response closes. Whether an idle
        # connection has expired (keep-alive run out, or the server hung up: a poll) is
        # asked of every one at most every SWEEP_SECONDS, and otherwise only of the one
        # about to carry a request: one poll per request, not one per idle connection.
        closing: list[httpcore.AsyncConnectionInterface] = []
        queued = [r for r in self._requests if r.is_queued()]
        now = time.monotonic()
        sweep = now >= self._next_sweep
        if not queued and not sweep:
            return closing
        if sweep:
            self._next_sweep = now + SWEEP_SECONDS
        taken = {id(r.connection) for r in self._requests if r.connection is not None}
        kept: list[httpcore.AsyncConnectionInterface] = []
        for existing in self._connections:
            if existing.is_closed():
                continue
            if id(existing) not in taken and not existing.is_idle():
                # Not idle, and no request holds it: it was handed to a request that was
                # cancelled (or timed out) before it started on it; one pass's assignment
                # is another task's to use. No one ever will, and it would hold its slot
                # for good (httpcore's pool leaks it too: encode/httpcore#1093).
                closing.append(existing)
                continue
            if sweep and existing.has_expired():
                # One assigned but not yet started finds it closed and is assigned again,
                # as in httpcore.
                closing.append(existing)
                continue
            kept.append(existing)
        spare = [c for c in kept if id(c) not in taken and c.is_idle()]
        surplus = len(spare) - self._max_keepalive_connections
        if surplus > 0:
            dropped = {id(c) for c in spare[:surplus]}
            closing.extend(spare[:surplus])
            kept = [c for c in kept if id(c) not in dropped]
            spare = spare[surplus:]
        self._connections = kept

        for pool_request in queued:
            origin = pool_request.request.url.origin
            connection: httpcore.AsyncConnectionInterface | None = None
            for candidate in spare:
                if (
                    id(candidate) in taken
                    or not candidate.can_handle_request(origin)
                    or not candidate.is_available()
                ):
                    continue
                taken.add(id(candidate))  # carries this request, or is closed as expired
                if candidate.has_expired():
                    self._connections.remove(candidate)
                    closing.append(candidate)
                    continue
                connection = candidate
                break
            if connection is None:
                if len(self._connections) >= self._max_connections:
                    idle = next((c for c in spare if id(c) not in taken), None)
                    if idle is None:
                        continue  # wait until a connection frees up
                    self._connections.remove(idle)
                    closing.append(idle)
                    taken.add(id(idle))  # closing, so no longer anyone's
                connection = self.create_connection(origin)
                self._connections.append(connection)
                taken.add(id(connection))
            pool_request.assign_to_connection(connection)
        return closing


def pooled_transport(
    verify: ssl.SSLContext | bool,
    *,
    max_connections: int,
    max_keepalive_connections: int,
    keepalive_expiry: float,
) -> httpx.AsyncHTTPTransport:
    """httpx's transport over `AsyncioConnectionPool`."""
    ssl_context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
    transport = httpx.AsyncHTTPTransport(verify=ssl_context)
    # httpx has no parameter for the network backend; its pool is the documented httpcore
    # one, so build that with ours (tests/openpayments/test_asyncio_pool.py checks it is used).
    transport._pool = AsyncioConnectionPool(
        ssl_context=ssl_context,
        max_connections=max_connections,
        max_keepalive_connections=max_keepalive_connections,
        keepalive_expiry=keepalive_expiry,
    )
    return transport


class AsyncioBackend(AsyncNetworkBackend):
    """``reuse_within``: see :class:`AsyncioStream` (``None``: httpcore's expiry only)."""

    def __init__(self, reuse_within: float | None = None) -> None:
        self.reuse_within = reuse_within

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        # asyncio.open_connection, with a reader that notes when data arrives.
        reader = _Reader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            async with asyncio.timeout(timeout):
                transport, _ = await loop.create_connection(
                    lambda: protocol,
                    host,
                    port,
                    local_addr=None if local_address is None else (local_address, 0),
                    # Happy eyeballs, as anyio does: a host whose IPv6 address is
                    # unreachable answers on IPv4 after 0.25 s, not after a timeout.
                    happy_eyeballs_delay=0.25,
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(
                str(exc) or f"connecting to {host}:{port} timed out"
            ) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        sock: socket.socket | None = writer.get_extra_info("socket")
        if sock is not None:
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(reader, writer, reuse_within=self.reuse_within)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        raise httpcore.ConnectError("the Open Payments client connects over TCP only")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
