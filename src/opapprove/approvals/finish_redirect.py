"""The wallet's finish redirect, read and judged against a grant: no store, no network.

``parse_finish_url`` takes the URL apart; ``judge`` says what a redirect's ``interact_ref``
and ``hash`` mean for the grant as it stands (approve it, it is approved already, or
refuse it and why); ``result_error`` says what a ``result=`` redirect means. The flow
(``Flow.accept_approval``, ``Flow.finish``) records and acts on what these say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from opapprove.approvals.errors import FlowError, translated
from opapprove.approvals.records import FINAL_STATES, Pending, State
from opapprove.approvals.results import classify
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import interaction


@dataclass(frozen=True)
class FinishRedirect:
    """What a finish redirect's query carries (each value as sent, or ``None``)."""

    pending_id: str
    interact_ref: str | None = None
    hash: str | None = None
    result: str | None = None
    message: str | None = None


def parse_finish_url(url: str) -> FinishRedirect:
    """The query of a pasted finish redirect URL; FlowError ``input`` if it is not one."""
    try:
        parts = urlsplit(url.strip())
        query = parse_qs(
            parts.query, keep_blank_values=True, max_num_fields=20, strict_parsing=False
        )
    except ValueError as exc:
        raise FlowError(
            f"that is not a finish redirect URL ({exc})",
            hint="paste the whole URL the wallet sent the browser to",
            kind="input",
        ) from exc

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    pending_id = one("pendingId")
    if not pending_id:
        raise FlowError(
            "the URL has no pendingId",
            hint="paste the whole URL the wallet redirected to",
            kind="input",
        )
    return FinishRedirect(
        pending_id,
        interact_ref=one("interact_ref"),
        hash=one("hash"),
        result=one("result"),
        message=one("message"),
    )


def check_hash(pending: Pending, interact_ref: str, received: str | None) -> None:
    """``InteractionHashError`` unless ``received`` is the grant's finish hash."""
    if not (pending.client_nonce and pending.server_finish_nonce):
        # Nonces the wallet never saw would make the hash computable by anyone.
        raise op_errors.InteractionHashError(
            "this grant holds no finish nonces to check the redirect against",
            hint="it was not started for a finish redirect; nothing was paid",
        )
    interaction.verify_finish_hash(
        received,
        pending.client_nonce,
        pending.server_finish_nonce,
        interact_ref,
        pending.grant_url or "",
    )


@dataclass(frozen=True)
class Verdict:
    """What a redirect means for a grant.

    ``approve``: commit ``approved`` with the redirect's interact_ref; ``approved``: the
    same redirect was taken already, nothing to do; ``refuse``: raise ``error``, after
    recording a ``callback_refused`` event with ``reason`` when there is one.
    """

    action: Literal["approve", "approved", "refuse"]
    error: FlowError | None = None
    reason: str | None = None


APPROVE = Verdict("approve")
APPROVED = Verdict("approved")


def judge(
    pending: Pending, interact_ref: str | None, hash: str | None, *, expired: bool
) -> Verdict:
    """The verdict on a redirect's ``interact_ref`` and ``hash`` for ``pending`` as it stands.

    The same valid redirect again (a double click, a refresh, a second listener) is
    ``approved``; anything else that does not verify is refused.
    """
    if pending.state == State.AWAITING_APPROVAL and expired:
        return _refuse(
            "approval expired",
            FlowError(
                "Payment approval expired",
                hint="start a new quote",
                kind="expired",
                pending_id=pending.id,
            ),
        )
    if not interact_ref:
        error = FlowError(
            "the finish redirect has neither interact_ref nor result",
            hint="paste the whole URL the wallet redirected to",
            kind="input",
            pending_id=pending.id,
        )
        return Verdict("refuse", error)
    if pending.interact_ref is not None:
        if pending.interact_ref == interact_ref and _hash_ok(pending, interact_ref, hash):
            return APPROVED
        return _refuse(
            "interact_ref does not match this grant",
            FlowError(
                "this grant was already approved with another interact_ref",
                hint="the callback is forged or replayed; nothing was changed",
                kind="verification",
                pending_id=pending.id,
            ),
        )
    if pending.state != State.AWAITING_APPROVAL:
        return _refuse(f"grant is {pending.state}", not_awaiting(pending))
    try:
        check_hash(pending, interact_ref, hash)
    except op_errors.InteractionHashError as exc:
        return _refuse(
            "hash mismatch", translated(exc, None, kind="verification", pending_id=pending.id)
        )
    return APPROVE


def _refuse(reason: str, error: FlowError) -> Verdict:
    return Verdict("refuse", error, reason)


def _hash_ok(pending: Pending, interact_ref: str, received: str | None) -> bool:
    try:
        check_hash(pending, interact_ref, received)
    except op_errors.InteractionHashError:
        return False
    return True


def not_awaiting(pending: Pending) -> FlowError:
    """The refusal of a callback for a grant that no longer awaits approval."""
    messages = {
        State.EXPIRED: ("Payment approval expired", "start a new quote"),
        State.CANCELLED: ("this approval was cancelled", "start a new quote"),
        State.REJECTED: ("the buyer already rejected this payment", "start a new quote"),
        State.COMPLETED: ("this payment is already completed", None),
        State.FAILED: ("this payment already failed", "see `opapprove pending show`"),
    }
    message, hint = messages.get(
        pending.state,
        (
            f"grant {pending.id} is not awaiting approval (it is {pending.state})",
            "nothing was changed",
        ),
    )
    # A callback for a grant that has moved on is refused (a conflict), not a fresh rejection.
    kind = "expired" if pending.state == State.EXPIRED else "stale"
    if pending.state not in FINAL_STATES:
        kind = "input"
    return FlowError(message, hint=hint, kind=kind, pending_id=pending.id)


def one_line(text: str, limit: int = 120) -> str:
    """Words from a URL as one short, printable line."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return cleaned[:limit]


def result_note(pending: Pending, result: str, message: str | None) -> dict[str, Any]:
    """The ``wallet_result`` event's data for a redirect's ``result=`` (never verified)."""
    result = one_line(result)
    return {
        "result": result,
        "message": one_line(message) if message else None,
        "meaning": classify(result).kind,
        "verified": False,
        "state": str(pending.state),
    }


def result_error(pending: Pending, result: str, message: str | None) -> FlowError:
    """What ``finish`` says about a ``result=`` redirect: the wallet's words, and that they
    changed nothing."""
    if pending.state in FINAL_STATES:
        return not_awaiting(pending)
    said = classify(one_line(result))
    words = f"result={said.value}" + (f": {one_line(message)}" if message else "")
    if pending.state != State.AWAITING_APPROVAL:
        return FlowError(
            f"the wallet's redirect says {said.meaning} ({words}), but grant {pending.id} is"
            f" already {pending.state}",
            hint="a result carries no hash, so it changed nothing; see `opapprove pending show"
            f" {pending.id}`",
            kind="stale",
            pending_id=pending.id,
        )
    return FlowError(
        f"the wallet's redirect says {said.meaning} ({words}); it carries no hash, so grant"
        f" {pending.id} stays open",
        hint=f"if the buyer really declined, end it now with `opapprove pending cancel"
        f" {pending.id}`; otherwise it completes when the buyer approves, or expires",
        kind="rejected" if said.kind == "declined" else "waiting",
        pending_id=pending.id,
    )
