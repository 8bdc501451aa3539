"""The client's default transport makes the TLS side only when an https URL needs it."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from opapprove.openpayments import errors
from opapprove.openpayments.client import OpenPaymentsClient
from opapprove.openpayments.transport import SchemeTransport
from opapprove.servers.serving import serve_in_thread


async def _wallet(request: Request) -> JSONResponse:
    base = str(request.base_url).rstrip("/")
    return JSONResponse(
        {
            "id": f"{base}/alice",
            "assetCode": "USD",
            "assetScale": 2,
            "authServer": f"{base}/auth",
            "resourceServer": f"{base}/op",
        }
    )


def test_plain_http_never_builds_the_tls_transport() -> None:
    app = Starlette(routes=[Route("/alice", _wallet)])

    async def fetch(url: str) -> SchemeTransport:
        client = OpenPaymentsClient()
        try:
            wallet = await client.get_wallet_address(f"{url}/alice")
            assert wallet.asset_code == "USD"
            transport = client._http._transport
            assert isinstance(transport, SchemeTransport)
            return transport
        finally:
            await client.aclose()

    with serve_in_thread(app) as server:
        transport = asyncio.run(fetch(server.url))
    assert transport._plain is not None and transport._tls is None


def test_https_goes_through_the_tls_transport() -> None:
    async def fetch() -> SchemeTransport:
        client = OpenPaymentsClient(timeout=2)
        try:
            await client.get_wallet_address("https://127.0.0.1:1/alice")
        except errors.TransportError:
            pass
        transport = client._http._transport
        assert isinstance(transport, SchemeTransport)
        await client.aclose()
        return transport

    transport = asyncio.run(fetch())
    assert transport._tls is not None and transport._plain is None
