"""Wallet addresses: the JSON document, the JWKS, and a small page for people."""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from opapprove.openpayments.money import from_minor_units
from opapprove.servers.sandbox.config import RESERVED_NAMES, AccountConfig
from opapprove.servers.sandbox.consent import page
from opapprove.servers.sandbox.errors import REASON_HEADER, reason_header
from opapprove.servers.sandbox.negotiation import accepts_json, not_acceptable
from opapprove.servers.sandbox.state import SandboxState
from opapprove.servers.sandbox.urls import AUTH_PATH, RS_PATH, base_url, wallet_url


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def _account(request: Request) -> AccountConfig | None:
    return _state(request).account_config(request.path_params["name"])


def _unknown(request: Request) -> Response:
    # Rafiki's answer (10d, 10e): JSON, the status as the code, the URL asked for.
    state = _state(request)
    url = f"{base_url(request, state.config.public_url)}{request.url.path}"
    return JSONResponse(
        {
            "error": {
                "code": "404",
                "description": "Could not get wallet address",
                "details": {"walletAddressUrl": url},
            }
        },
        status_code=404,
        headers={REASON_HEADER: reason_header(f"no wallet address {request.url.path}")},
    )


def wallet_document(base: str, acct: AccountConfig) -> dict[str, object]:
    doc: dict[str, object] = {"id": wallet_url(base, acct.name)}
    if acct.public_name:
        doc["publicName"] = acct.public_name
    doc.update(
        {
            "assetCode": acct.asset_code,
            "assetScale": acct.asset_scale,
            "authServer": f"{base}{AUTH_PATH}",
            "resourceServer": f"{base}{RS_PATH}",
        }
    )
    return doc


async def get_wallet_address(request: Request) -> Response:
    if request.path_params["name"] in RESERVED_NAMES:
        # On Rafiki the auth server is an origin of its own, with no GET routes (10i).
        return PlainTextResponse("Not Found", status_code=404)
    acct = _account(request)
    if acct is None:
        return _unknown(request)
    state = _state(request)
    base = base_url(request, state.config.public_url)
    if not accepts_json(request.headers.get("accept", "")):
        # People read the wallet at {wallet}/page; the address itself is JSON, as on Rafiki.
        return not_acceptable()
    return JSONResponse(wallet_document(base, acct))


async def get_wallet_keys(request: Request) -> Response:
    acct = _account(request)
    if acct is None:
        return _unknown(request)
    keys = _state(request).keys_for(acct.name)
    return JSONResponse({"keys": [k.to_dict() for k in keys]})


async def wallet_page(request: Request) -> Response:
    acct = _account(request)
    if acct is None:
        return _unknown(request)
    state = _state(request)
    base = base_url(request, state.config.public_url)
    balance = from_minor_units(state.balance(acct.name), acct.asset_scale)
    body = (
        f'<p id="wallet-url">{escape(wallet_url(base, acct.name))}</p>'
        f'<dl><dt>Asset</dt><dd id="asset">{escape(acct.asset_code)} '
        f"(scale {acct.asset_scale})</dd>"
        f'<dt>Balance</dt><dd id="balance">{escape(balance)} {escape(acct.asset_code)}</dd></dl>'
    )
    return page(acct.public_name or acct.name, body)


async def unknown_route(request: Request) -> Response:
    if request.url.path.startswith(("/auth/", "/interact/", "/idp/", "/_admin/")):
        return PlainTextResponse("Not Found", status_code=404)
    # Rafiki's resource server takes any other path for a wallet address it lacks (10d).
    return _unknown(request)


ROUTES = [
    Route("/{name}/jwks.json", get_wallet_keys, methods=["GET"]),
    Route("/{name}/page", wallet_page, methods=["GET"]),
    Route("/{name}", get_wallet_address, methods=["GET"]),
    # Last: whatever GET no route above took.
    Route("/{path:path}", unknown_route, methods=["GET"]),
]
