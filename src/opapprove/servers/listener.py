"""The local finish-callback listener, and the seed's payments-service routes.

``GET /payments/finish`` is where the buyer's wallet sends the browser after consent:
the listener verifies the hash, finishes the payment and shows the buyer a small page.
With ``api=True`` it also answers the seed's ``POST /sellers`` and
``POST /offers/{offerId}/quotes/start`` so a marketplace can point PAYMENTS_SERVICE_URL here.
"""

from __future__ import annotations

import hmac
import html
import json
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.store import Pending, State

ListenerEvent = Callable[[dict[str, Any]], None]

MAX_QUERY_BYTES = 4096
FINISH_PARAMS = {"pendingId", "interact_ref", "hash", "result", "message"}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}
h1{{font-size:1.5rem}} .ok{{color:#176c2f}} .bad{{color:#a11}}
dl{{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}} dt{{color:#666}}
</style></head>
<body><main id="result" data-state="{state}">
<h1 class="{cls}">{title}</h1>
<p>{text}</p>
{details}
<p><small>opapprove listener · you can close this tab.</small></p>
</main></body></html>
"""


def render_page(state: str, title: str, text: str, details: dict[str, str] | None = None) -> str:
    rows = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in (details or {}).items()
    )
    return _PAGE.format(
        title=html.escape(title),
        text=html.escape(text),
        state=html.escape(state),
        cls="ok" if state == "completed" or state == "payment_created" else "bad",
        details=f"<dl>{rows}</dl>" if rows else "",
    )


def _pending_details(pending: Pending) -> dict[str, str]:
    from opapprove.openpayments.money import format_wire

    details = {"Offer": pending.offer_id, "Pending id": pending.id}
    if pending.debit_amount:
        details["Amount"] = format_wire(pending.debit_amount)
    if pending.outgoing_payment_url:
        details["Payment"] = pending.outgoing_payment_url
    return details


# What the buyer's browser is told: plain words for the buyer, not the operator's hint.
_ERROR_PAGES: dict[str, tuple[str, str, int, str]] = {
    "rejected": (
        "rejected",
        "Payment not approved",
        200,
        "You declined this payment. Nothing was charged.",
    ),
    "expired": (
        "expired",
        "Payment approval expired",
        410,
        "This approval link has expired and nothing was charged. Ask the seller for a"
        " new payment link.",
    ),
    "verification": (
        "refused",
        "This link could not be verified",
        400,
        "The approval could not be verified, so nothing was charged.",
    ),
    "input": (
        "refused",
        "This link is not valid",
        400,
        "This link does not belong to a payment waiting for approval.",
    ),
    "stale": (
        "refused",
        "This payment was already settled",
        409,
        "This approval was already handled; nothing more is needed from you.",
    ),
    "busy": (
        "busy",
        "Already being processed",
        409,
        "This payment is being processed right now; you can close this tab.",
    ),
}


def _page_for_error(err: FlowError, pending: Pending | None) -> tuple[int, str]:
    state, title, status, text = _ERROR_PAGES.get(
        err.kind,
        (
            "error",
            "The payment could not be finished",
            502,
            "Your approval was received, but the payment could not be completed right now. The"
            " seller can retry it; there is no need to approve again.",
        ),
    )
    return status, render_page(state, title, text, _pending_details(pending) if pending else None)


def create_listener_app(
    flow: Flow,
    *,
    on_event: ListenerEvent | None = None,
    api: bool = False,
    api_token: str | None = None,
) -> Starlette:
    def emit(event: dict[str, Any]) -> None:
        if on_event is not None:
            on_event(event)

    async def finish(request: Request) -> Response:
        raw = request.scope.get("query_string", b"")
        if len(raw) > MAX_QUERY_BYTES:
            emit({"event": "callback_refused", "reason": "query string too long"})
            return HTMLResponse(
                render_page("refused", "This link is not valid", "The link is too long."), 414
            )
        params = request.query_params
        if any(len(params.getlist(k)) > 1 for k in FINISH_PARAMS):
            emit({"event": "callback_refused", "reason": "repeated parameter"})
            return HTMLResponse(
                render_page("refused", "This link is not valid", "A parameter is repeated."), 400
            )
        pending_id = params.get("pendingId")
        if not pending_id:
            emit({"event": "callback_refused", "reason": "no pendingId"})
            return HTMLResponse(
                render_page("refused", "This link is not valid", "It names no payment."), 400
            )
        try:
            pending = await flow.finish(
                pending_id,
                interact_ref=params.get("interact_ref"),
                hash=params.get("hash"),
                result=params.get("result"),
                message=params.get("message"),
            )
        except FlowError as err:
            refused = err.kind in ("verification", "input", "stale")
            named = {"rejected": "rejected", "expired": "expired"}
            event = "callback_refused" if refused else named.get(err.kind, "failed")
            emit(
                {
                    "event": event,
                    "pendingId": pending_id if err.pending_id else None,
                    "kind": err.kind,
                    "error": err.message,
                    "hint": err.hint,
                }
            )
            known = flow.store.get_pending(err.pending_id) if err.pending_id else None
            status, page = _page_for_error(err, None if refused else known)
            return HTMLResponse(page, status)
        emit(
            {
                "event": "finished",
                "pendingId": pending.id,
                "state": str(pending.state),
                "offerId": pending.offer_id,
                "outgoingPayment": pending.outgoing_payment_url,
            }
        )
        if pending.state == State.COMPLETED:
            page = render_page(
                "completed",
                "Payment complete",
                "Thank you: the payment was approved and sent.",
                _pending_details(pending),
            )
        else:
            page = render_page(
                str(pending.state),
                "Payment approved",
                "The payment was approved and is on its way.",
                _pending_details(pending),
            )
        return HTMLResponse(page)

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [Route("/payments/finish", finish), Route("/health", health)]
    if api:
        routes += _api_routes(flow, emit, api_token)
    return Starlette(routes=routes)


def _api_routes(flow: Flow, emit: ListenerEvent, api_token: str | None) -> list[Route]:
    def authorised(request: Request) -> bool:
        if not api_token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {api_token}".encode())

    def denied() -> Response:
        return JSONResponse({"success": False, "error": "missing or wrong bearer token"}, 401)

    async def body_of(request: Request) -> dict[str, Any] | None:
        try:
            data = json.loads(await request.body() or b"null")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def add_seller(request: Request) -> Response:
        if not authorised(request):
            return denied()
        data = await body_of(request)
        if data is None:
            return JSONResponse({"success": False, "error": "body must be a JSON object"}, 400)
        from opapprove.approvals.sellers import SellerInputError, add_seller_from_seed

        try:
            seller = add_seller_from_seed(flow.store, data)
        except SellerInputError as exc:
            return JSONResponse({"success": False, "error": str(exc)}, 400)
        emit({"event": "seller_added", "sellerId": seller.id})
        return JSONResponse(
            {
                "success": True,
                "id": seller.id,
                "walletAddressUrl": seller.wallet_address_url,
                "keyId": seller.key_id,
            },
            201,
        )

    async def start_quote(request: Request) -> Response:
        if not authorised(request):
            return denied()
        data = await body_of(request)
        if data is None:
            return JSONResponse({"success": False, "error": "body must be a JSON object"}, 400)
        offer_id = request.path_params["offerId"]
        try:
            pending = await flow.start_quote(
                offer_id=offer_id,
                buyer_wallet=str(data.get("buyerWalletAddressUrl") or ""),
                amount=str(data.get("amount") or ""),
                seller_id=str(data["sellerId"]) if data.get("sellerId") else None,
                max_debit=str(data["maxDebit"]) if data.get("maxDebit") is not None else None,
                currency=str(data["currency"]) if data.get("currency") is not None else None,
            )
        except FlowError as err:
            # A quote the offer cannot take is not the wallet failing: 422, not 502.
            status = {"input": 400, "config": 400, "quote_refused": 422}.get(err.kind, 502)
            return JSONResponse(
                {
                    "success": False,
                    "error": err.message,
                    "hint": err.hint,
                    "pendingId": err.pending_id,
                },
                status,
            )
        emit({"event": "quote_started", "pendingId": pending.id, "offerId": offer_id})
        return JSONResponse(
            {
                "success": True,
                "redirectUrl": pending.interact_redirect,
                "pendingId": pending.id,
                "paymentUrl": pending.interact_redirect,
            }
        )

    async def status(request: Request) -> Response:
        if not authorised(request):
            return denied()
        pending = flow.store.get_pending(request.path_params["pendingId"])
        if pending is None:
            return JSONResponse({"success": False, "error": "unknown pendingId"}, 404)
        return JSONResponse(
            {
                "success": True,
                "pendingId": pending.id,
                "state": str(pending.state),
                "offerId": pending.offer_id,
                "outgoingPayment": pending.outgoing_payment_url,
                "lastError": pending.last_error,
            }
        )

    return [
        Route("/sellers", add_seller, methods=["POST"]),
        Route("/offers/{offerId}/quotes/start", start_quote, methods=["POST"]),
        Route("/payments/{pendingId}", status, methods=["GET"]),
    ]
