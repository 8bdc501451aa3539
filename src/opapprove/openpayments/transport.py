"""The client's transport: httpx's, on our asyncio connection pool, and its failures in words.

The pool keeps every connection for reuse and drops one before the server would; a
plain-http wallet never loads the TLS certificates.
"""

from __future__ import annotations

import asyncio
import functools
import ssl

import httpx

# Every connection is kept for reuse (httpx keeps 20): our pool checks an idle one only
# when it is about to reuse it, so a bulk replay (64 in flight) no longer reconnects.
POOL_CONNECTIONS = 100
# Under Node's 5 s server keep-alive (Rafiki runs on Node): a connection the server is
# about to drop is not reused at the very moment it drops it.
POOL_KEEPALIVE_EXPIRY = 4.0
# The largest answer read. Open Payments answers are small (a page of 100 payments is
# ~100 KiB); a wallet that sends more, or a compressed body that inflates past it, would
# otherwise be held in memory whole.
MAX_RESPONSE_BYTES = 4 << 20


@functools.cache
def system_tls() -> ssl.SSLContext:
    """The certificates httpx trusts, loaded once per process and shared by every client.

    httpx loads the CA bundle again for each client made without an SSL context or a
    transport of its own: 40-250 ms on this machine each time. Shared, so never change it
    (no ``load_cert_chain``, no HTTP/2 client): make a context of your own for that.
    """
    return httpx.create_ssl_context()


class SchemeTransport(httpx.AsyncBaseTransport):
    """httpx's own transport on our asyncio network backend, the TLS one made only when
    an https URL comes along.

    Loading the CA bundle is a start-up cost (bench/RESULTS.md, "Start-up"); a sandbox or
    local Rafiki on plain http (every CI smoke run, every `opapprove demo`) never needs it.
    """

    def __init__(self) -> None:
        self._plain: httpx.AsyncHTTPTransport | None = None
        self._tls: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            if self._plain is None:
                # No TLS on this connection, so no certificates to load for it.
                self._plain = _pooled_transport(verify=False)
            return await self._plain.handle_async_request(request)
        if self._tls is None:
            self._tls = _pooled_transport(verify=system_tls())
        return await self._tls.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (self._plain, self._tls):
            if transport is not None:
                await transport.aclose()


def _pooled_transport(*, verify: ssl.SSLContext | bool) -> httpx.AsyncHTTPTransport:
    from opapprove.openpayments.asyncio_pool import pooled_transport

    return pooled_transport(
        verify,
        max_connections=POOL_CONNECTIONS,
        max_keepalive_connections=POOL_CONNECTIONS,
        keepalive_expiry=POOL_KEEPALIVE_EXPIRY,
    )


async def read_at_most(response: httpx.Response, limit: int, *, within: float) -> bool:
    """Read a streamed answer's body, decoded, into ``response.content`` if it is at most
    ``limit`` bytes; False (the rest left unread) if it is larger. The whole body must come
    within ``within`` seconds (httpx's timeout is per read: a server sending a byte every
    few seconds would hold the caller for ever), else ``httpx.ReadTimeout``."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit and "content-encoding" not in response.headers:
        return False
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within):
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    return False
                chunks.append(chunk)
    except TimeoutError:
        raise httpx.ReadTimeout(
            f"the body did not arrive within {within:g}s", request=response.request
        ) from None
    # What httpx's own aread() stores: .content, .text and .json() read it from here.
    response._content = b"".join(chunks)
    return True


def transport_hint(exc: Exception, url: str) -> str:
    """What to do about a request that failed on the wire (``exc`` is httpx's)."""
    text = str(exc).lower()
    if "ssl" in text or "certificate" in text or "tls" in text:
        if url.startswith("https://"):
            return (
                "TLS failed: if this is a local wallet without TLS, set use_http = true in the "
                "config (or OPAPPROVE_USE_HTTP=1)"
            )
        return "TLS failed: check the server's certificate"
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect: check the URL and that the server is running"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection or spoke something other than HTTP: try again"
    return "check the URL and your network, then try again"
