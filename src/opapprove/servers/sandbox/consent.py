"""The interaction front channel, as Rafiki runs it, and the sandbox's identity provider.

``GET /interact/{id}/{nonce}`` answers as Rafiki's does: 406 to an Accept without JSON or
``*/*`` (``text/html`` alone), 400 ``unknown_interaction`` to a wrong nonce, a 302 back to
the client's finish URI with ``result=invalid_interaction`` once decided or cancelled, and
otherwise a 302 to the wallet's identity provider (here ``{public}/idp/``, Rafiki's
mock-idp) with ``interactId``, ``nonce`` and a session cookie. The person decides on that
page (plain HTML forms, no script, so a headless browser can click ``#approve`` /
``#reject``); the decision is posted there, and the browser is sent on to
``/interact/{id}/{nonce}/finish``, which with the session cookie 302s to the client's
finish URI. The older ``/accept`` and ``/reject`` posts still decide directly (303).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from html import escape
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.money import format_wire, from_minor_units
from opapprove.openpayments.rates import format_fraction
from opapprove.servers.sandbox import grants
from opapprove.servers.sandbox.errors import REASON_HEADER, SandboxError
from opapprove.servers.sandbox.negotiation import accepts_json, not_acceptable
from opapprove.servers.sandbox.records import Grant
from opapprove.servers.sandbox.state import SandboxState
from opapprove.servers.sandbox.urls import INCOMING, INTERACT_PATH, base_url, resource_id

IDP_PATH = "/idp"
SESSION_COOKIE = "opapprove_sandbox_session"

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}"
    "dt{font-weight:600;margin-top:.6rem}dd{margin:0;word-break:break-all}"
    "form{display:inline-block;margin:1.2rem .6rem 0 0}"
    "button{font-size:1rem;padding:.5rem 1.4rem}"
)


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · opapprove sandbox</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status)


def _describe_item(
    item: dict[str, Any], receiving: Callable[[str, Any], list[tuple[str, str, str]]]
) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    kind = str(item.get("type"))
    actions = ", ".join(str(a) for a in item.get("actions", []))
    rows.append(("access", "Access", f"{kind}: {actions}"))
    if item.get("identifier"):
        rows.append(("sender", "From wallet", str(item["identifier"])))
    limits = item.get("limits") or {}
    if "debitAmount" in limits:
        rows.append(("amount", "Amount", format_wire(limits["debitAmount"])))
    elif "receiveAmount" in limits:
        rows.append(("amount", "Amount received", format_wire(limits["receiveAmount"])))
    elif kind == "outgoing-payment":
        rows.append(("amount", "Amount", "no limit"))
    if "receiver" in limits:
        rows.append(("receiver", "Receiver", str(limits["receiver"])))
        rows.extend(receiving(str(limits["receiver"]), limits.get("debitAmount")))
    if "interval" in limits:
        rows.append(("interval", "Every", str(limits["interval"])))
    return rows


def _receiving(state: SandboxState, base: str) -> Callable[[str, Any], list[tuple[str, str, str]]]:
    """The other side of a payment to one of this sandbox's incoming payments: what the
    receiver gets, and the rate and fee between the two assets."""

    def rows(receiver_url: str, debit: Any) -> list[tuple[str, str, str]]:
        ip_id = resource_id(base, INCOMING, receiver_url)
        ip = state.incoming.get(ip_id) if ip_id else None
        acct = state.account_config(ip.account) if ip is not None else None
        if ip is None or acct is None or ip.incoming_amount is None:
            return []
        gets = f"{from_minor_units(ip.incoming_amount, acct.asset_scale)} {acct.asset_code}"
        out = [("receive", "Receiver gets", f"{gets} ({acct.public_name or acct.name})")]
        code = debit.get("assetCode") if isinstance(debit, dict) else None
        if isinstance(code, str) and code != acct.asset_code:
            try:
                rate = format_fraction(state.config.rates.rate(code, acct.asset_code))
            except AmountError:
                rate = "no rate"
            out.append(("rate", "Exchange rate", f"1 {code} = {rate} {acct.asset_code}"))
        fee = state.config.fee.describe()
        if fee != "none":
            out.append(("fee", "Wallet fee", f"{fee} (included in the amount)"))
        return out

    return rows


def consent_page(
    base: str, grant: Grant, nonce: str, state: SandboxState, *, via_idp: bool = False
) -> HTMLResponse:
    who = escape(grant.client_name or "An application")
    client_url = escape(grant.client_wallet or "")
    rows: list[tuple[str, str, str]] = []
    receiving = _receiving(state, base)
    for item in grant.access:
        rows.extend(_describe_item(item, receiving))
    if grant.subject is not None:
        ids = ", ".join(str(s.get("id")) for s in grant.subject.get("sub_ids", []))
        rows.append(("subject", "Identify you as", ids))
    seen: set[str] = set()
    details = []
    for key, label, value in rows:
        html_id = key if key not in seen else f"{key}-{len(seen)}"
        seen.add(key)
        details.append(f'<dt>{escape(label)}</dt><dd id="{html_id}">{escape(value)}</dd>')
    if via_idp:
        hidden = (
            f'<input type="hidden" name="interactId" value="{escape(grant.interact_id or "")}">'
            f'<input type="hidden" name="nonce" value="{escape(nonce)}">'
        )
        approve = f'<form method="post" action="{base}{IDP_PATH}/decide">{hidden}'
        approve += '<input type="hidden" name="decision" value="accept">'
        reject = f'<form method="post" action="{base}{IDP_PATH}/decide">{hidden}'
        reject += '<input type="hidden" name="decision" value="reject">'
    else:
        action = f"{base}{INTERACT_PATH}/{grant.interact_id}/{escape(nonce)}"
        approve = f'<form method="post" action="{action}/accept">'
        reject = f'<form method="post" action="{action}/reject">'
    body = (
        f'<p><strong id="client-name">{who}</strong> (<span id="client-url">{client_url}</span>)'
        " asks for your approval.</p>"
        f"<dl>{''.join(details)}</dl>"
        f'{approve}<button id="approve" type="submit">Approve</button></form>'
        f'{reject}<button id="reject" type="submit">Reject</button></form>'
    )
    return page("Approve a payment", body)


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def _go(url: str | None, title: str, text: str) -> Response:
    if url is not None:
        return RedirectResponse(url, status_code=303)
    return page(title, f"<p>{escape(text)}</p>")


_OUTCOME_TEXT = {
    "approved": ("Approved", "You approved the request. You can return to the application."),
    "rejected": ("Rejected", "You rejected the request. You can return to the application."),
    "expired": ("Expired", "This approval request expired. Ask the application to start again."),
    "unknown": ("Cancelled", "This approval request was cancelled by the application."),
    "invalid": ("Already decided", "This approval request was already decided."),
}


def _unknown_interaction() -> JSONResponse:
    # Rafiki 1e: a wrong nonce (or id) is a JSON 400, not a page.
    return JSONResponse(
        {"error": {"code": "unknown_interaction", "description": "unknown interaction"}},
        status_code=400,
    )


def _redirect(url: str) -> Response:
    """Koa's ``ctx.redirect`` as Rafiki sends it: 302 and a line of HTML naming the target."""
    return HTMLResponse(
        f"Redirecting to {escape(url)}.", status_code=302, headers={"Location": url}
    )


async def start(request: Request) -> Response:
    state = _state(request)
    base = base_url(request, state.config.public_url)
    interact_id, nonce = request.path_params["id"], request.path_params["nonce"]
    try:
        grant = grants.find_interaction(state, interact_id, nonce)
    except SandboxError:
        return _unknown_interaction()
    if not accepts_json(request.headers.get("accept", "")):
        return not_acceptable(code=None)  # Rafiki 1a: text/html alone
    blocked = grants.interaction_blocker(state, grant)
    if blocked is not None:
        if blocked.finish_url is not None:
            return _redirect(blocked.finish_url)  # 1f, 4d
        return _go(None, *_OUTCOME_TEXT[blocked.outcome])
    session = secrets.token_urlsafe(24)
    state.sessions[session] = interact_id
    query = urlencode(
        {
            "interactId": interact_id,
            "nonce": nonce,
            "clientName": grant.client_name or "",
            "clientUri": grant.client_wallet or "",
        }
    )
    response = _redirect(f"{base}{IDP_PATH}/?{query}")
    response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="lax", path="/")
    return response


async def idp_page(request: Request) -> Response:
    """The identity provider's consent page (Rafiki's mock-idp): what is asked, two buttons."""
    state = _state(request)
    base = base_url(request, state.config.public_url)
    interact_id = request.query_params.get("interactId", "")
    nonce = request.query_params.get("nonce", "")
    try:
        grant = grants.find_interaction(state, interact_id, nonce)
    except SandboxError as exc:
        return page("Unknown approval request", f"<p>{escape(str(exc))}</p>", status=404)
    blocked = grants.interaction_blocker(state, grant)
    if blocked is not None:
        title, text = _OUTCOME_TEXT[blocked.outcome]
        return page(title, f"<p>{escape(text)}</p>")
    return consent_page(base, grant, nonce, state, via_idp=True)


async def idp_decide(request: Request) -> Response:
    """The decision posted on the IdP page; the browser goes on to the interaction's finish."""
    state = _state(request)
    base = base_url(request, state.config.public_url)
    try:
        form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:  # more fields than the page's form has (parse_qs refuses: was a 500)
        return page("Bad request", "<p>the form has too many fields</p>", status=400)
    field = {name: values[0] for name, values in form.items() if values}
    interact_id, nonce = field.get("interactId", ""), field.get("nonce", "")
    if field.get("decision") not in ("accept", "reject"):
        return page("Bad request", "<p>decision must be accept or reject</p>", status=400)
    try:
        grants.decide_interaction(state, interact_id, nonce, accept=field["decision"] == "accept")
    except SandboxError as exc:
        return page("Unknown approval request", f"<p>{escape(str(exc))}</p>", status=404)
    return RedirectResponse(f"{base}{INTERACT_PATH}/{interact_id}/{nonce}/finish", status_code=303)


async def _decide(request: Request, accept: bool) -> Response:
    state = _state(request)
    try:
        decision = grants.decide_interaction(
            state, request.path_params["id"], request.path_params["nonce"], accept=accept
        )
    except SandboxError as exc:
        return page("Unknown approval request", f"<p>{escape(str(exc))}</p>", status=404)
    return _go(decision.finish_url, *_OUTCOME_TEXT[decision.outcome])


async def accept(request: Request) -> Response:
    return await _decide(request, True)


async def reject(request: Request) -> Response:
    return await _decide(request, False)


async def finish(request: Request) -> Response:
    state = _state(request)
    interact_id = request.path_params["id"]
    try:
        grant = grants.find_interaction(state, interact_id, request.path_params["nonce"])
    except SandboxError:
        return _unknown_interaction()
    session = request.cookies.get(SESSION_COOKIE, "")
    if state.sessions.get(session) != interact_id:
        # Rafiki ties the finish to the browser that started the interaction.
        return JSONResponse(
            {"error": {"code": "invalid_request", "description": "invalid session"}},
            status_code=401,
            headers={REASON_HEADER: "no session cookie of this interaction: open its URL first"},
        )
    url = grants.finish_redirect(state, grant)
    if url is None:
        return page("Nothing to finish", "<p>This request has no decision to report yet.</p>")
    return _redirect(url)


ROUTES = [
    Route(INTERACT_PATH + "/{id}/{nonce}", start, methods=["GET"]),
    Route(INTERACT_PATH + "/{id}/{nonce}/accept", accept, methods=["POST"]),
    Route(INTERACT_PATH + "/{id}/{nonce}/reject", reject, methods=["POST"]),
    Route(INTERACT_PATH + "/{id}/{nonce}/finish", finish, methods=["GET"]),
    Route(IDP_PATH + "/", idp_page, methods=["GET"]),
    Route(IDP_PATH + "/decide", idp_decide, methods=["POST"]),
]
