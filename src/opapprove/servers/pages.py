"""What the listener answers: a small HTML page for a person, the same facts as JSON for code.

A browser gets HTML; a caller that asks for ``application/json`` (and not for HTML) gets
``{"success", "state", "title", "message", ...}`` with the same status code.
"""

from __future__ import annotations

import html
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from opapprove.approvals.errors import FlowError
from opapprove.approvals.records import Pending, State

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}
h1{{font-size:1.5rem}} .ok{{color:#176c2f}} .bad{{color:#a11}} .wait{{color:#8a5a00}}
dl{{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}} dt{{color:#666}}
</style></head>
<body><main id="result" data-state="{state}">
<h1 class="{cls}">{title}</h1>
<p>{text}</p>
{details}
<p><small>opapprove listener · {footer}</small></p>
</main></body></html>
"""

# States in which the payment is under way: the page refreshes itself until they end.
IN_PROGRESS = frozenset({State.APPROVED, State.GRANT_ISSUED, State.PAYING, State.PAYMENT_CREATED})
_GOOD = frozenset({"completed", *IN_PROGRESS})


def render_page(
    state: str,
    title: str,
    text: str,
    details: dict[str, str] | None = None,
    *,
    refresh_seconds: float | None = None,
) -> str:
    rows = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in (details or {}).items()
    )
    # A meta refresh reloads this same URL: the page turns by itself, with or without JS.
    refresh = (
        f'<meta http-equiv="refresh" content="{refresh_seconds:g}">\n' if refresh_seconds else ""
    )
    return _PAGE.format(
        title=html.escape(title),
        text=html.escape(text),
        state=html.escape(state),
        cls="wait" if refresh else ("ok" if state in _GOOD else "bad"),
        details=f"<dl>{rows}</dl>" if rows else "",
        refresh=refresh,
        footer="this page updates by itself." if refresh else "you can close this tab.",
    )


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


def answer(
    request: Request,
    status: int,
    state: str,
    title: str,
    text: str,
    *,
    pending: Pending | None = None,
    refresh_seconds: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    details = pending_details(pending) if pending is not None else None
    if wants_json(request):
        body: dict[str, Any] = {
            "success": status < 400,
            "state": state,
            "title": title,
            "message": text,
        }
        if pending is not None:
            body["pendingId"] = pending.id
            body["offerId"] = pending.offer_id
            body["outgoingPayment"] = pending.outgoing_payment_url
        body.update(extra or {})
        return JSONResponse(body, status)
    page = render_page(state, title, text, details, refresh_seconds=refresh_seconds)
    return HTMLResponse(page, status)


def pending_details(pending: Pending) -> dict[str, str]:
    from opapprove.openpayments.money import format_wire

    details = {"Offer": pending.offer_id, "Pending id": pending.id}
    if pending.debit_amount:
        details["Amount"] = format_wire(pending.debit_amount)
    if pending.outgoing_payment_url:
        details["Payment"] = pending.outgoing_payment_url
    return details


# What the buyer's browser is told: plain words for the buyer, not the operator's hint.
ERROR_PAGES: dict[str, tuple[str, str, int, str]] = {
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
_FAILED_PAGE = (
    "error",
    "The payment could not be finished",
    502,
    "Your approval was received, but the payment could not be completed right now. The"
    " seller can retry it; there is no need to approve again.",
)


def error_answer(request: Request, err: FlowError, pending: Pending | None) -> Response:
    state, title, status, text = ERROR_PAGES.get(err.kind, _FAILED_PAGE)
    return answer(request, status, state, title, text, pending=pending, extra={"kind": err.kind})


def state_answer(request: Request, pending: Pending, refresh_seconds: float) -> Response:
    """The page for a grant as it stands: done, failed, or under way (refreshing)."""
    if pending.state == State.COMPLETED:
        return answer(
            request,
            200,
            "completed",
            "Payment complete",
            "Thank you: the payment was approved and sent.",
            pending=pending,
        )
    if pending.state in IN_PROGRESS:
        return answer(
            request,
            200,
            str(pending.state),
            "Approved — completing the payment…",
            "Your approval was received and the payment is being made. This page updates by"
            " itself; there is no need to approve again.",
            pending=pending,
            refresh_seconds=refresh_seconds,
        )
    final = {
        State.FAILED: (
            "failed",
            "The payment could not be made",
            502,
            "Your approval was received, but the wallet did not make the payment. The seller"
            " has been told; there is no need to approve again.",
        ),
        State.CANCELLED: (
            "cancelled",
            "This payment was cancelled",
            409,
            "The seller cancelled this payment; nothing was charged.",
        ),
    }
    kind = {State.REJECTED: "rejected", State.EXPIRED: "expired"}.get(pending.state)
    state, title, status, text = (
        ERROR_PAGES[kind] if kind else final.get(pending.state, ERROR_PAGES["input"])
    )
    return answer(request, status, state, title, text, pending=pending)
