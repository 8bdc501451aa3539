"""The local finish-callback listener, and the seed's payments-service routes.

``GET /payments/finish`` is where the buyer's wallet sends the browser after consent:
the listener verifies the hash, finishes the payment and shows the buyer a small page.
With ``api=True`` it also answers the seed's ``POST /sellers`` and
``POST /offers/{offerId}/quotes/start`` so a marketplace can point PAYMENTS_SERVICE_URL here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opapprove.approvals import ids
from opapprove.approvals.errors import FlowError
from opapprove.approvals.finish_redirect import one_line
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import Pending, State
from opapprove.approvals.results import classify
from opapprove.approvals.split import Payee
from opapprove.approvals.store import StoreError
from opapprove.approvals.store_idempotency import Claim
from opapprove.openpayments.redaction import redact_text
from opapprove.servers import idempotency
from opapprove.servers.api_guard import ApiGuard, api_error
from opapprove.servers.finishing import Finisher
from opapprove.servers.pages import (
    ERROR_PAGES,
    IN_PROGRESS,
    answer,
    error_answer,
    render_page,
    state_answer,
)

ListenerEvent = Callable[[dict[str, Any]], None]

MAX_QUERY_BYTES = 4096
FINISH_PARAMS = {"pendingId", "interact_ref", "hash", "result", "message"}
# How often the "completing the payment" page reloads itself.
REFRESH_SECONDS = 1.0
# An API body: the seed's are a few hundred bytes; anything near this is not a marketplace.
MAX_BODY_BYTES = 64 * 1024
# How long an API body may take to arrive once its headers have (a slow-loris holds a task).
BODY_TIMEOUT_SECONDS = 10.0

__all__ = ["create_listener_app", "render_page"]


def create_listener_app(
    flow: Flow,
    *,
    on_event: ListenerEvent | None = None,
    api: bool = False,
    api_token: str | None = None,
    refresh_seconds: float = REFRESH_SECONDS,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> Starlette:
    """The listener's ASGI app; ``app.state.finisher`` runs the payments it starts.

    ``api`` needs ``api_token`` (``listen --api`` makes one for the run when unset). After
    serving, ``await app.state.finisher.aclose(grace)`` lets payments in progress end.
    """

    def emit(event: dict[str, Any]) -> None:
        if on_event is not None:
            on_event(event)

    finisher = Finisher(flow, emit)

    def refused(request: Request, reason: str, text: str, status: int = 400) -> Response:
        emit({"event": "callback_refused", "reason": reason})
        return answer(request, status, "refused", "This link is not valid", text)

    async def finish(request: Request) -> Response:
        raw = request.scope.get("query_string", b"")
        if len(raw) > MAX_QUERY_BYTES:
            return refused(request, "query string too long", "The link is too long.", 414)
        params = request.query_params
        if any(len(params.getlist(k)) > 1 for k in FINISH_PARAMS):
            return refused(request, "repeated parameter", "A parameter is repeated.")
        pending_id = params.get("pendingId")
        if not pending_id:
            return refused(request, "no pendingId", "It names no payment.")
        try:
            if params.get("result"):
                return await _wallet_result(request, pending_id)
            pending = flow.accept_approval(
                pending_id, interact_ref=params.get("interact_ref"), hash=params.get("hash")
            )
        except FlowError as err:
            return _refusal(err, pending_id, request)
        return _progress(request, pending)

    async def _wallet_result(request: Request, pending_id: str) -> Response:
        params = request.query_params
        result, message = params.get("result") or "", params.get("message")
        pending = await flow.note_result(pending_id, result, message)
        # Anyone can send a result: only a printable line of it reaches the operator's terminal.
        said = classify(one_line(result))
        emit(
            {
                "event": "wallet_result",
                "pendingId": pending.id,
                "result": said.value[:60],
                "verified": False,
                "state": str(pending.state),
            }
        )
        extra = {"result": said.value[:60], "verified": False}
        if pending.state != State.AWAITING_APPROVAL:
            # Too late to mean anything: say so, without the grant's details.
            state, title, status, text = ERROR_PAGES["stale"]
            return answer(request, status, state, title, text, extra=extra)
        if said.kind == "declined":
            state, title, status, text = ERROR_PAGES["rejected"]
            return answer(request, status, state, title, text, extra=extra)
        if said.kind == "closed":
            return answer(
                request,
                200,
                "link_closed",
                "This approval link is closed",
                "Your wallet says this approval was already decided, cancelled or has expired."
                " Nothing is charged by this link.",
                extra=extra,
            )
        return answer(
            request,
            200,
            "wallet_result",
            "The wallet ended the approval",
            f"Your wallet reported {said.value[:60]!r}. Nothing is charged by this link.",
            extra=extra,
        )

    def _refusal(err: FlowError, pending_id: str, request: Request) -> Response:
        refused_kinds = ("verification", "input", "stale")
        named = {"rejected": "rejected", "expired": "expired"}
        event = "callback_refused" if err.kind in refused_kinds else named.get(err.kind, "failed")
        emit(
            {
                "event": event,
                "pendingId": pending_id if err.pending_id else None,
                "kind": err.kind,
                "error": err.message,
                "hint": err.hint,
            }
        )
        # Nothing about the grant: a refused redirect was not verified (an expired grant is
        # refused before its hash is checked), and a pending id is no secret.
        return error_answer(request, err, None)

    def _progress(request: Request, pending: Pending) -> Response:
        if pending.state in IN_PROGRESS:
            failed = finisher.failure(pending.id)
            if failed is not None:
                emit({"event": "page_shown", "pendingId": pending.id, "state": "error"})
                return error_answer(request, failed, pending)
            finisher.start(pending.id)
        else:
            # The buyer has seen the outcome (`listen --once` waits for this before it stops).
            emit({"event": "page_shown", "pendingId": pending.id, "state": str(pending.state)})
        return state_answer(request, pending, refresh_seconds)

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [
        _no_traceback(Route("/payments/finish", finish)),
        _no_traceback(Route("/health", health)),
    ]
    if api:
        if not api_token:
            raise ValueError("api=True needs api_token (listen --api makes one per run)")
        api_routes = _api_routes(
            flow, emit, ApiGuard(api_token, flow.settings.base_url), body_timeout
        )
        routes += [_no_traceback(r, as_json=True) for r in api_routes]
    app = Starlette(routes=routes, exception_handlers={404: _no_route, 405: _no_route})
    app.state.finisher = finisher
    return app


async def _no_route(request: Request, exc: Exception) -> Response:
    """An unknown path or method: the same JSON refusal as the API's (a marketplace parses
    every answer), never a cacheable page."""
    status = getattr(exc, "status_code", 404)
    what = "no such route" if status == 404 else f"{request.method} is not allowed here"
    response = api_error(
        status,
        f"{what}: {request.method} {one_line(request.url.path, 80)}",
        "the listener serves GET /payments/finish and GET /health, and with --api POST"
        " /sellers, POST /offers/{offerId}/quotes/start and GET /payments/{pendingId}",
    )
    response.headers.update(NEVER_KEPT)
    if status == 405 and (allowed := getattr(exc, "headers", None)):
        response.headers.update(allowed)
    return response


# Every answer says where a grant stands now: a cache (a proxy's, the browser's) must not keep
# it, or the self-refreshing page would never turn; and a finish URL (interact_ref, hash) must
# not travel on in a Referer.
NEVER_KEPT = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _no_traceback(route: Route, *, as_json: bool = False) -> Route:
    """The route, answering a plain page (JSON for the API) instead of letting an exception
    reach the log. The words of an exception may hold a secret: they are masked. No answer
    may be cached (NEVER_KEPT)."""
    handler = route.endpoint

    async def guarded(request: Request) -> Response:
        response = await unbroken(request)
        response.headers.update(NEVER_KEPT)
        return response

    async def unbroken(request: Request) -> Response:
        try:
            response: Response = await handler(request)
        except StoreError as exc:
            if as_json:
                return api_error(
                    503,
                    f"the listener's store is unavailable: {redact_text(exc.message)}",
                    "retry in a moment; nothing was changed by this request",
                )
            return answer(
                request,
                503,
                "error",
                "Please try again in a moment",
                "The listener's store is busy; nothing was charged by this request.",
                extra={"error": redact_text(exc.message)},
            )
        except Exception as exc:
            error = redact_text(f"{type(exc).__name__}: {str(exc)[:200]}")
            if as_json:
                return api_error(
                    500,
                    one_line(error, 240),
                    "a bug in opapprove: see the listener's output; nothing was charged",
                )
            return answer(
                request,
                500,
                "error",
                "Something went wrong",
                "The listener could not handle this request; nothing was charged by it.",
                extra={"error": error},
            )
        return response

    return Route(route.path, guarded, methods=route.methods, name=route.name)


class _BodyRefused(Exception):
    def __init__(self, status: int, error: str, hint: str) -> None:
        super().__init__(error)
        self.response = api_error(status, error, hint)


async def _read_body(request: Request, timeout: float) -> bytes:
    """The request's body, at most MAX_BODY_BYTES, arrived within ``timeout`` seconds."""
    too_big = _BodyRefused(
        413,
        f"the body is over {MAX_BODY_BYTES // 1024} KiB",
        "send the seed's small JSON object; nothing was stored",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_big
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise too_big
    except TimeoutError:
        raise _BodyRefused(
            408,
            f"the body did not arrive within {timeout:g} s",
            "send the whole body at once; nothing was stored",
        ) from None
    return bytes(body)


def _payees(data: dict[str, Any]) -> list[Payee] | None:
    """A split payment's ``"payees"`` (the flow checks them), or ``None`` for one seller."""
    if "payees" not in data:
        return None
    from opapprove.approvals.split import payees_from_json

    if data.get("sellerId"):
        raise FlowError(
            '"sellerId" names one seller, but "payees" names the sellers of a split payment',
            hint='leave "sellerId" out and list every seller in "payees"',
            kind="input",
        )
    return payees_from_json(data["payees"])


def _api_routes(
    flow: Flow, emit: ListenerEvent, guard: ApiGuard, body_timeout: float
) -> list[Route]:
    starts = idempotency.IdempotentStarts(flow, guard.token)

    async def body_of(request: Request) -> dict[str, Any] | Response:
        """The request's JSON object, or the answer that refuses the request."""
        if (refusal := guard.refuse(request)) is not None:
            return refusal
        try:
            raw = await _read_body(request, body_timeout)
        except _BodyRefused as refused:
            return refused.response
        hint = "send one JSON object, UTF-8 encoded, as the seed's routes take"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return api_error(400, "the body is not UTF-8", hint)
        try:
            data = json.loads(text or "null")
        except RecursionError:
            return api_error(400, "the body is nested too deeply to be the seed's JSON", hint)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return api_error(400, "the body must be a JSON object", hint)
        return data

    async def add_seller(request: Request) -> Response:
        data = await body_of(request)
        if isinstance(data, Response):
            return data
        from opapprove.approvals.sellers import (
            SellerConflict,
            SellerInputError,
            add_seller_from_seed,
            seller_from_settings,
        )

        try:
            seller, created = add_seller_from_seed(
                flow.store, data, configured=seller_from_settings(flow.settings)
            )
        except SellerConflict as exc:
            return JSONResponse(
                {
                    "success": False,
                    "error": str(exc),
                    "hint": "to change it, run `opapprove seller add ID --replace ...` on the"
                    " listener's machine, or POST it under a new id",
                },
                409,
            )
        except SellerInputError as exc:
            return api_error(
                400, str(exc), "correct the body and POST it again; nothing was stored"
            )
        if created:
            emit({"event": "seller_added", "sellerId": seller.id})
        return JSONResponse(
            {
                "success": True,
                "id": seller.id,
                "walletAddressUrl": seller.wallet_address_url,
                "keyId": seller.key_id,
            },
            201 if created else 200,
        )

    async def start_quote(request: Request) -> Response:
        data = await body_of(request)
        if isinstance(data, Response):
            return data
        offer_id = request.path_params["offerId"]
        key = idempotency.key_of(request)
        if isinstance(key, Response):
            return key
        if key is None:
            return await start(offer_id, data, None)
        return await starts.answer(key, offer_id, data, lambda claim: start(offer_id, data, claim))

    async def start(offer_id: str, data: dict[str, Any], claim: Claim | None) -> Response:
        try:
            payees = _payees(data)
            pending = await flow.start_quote(
                offer_id=offer_id,
                buyer_wallet=str(data.get("buyerWalletAddressUrl") or ""),
                amount="" if data.get("amount") is None else str(data["amount"]),
                seller_id=str(data["sellerId"]) if data.get("sellerId") else None,
                max_debit=str(data["maxDebit"]) if data.get("maxDebit") is not None else None,
                currency=str(data["currency"]) if data.get("currency") is not None else None,
                payees=payees,
                claim=claim,
            )
        except FlowError as err:
            return idempotency.start_refusal(err)
        emit({"event": "quote_started", "pendingId": pending.id, "offerId": offer_id})
        return idempotency.start_answer(pending)

    async def status(request: Request) -> Response:
        if (refusal := guard.refuse(request)) is not None:
            return refusal
        pending_id = request.path_params["pendingId"]
        # Checked first: PostgreSQL cannot even look up a NUL, and would answer "busy".
        pending = flow.store.get_pending(pending_id) if ids.plausible(pending_id) else None
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
                # A split payment's sellers, each with its own state and amounts.
                **(
                    {"legs": [leg.to_json() for leg in flow.store.legs(pending.id)]}
                    if pending.is_split
                    else {}
                ),
            }
        )

    return [
        Route("/sellers", add_seller, methods=["POST"]),
        Route("/offers/{offerId}/quotes/start", start_quote, methods=["POST"]),
        Route("/payments/{pendingId}", status, methods=["GET"]),
    ]
