"""The resource server's HTTP endpoints (``{public}/op``), checked the way Rafiki checks them.

Per request: the body's shape (400), then ``Authorization: GNAP <token>`` (401), token
introspection (401 unknown, 403 inactive or insufficient), the client's signature (401),
and only then the operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opapprove.servers.sandbox import grants, payments
from opapprove.servers.sandbox.config import AccountConfig
from opapprove.servers.sandbox.errors import ResourceServerError
from opapprove.servers.sandbox.grant_requests import RECEIVER
from opapprove.servers.sandbox.grants import Introspection
from opapprove.servers.sandbox.negotiation import accepts_json, not_acceptable
from opapprove.servers.sandbox.records import IncomingPayment, OutgoingPayment, Quote
from opapprove.servers.sandbox.state import SandboxState
from opapprove.servers.sandbox.urls import (
    AUTH_PATH,
    INCOMING,
    OUTGOING,
    QUOTES,
    RS_PATH,
    account_of,
    base_url,
    resource_url,
    wallet_url,
)
from opapprove.servers.sandbox.validation import (
    BodyError,
    amount_value,
    is_http_url,
    iso,
    only_keys,
    parse_json_object,
)
from opapprove.servers.sandbox.verify import grant_client_keys, verify_rs

R = TypeVar("R", IncomingPayment, OutgoingPayment)

# ----------------------------------------------------------------------------- JSON


def _amount(acct: AccountConfig, value: int) -> dict[str, Any]:
    return {"value": str(value), "assetCode": acct.asset_code, "assetScale": acct.asset_scale}


def _acct(state: SandboxState, name: str) -> AccountConfig:
    acct = state.account_config(name)
    assert acct is not None, name
    return acct


def incoming_json(
    state: SandboxState, base: str, ip: IncomingPayment, *, methods: bool
) -> dict[str, Any]:
    acct = _acct(state, ip.account)
    out: dict[str, Any] = {
        "id": resource_url(base, INCOMING, ip.id),
        "walletAddress": wallet_url(base, ip.account),
        "completed": ip.completed,
        "receivedAmount": _amount(acct, ip.received),
        "createdAt": iso(ip.created_at),
    }
    if ip.incoming_amount is not None:
        out["incomingAmount"] = _amount(acct, ip.incoming_amount)
    if ip.expires_at is not None:
        out["expiresAt"] = iso(ip.expires_at)
    if ip.metadata is not None:
        out["metadata"] = ip.metadata
    if methods:
        # A completed or expired incoming payment takes no more money: no way to pay it.
        out["methods"] = (
            []
            if payments.accepting(state, ip)
            else [
                {
                    "type": "ilp",
                    "ilpAddress": f"test.opapprove.{ip.account}",
                    "sharedSecret": ip.shared_secret,
                }
            ]
        )
    return out


def quote_json(state: SandboxState, base: str, quote: Quote) -> dict[str, Any]:
    sender = _acct(state, quote.account)
    receiver = _acct(state, state.incoming[quote.receiver].account)
    return {
        "id": resource_url(base, QUOTES, quote.id),
        "walletAddress": wallet_url(base, quote.account),
        "receiver": resource_url(base, INCOMING, quote.receiver),
        "receiveAmount": _amount(receiver, quote.receive),
        "debitAmount": _amount(sender, quote.debit),
        "method": "ilp",
        "createdAt": iso(quote.created_at),
        "expiresAt": iso(quote.expires_at),
    }


def outgoing_json(state: SandboxState, base: str, p: OutgoingPayment) -> dict[str, Any]:
    sender = _acct(state, p.account)
    receiver = _acct(state, state.incoming[p.receiver].account)
    out: dict[str, Any] = {
        "id": resource_url(base, OUTGOING, p.id),
        "walletAddress": wallet_url(base, p.account),
        "receiver": resource_url(base, INCOMING, p.receiver),
        "receiveAmount": _amount(receiver, p.receive),
        "debitAmount": _amount(sender, p.debit),
        "sentAmount": _amount(sender, p.sent),
        "failed": p.failed,
        "createdAt": iso(p.created_at),
    }
    if p.quote_id is not None:
        out["quoteId"] = resource_url(base, QUOTES, p.quote_id)
    if p.metadata is not None:
        out["metadata"] = p.metadata
    return out


# ------------------------------------------------------------------------- plumbing


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    # Payments due are sent before any resource-server request is answered.
    state.settle_due()
    return state


def _base(request: Request) -> str:
    return base_url(request, _state(request).config.public_url)


async def _authorize(
    request: Request, body: bytes, kind: str, action: str, wallet: str | None
) -> Introspection:
    state = _state(request)
    base = _base(request)
    www = f"GNAP as_uri={base}{AUTH_PATH}"
    parts = request.headers.get("authorization", "").split(" ")
    if len(parts) != 2 or parts[0] != "GNAP" or not parts[1]:
        raise ResourceServerError(
            401,
            "Missing or invalid authorization header value",
            reason="send Authorization: GNAP <access token>",
            headers={"WWW-Authenticate": www},
        )
    auth = grants.introspect(
        state, parts[1], kind=kind, action=action, wallet=wallet, www_authenticate=www
    )
    client = await grant_client_keys(state, base, auth.grant.client_wallet, auth.grant.client_jwk)
    verify_rs(state, request, body, base, client)
    return auth


async def _body(
    request: Request, allowed: set[str], required: set[str]
) -> tuple[bytes, dict[str, Any]]:
    """The request's body as sent (it is signed) and as a checked JSON object."""
    raw = await request.body()
    try:
        data = parse_json_object(raw)
        only_keys(data, allowed, "the request body")
    except BodyError as exc:
        raise payments.invalid_body(exc) from exc
    missing = sorted(k for k in required if k not in data)
    if missing:
        raise payments.invalid_body(f"missing {', '.join(missing)}")
    if not isinstance(data.get("walletAddress"), str) or not is_http_url(data["walletAddress"]):
        raise payments.invalid_body("walletAddress must be a URL")
    if "metadata" in data and not isinstance(data["metadata"], dict):
        raise payments.invalid_body("metadata must be an object")
    return raw, data


def _wallet_account(state: SandboxState, base: str, wallet: str) -> AccountConfig:
    name = account_of(base, wallet)
    acct = state.account_config(name) if name else None
    if acct is None:
        raise ResourceServerError(
            404, "unknown wallet address", reason=f"{wallet} is not on this sandbox"
        )
    return acct


def _not_found(what: str) -> ResourceServerError:
    return ResourceServerError(404, f"{what} not found")


def _query(request: Request) -> dict[str, str]:
    return dict(request.query_params)


# ------------------------------------------------------------------ incoming payments


async def create_incoming_payment(request: Request) -> Response:
    state, base = _state(request), _base(request)
    raw, body = await _body(
        request, {"walletAddress", "incomingAmount", "expiresAt", "metadata"}, set()
    )
    wallet = body["walletAddress"]
    auth = await _authorize(request, raw, "incoming-payment", "create", wallet)
    acct = _wallet_account(state, base, wallet)
    ip = payments.create_incoming(state, acct, body, auth.grant.client_id)
    return JSONResponse(incoming_json(state, base, ip, methods=True), status_code=201)


async def _list(
    request: Request,
    kind: str,
    stored: Callable[[SandboxState], Iterable[R]],
    shown: Callable[[SandboxState, str, R], dict[str, Any]],
) -> Response:
    """One page of the wallet's ``kind`` resources the caller may see, newest first."""
    state, base = _state(request), _base(request)
    query = _query(request)
    wallet = query.get("wallet-address")
    if not wallet:
        raise payments.invalid_body(
            BodyError(
                "the wallet-address query parameter is missing",
                openapi="must have required property 'wallet-address'",
            )
        )
    auth = await _authorize(request, b"", kind, "list", wallet)
    acct = _wallet_account(state, base, wallet)
    with state.lock:
        items = [p for p in stored(state) if p.account == acct.name and auth.sees(p)]
        chosen, info = payments.page(items, query)
        result = [shown(state, base, p) for p in chosen]
    return JSONResponse({"pagination": info, "result": result})


async def list_incoming_payments(request: Request) -> Response:
    return await _list(
        request,
        "incoming-payment",
        lambda state: state.incoming.values(),
        partial(incoming_json, methods=False),
    )


def _incoming(state: SandboxState, request: Request) -> IncomingPayment:
    ip = state.incoming.get(request.path_params["id"])
    if ip is None:
        raise _not_found("incoming payment")
    return ip


async def get_incoming_payment(request: Request) -> Response:
    state, base = _state(request), _base(request)
    ip = _incoming(state, request)
    if not accepts_json(request.headers.get("accept", "")):
        return not_acceptable()  # Rafiki 10c
    if "authorization" not in request.headers:
        acct = _acct(state, ip.account)
        return JSONResponse(
            {"authServer": f"{base}{AUTH_PATH}", "receivedAmount": _amount(acct, ip.received)}
        )
    auth = await _authorize(request, b"", "incoming-payment", "read", wallet_url(base, ip.account))
    if not auth.sees(ip):
        raise _not_found("incoming payment")
    return JSONResponse(incoming_json(state, base, ip, methods=True))


async def complete_incoming_payment(request: Request) -> Response:
    state, base = _state(request), _base(request)
    raw = await request.body()
    ip = _incoming(state, request)
    await _authorize(request, raw, "incoming-payment", "complete", wallet_url(base, ip.account))
    payments.complete_incoming(state, ip)
    return JSONResponse(incoming_json(state, base, ip, methods=False))


# --------------------------------------------------------------------------- quotes


async def create_quote(request: Request) -> Response:
    state, base = _state(request), _base(request)
    raw, body = await _body(
        request,
        {"walletAddress", "receiver", "method", "debitAmount", "receiveAmount"},
        {"walletAddress", "receiver", "method"},
    )
    if body["method"] != "ilp":
        raise payments.invalid_body("method must be 'ilp'")
    if "debitAmount" in body and "receiveAmount" in body:
        raise payments.invalid_body("give debitAmount or receiveAmount, not both")
    if not isinstance(body["receiver"], str) or not RECEIVER.match(body["receiver"]):
        raise payments.invalid_body("receiver must be an incoming payment URL")
    for name in ("debitAmount", "receiveAmount"):
        if name in body:
            try:
                amount_value(body[name], name)
            except BodyError as exc:
                raise payments.invalid_body(exc) from exc
    wallet = body["walletAddress"]
    auth = await _authorize(request, raw, "quote", "create", wallet)
    sender = _wallet_account(state, base, wallet)
    quote = payments.create_quote(state, base, sender, body, auth.grant.client_id)
    return JSONResponse(quote_json(state, base, quote), status_code=201)


async def get_quote(request: Request) -> Response:
    state, base = _state(request), _base(request)
    quote = state.quotes.get(request.path_params["id"])
    if quote is None:
        raise _not_found("quote")
    auth = await _authorize(request, b"", "quote", "read", wallet_url(base, quote.account))
    if not auth.sees(quote):
        raise _not_found("quote")
    return JSONResponse(quote_json(state, base, quote))


# ------------------------------------------------------------------ outgoing payments


async def create_outgoing_payment(request: Request) -> Response:
    state, base = _state(request), _base(request)
    raw, body = await _body(
        request,
        {"walletAddress", "quoteId", "incomingPayment", "debitAmount", "metadata"},
        {"walletAddress"},
    )
    by_quote = "quoteId" in body
    direct = "incomingPayment" in body and "debitAmount" in body
    if by_quote == direct or (by_quote and ("incomingPayment" in body or "debitAmount" in body)):
        raise payments.invalid_body(
            "give quoteId, or incomingPayment with debitAmount (not a mix of both)",
        )
    if by_quote and not is_http_url(body["quoteId"]):
        raise payments.invalid_body("quoteId must be a quote URL")
    if not by_quote:
        if not is_http_url(body["incomingPayment"]):
            raise payments.invalid_body("incomingPayment must be an incoming payment URL")
        try:
            amount_value(body["debitAmount"], "debitAmount")
        except BodyError as exc:
            raise payments.invalid_body(exc) from exc
    wallet = body["walletAddress"]
    auth = await _authorize(request, raw, "outgoing-payment", "create", wallet)
    sender = _wallet_account(state, base, wallet)
    payment, spent = payments.create_outgoing(state, base, sender, body, auth)
    out = outgoing_json(state, base, payment)
    receiver = _acct(state, state.incoming[payment.receiver].account)
    out["grantSpentDebitAmount"] = _amount(sender, spent.debit)
    out["grantSpentReceiveAmount"] = _amount(receiver, spent.receive)
    return JSONResponse(out, status_code=201)


async def list_outgoing_payments(request: Request) -> Response:
    return await _list(
        request, "outgoing-payment", lambda state: state.outgoing.values(), outgoing_json
    )


async def get_outgoing_payment(request: Request) -> Response:
    state, base = _state(request), _base(request)
    payment = state.outgoing.get(request.path_params["id"])
    if payment is None:
        # Rafiki (6j) looks the payment's wallet up first and answers an unknown id 401.
        raise ResourceServerError(
            401,
            "Unauthorized",
            details={
                "description": "Failed to get wallet address from outgoing payment",
                "id": request.path_params["id"],
            },
            reason="no outgoing payment has this id",
        )
    auth = await _authorize(
        request, b"", "outgoing-payment", "read", wallet_url(base, payment.account)
    )
    if not auth.sees(payment):
        raise _not_found("outgoing payment")
    return JSONResponse(outgoing_json(state, base, payment))


async def get_outgoing_payment_grant(request: Request) -> Response:
    state, base = _state(request), _base(request)
    auth = await _authorize(request, b"", "outgoing-payment", "create", None)
    with state.lock:
        try:
            window = payments.grant_window(state, auth.item)
        except ResourceServerError:
            return JSONResponse({"spentDebitAmount": None, "spentReceiveAmount": None})
        spent = payments.spent_in_window(state, auth.grant.id, window)
    name = account_of(base, str(auth.item.get("identifier", "")))
    acct = state.account_config(name) if name else None
    if spent.count == 0 or acct is None:
        return JSONResponse({"spentDebitAmount": None, "spentReceiveAmount": None})
    receiver = _acct(state, spent.receiver or acct.name)
    return JSONResponse(
        {
            "spentDebitAmount": _amount(acct, spent.debit),
            "spentReceiveAmount": _amount(receiver, spent.receive),
        }
    )


ROUTES = [
    Route(f"{RS_PATH}/{INCOMING}", create_incoming_payment, methods=["POST"]),
    Route(f"{RS_PATH}/{INCOMING}", list_incoming_payments, methods=["GET"]),
    Route(f"{RS_PATH}/{INCOMING}/{{id}}", get_incoming_payment, methods=["GET"]),
    Route(f"{RS_PATH}/{INCOMING}/{{id}}/complete", complete_incoming_payment, methods=["POST"]),
    Route(f"{RS_PATH}/{QUOTES}", create_quote, methods=["POST"]),
    Route(f"{RS_PATH}/{QUOTES}/{{id}}", get_quote, methods=["GET"]),
    Route(f"{RS_PATH}/{OUTGOING}", create_outgoing_payment, methods=["POST"]),
    Route(f"{RS_PATH}/{OUTGOING}", list_outgoing_payments, methods=["GET"]),
    Route(f"{RS_PATH}/{OUTGOING}/{{id}}", get_outgoing_payment, methods=["GET"]),
    Route(f"{RS_PATH}/outgoing-payment-grant", get_outgoing_payment_grant, methods=["GET"]),
]
