"""Wallet addresses: the JSON document, the JWKS, and a small page for people."""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from opapprove.openpayments.money import from_minor_units
from opapprove.servers.sandbox.config import AccountConfig
from opapprove.servers.sandbox.consent import page
from opapprove.servers.sandbox.state import SandboxState
from opapprove.servers.sandbox.urls import AUTH_PATH, RS_PATH, base_url, wallet_url


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def _account(request: Request) -> AccountConfig | None:
    return _state(request).account_config(request.path_params["name"])


def _unknown(request: Request) -> Response:
    # The spec's 404 has no JSON body; a line of text says what was asked for.
    return PlainTextResponse(f"no wallet address {request.url.path}", status_code=404)


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
    acct = _account(request)
    if acct is None:
        return _unknown(request)
    state = _state(request)
    base = base_url(request, state.config.public_url)
    accept = request.headers.get("accept", "")
    if "application/json" not in accept and "text/html" in accept:
        return RedirectResponse(f"{wallet_url(base, acct.name)}/page", status_code=302)
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


ROUTES = [
    Route("/{name}/jwks.json", get_wallet_keys, methods=["GET"]),
    Route("/{name}/page", wallet_page, methods=["GET"]),
    Route("/{name}", get_wallet_address, methods=["GET"]),
]
