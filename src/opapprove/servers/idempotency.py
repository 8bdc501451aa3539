"""``Idempotency-Key`` on ``listen --api``'s ``POST /offers/{offerId}/quotes/start``.

A marketplace that retries the POST after a timeout must not get a second grant and a
second approval URL. Stripe's semantics (README, "listen --api"), with our grant as the
point where "the endpoint began executing":

- a key is claimed in the transaction that stores the grant (``store_idempotency``): a
  request refused by our checks stored nothing, so its key stays free and a corrected
  retry with it is a new request;
- same key, same offer and JSON body: the first answer again (``Idempotent-Replayed:
  true``), no second grant, nothing sent to a wallet; another offer or body: 422;
- a request whose key is being answered right now (in this listener, or one sharing the
  store) gets 409 with ``Retry-After``: one answer per key, and a waiting request would
  hold its connection for as long as the wallets take;
- an answer is kept once the grant has left its set-up: the approval URL (200), a quote
  the check refused (422). A grant whose set-up stopped half-way (a wallet unreachable, a
  crash) keeps no answer: a retry with its key carries that grant on, as ``pending
  replay`` would, and answers for it.

Keys belong to the caller (the API token's hash), are 1 to 255 printable ASCII characters,
and are kept for 24 hours.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from opapprove.approvals import grant_setup
from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import Pending
from opapprove.approvals.store_idempotency import Claim, IdempotencyKey, KeyTaken
from opapprove.servers.api_guard import api_error

HEADER = "idempotency-key"
MAX_KEY_CHARS = 255
_KEY = re.compile(rf"[\x21-\x7e](?:[\x20-\x7e]{{0,{MAX_KEY_CHARS - 2}}}[\x21-\x7e])?")
# A quote the offer cannot take is not the wallet failing: 422, not 502. A grant another
# attempt is setting up (a retry with its key, on another listener) is a conflict: 409.
_REFUSAL_STATUS = {"input": 400, "config": 400, "quote_refused": 422, "busy": 409}

Start = Callable[[Claim | None], Awaitable[Response]]


def start_answer(pending: Pending) -> JSONResponse:
    """The seed's answer to a quote start: where the buyer approves."""
    return JSONResponse(
        {
            "success": True,
            "redirectUrl": pending.interact_redirect,
            "pendingId": pending.id,
            "paymentUrl": pending.interact_redirect,
        }
    )


def start_refusal(err: FlowError) -> JSONResponse:
    response = JSONResponse(
        {"success": False, "error": err.message, "hint": err.hint, "pendingId": err.pending_id},
        _REFUSAL_STATUS.get(err.kind, 502),
    )
    if err.kind == "busy":
        response.headers["Retry-After"] = "1"
    return response


def request_hash(offer_id: str, data: dict[str, Any]) -> str:
    """What a request asked for: its offer and its JSON body, whatever the key order."""
    canonical = json.dumps([offer_id, data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_of(request: Request) -> str | Response | None:
    """The request's key, the 400 that refuses it, or ``None`` when it sends none."""
    given = request.headers.getlist(HEADER)
    if not given:
        return None
    if len(given) == 1 and _KEY.fullmatch(given[0]):
        return given[0]
    what = "is repeated" if len(given) > 1 else f"is not 1 to {MAX_KEY_CHARS} printable ASCII"
    return api_error(
        400,
        f"the Idempotency-Key header {what}" + ("" if len(given) > 1 else " characters"),
        "send one key per request, e.g. a UUID; nothing was stored",
    )


class IdempotentStarts:
    """Quote starts answered once per key of one caller (``token``)."""

    def __init__(self, flow: Flow, token: str) -> None:
        self.flow = flow
        self.scope = hashlib.sha256(token.encode()).hexdigest()[:32]
        self._answering: set[str] = set()  # this listener's keys being answered now

    async def answer(self, key: str, offer_id: str, data: dict[str, Any], start: Start) -> Response:
        claim = Claim(self.scope, key, request_hash(offer_id, data))
        if key in self._answering:
            return _in_progress(key)
        self._answering.add(key)
        try:
            return await self._answer(claim, start)
        finally:
            self._answering.discard(key)

    async def _answer(self, claim: Claim, start: Start) -> Response:
        store = self.flow.store
        found = store.get_idempotency_key(claim.scope, claim.key)
        if found is None:
            try:
                return self._kept(claim, await start(claim))
            except KeyTaken:
                found = store.get_idempotency_key(claim.scope, claim.key)
                if found is None:  # taken, then gone: kept for less than a moment
                    return _in_progress(claim.key)
        if found.request_hash != claim.request_hash:
            return api_error(
                422,
                f"Idempotency-Key {claim.key[:80]!r} was used for another request (another"
                " offer or body)",
                "retry only with the same offer and body; send a new key for a new request;"
                " nothing was stored",
            )
        if found.answer is not None:
            return _replayed(found)
        return self._kept(claim, await self._carry_on(found))

    async def _carry_on(self, found: IdempotencyKey) -> Response:
        """The answer for the grant a key's earlier request stored but did not answer for."""
        pending = self.flow.store.get_pending(found.pending_id)
        if pending is None:  # cannot be: the key goes with its grant (ON DELETE CASCADE)
            return _in_progress(found.key)
        try:
            if pending.state in grant_setup.SETUP_STATES:
                pending = await grant_setup.setup(self.flow, pending)
        except FlowError as err:
            return start_refusal(err)
        if pending.interact_redirect is None:
            return JSONResponse(
                {
                    "success": False,
                    "error": f"grant {pending.id} is {pending.state}: {pending.last_error}",
                    "hint": "start the payment again with a new Idempotency-Key",
                    "pendingId": pending.id,
                },
                422,
            )
        return start_answer(pending)

    def _kept(self, claim: Claim, response: Response) -> Response:
        """``response``, kept as the key's answer once its grant has left its set-up."""
        store = self.flow.store
        found = store.get_idempotency_key(claim.scope, claim.key)
        if found is None or found.request_hash != claim.request_hash:
            return response  # no grant was stored: nothing to keep
        pending = store.get_pending(found.pending_id)
        if pending is None or pending.state in grant_setup.SETUP_STATES:
            return response
        answer = json.loads(bytes(response.body))
        if store.keep_answer(claim.scope, claim.key, response.status_code, answer):
            return response
        latest = store.get_idempotency_key(claim.scope, claim.key)  # another answered first
        return _replayed(latest) if latest and latest.answer is not None else response


def _replayed(found: IdempotencyKey) -> Response:
    response = JSONResponse(found.answer, found.status or 200)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _in_progress(key: str) -> Response:
    return start_refusal(
        FlowError(
            f"a request with Idempotency-Key {key[:80]!r} is being answered right now",
            hint="retry in a moment with the same key and body to get its answer",
            kind="busy",
        )
    )
