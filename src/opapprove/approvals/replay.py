"""Stuck grants in bulk: which ones to replay, replaying many at once, and where each stopped.

``replay_many`` drives every grant through ``Flow.replay`` (which never pays twice) with
bounded concurrency over one shared Flow, so one HTTP client per seller serves them all.
A grant's failure is its outcome, never the batch's: every id gets a ``ReplayOutcome``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from opapprove.approvals.errors import FlowError
from opapprove.approvals.records import FINAL_STATES, Pending, State
from opapprove.approvals.split import restart_hint
from opapprove.approvals.store import StoreError
from opapprove.openpayments import money
from opapprove.openpayments.client import GrantTimeout

if TYPE_CHECKING:
    from opapprove.approvals.flow import Flow
    from opapprove.approvals.store import Store
    from opapprove.approvals.webhooks import WebhookSender

Outcome = Literal["completed", "advanced", "unchanged", "waiting", "expired", "failed", "error"]
OUTCOMES: tuple[Outcome, ...] = (
    "completed",
    "advanced",
    "unchanged",
    "waiting",
    "expired",
    "failed",
    "error",
)
DEFAULT_CONCURRENCY = 8
# Settings.stuck_after's default: a grant untouched this long is "stuck".
DEFAULT_STUCK_AFTER = 900.0
_SIDE_EXITS = (State.FAILED, State.REJECTED, State.CANCELLED)


@dataclass(frozen=True)
class ReplayOutcome:
    """One grant's replay. ``before``/``after`` are ``None`` only for an id the store lacks.

    ``error_kind`` is the FlowError kind behind a refusal (``busy``, ``transport``, ...).
    """

    pending_id: str
    before: State | None
    after: State | None
    outcome: Outcome
    message: str
    hint: str | None = None
    error_kind: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplayOutcome:
        """The inverse of ``as_dict`` (a worker process reports its outcomes as JSON)."""
        return cls(
            pending_id=str(data["pendingId"]),
            before=None if data.get("before") is None else State(data["before"]),
            after=None if data.get("after") is None else State(data["after"]),
            outcome=data["outcome"],
            message=str(data.get("message") or ""),
            hint=data.get("hint"),
            error_kind=data.get("errorKind"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "pendingId": self.pending_id,
            "before": None if self.before is None else str(self.before),
            "after": None if self.after is None else str(self.after),
            "outcome": self.outcome,
            "message": self.message,
            "hint": self.hint,
            "errorKind": self.error_kind,
        }


@dataclass(frozen=True)
class Diagnosis:
    """Where a grant stopped, why, and what moves it on (for ``pending list/show``)."""

    where: str
    why: str
    next_step: str


# ---------------------------------------------------------------------- choosing


def select_for_replay(
    store: Store,
    *,
    all: bool = True,  # the name of the CLI flag (--all)
    states: Iterable[State] | None = None,
    stuck_after: float | None = None,
    now: float | None = None,
    limit: int | None = None,
) -> list[Pending]:
    """Non-final grants to replay, oldest first.

    ``all``: every non-final grant; otherwise only stuck ones, untouched for
    ``stuck_after`` seconds (default 900). ``states`` narrows the choice; final states in
    it are ignored, as a finished grant has nothing to replay, but ``partially_paid``.

    A partially paid split ended (design.md: a side exit, its failed legs refused by the
    wallet for good), so a bulk replay leaves it; retrying its legs is asked for by name:
    its id, or its state in ``states``.
    """
    wanted = set(State) if states is None else {State(s) for s in states}
    asked = wanted & {State.PARTIALLY_PAID} if states is not None else set()
    wanted = (wanted - FINAL_STATES) | asked
    if not wanted:
        return []
    if not all and stuck_after is None:
        stuck_after = DEFAULT_STUCK_AFTER
    return store.list_pending(states=wanted, stuck_after=stuck_after, now=now, limit=limit)


# ---------------------------------------------------------------------- replaying


async def replay_many(
    flow: Flow | Callable[[], Flow],
    pending_ids: Iterable[str | Pending],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    webhooks: WebhookSender | None = None,
    on_outcome: Callable[[ReplayOutcome], None] | None = None,
) -> list[ReplayOutcome]:
    """Replay each grant, at most ``concurrency`` at once; one outcome per distinct id.

    ``flow`` is a Flow (left open) or a factory called once (its Flow is closed here).
    Outcomes come back in the order of ``pending_ids``; ``on_outcome`` sees each as it
    lands. With ``webhooks``, deliveries left undelivered are sent again at the end.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    from opapprove.approvals.flow import Flow

    engine = flow if isinstance(flow, Flow) else flow()
    owned = engine is not flow
    ids = list(dict.fromkeys(p.id if isinstance(p, Pending) else str(p) for p in pending_ids))
    results: list[ReplayOutcome | None] = [None] * len(ids)
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, pending_id: str) -> None:
        async with gate:
            outcome = await replay_one(engine, pending_id)
        results[index] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        await asyncio.gather(*(one(i, pid) for i, pid in enumerate(ids)))
        if webhooks is not None:
            await webhooks.deliver_pending()
    finally:
        if owned:
            await engine.aclose()
    return [r for r in results if r is not None]


async def replay_one(flow: Flow, pending_id: str) -> ReplayOutcome:
    """Replay one grant and say what came of it; never raises for the grant's own trouble."""
    try:
        before = flow.store.get_pending(pending_id)
    except StoreError as exc:
        return ReplayOutcome(pending_id, None, None, "error", exc.message, exc.hint, "store")
    if before is None:
        return ReplayOutcome(
            pending_id,
            None,
            None,
            "error",
            f"unknown pendingId {pending_id!r}",
            "list grants with `opapprove pending list`",
            "input",
        )
    # A partially paid split is final but for its failed legs, which a replay pays.
    if before.state in FINAL_STATES and before.state != State.PARTIALLY_PAID:
        return ReplayOutcome(
            pending_id,
            before.state,
            before.state,
            "unchanged",
            f"already {before.state}; nothing to replay",
        )
    try:
        after = await flow.replay(pending_id)
    except FlowError as exc:
        return _refused(flow, before, exc)
    except GrantTimeout as exc:
        return ReplayOutcome(
            pending_id,
            before.state,
            _state_now(flow, before),
            "waiting",
            f"the buyer has not approved yet: {exc.message}",
            exc.hint,
            "waiting",
        )
    except Exception as exc:  # one grant's bug or broken row must not stop the batch
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return ReplayOutcome(
            pending_id,
            before.state,
            _state_now(flow, before),
            "error",
            f"{type(exc).__name__}: {text}",
            f"see `opapprove pending show {pending_id}`",
            "internal",
        )
    return _finished(before, after)


def _state_now(flow: Flow, before: Pending) -> State:
    try:
        now = flow.store.get_pending(before.id)
    except StoreError:
        return before.state
    return before.state if now is None else now.state


def _refused(flow: Flow, before: Pending, exc: FlowError) -> ReplayOutcome:
    after = _state_now(flow, before)
    outcome: Outcome
    if exc.kind == "waiting":
        outcome = "waiting"
    elif exc.kind == "expired" or after == State.EXPIRED:
        outcome = "expired"
    elif after in _SIDE_EXITS or exc.kind == "rejected":
        outcome = "failed"
    elif exc.kind == "busy":
        outcome = "unchanged"
    else:
        outcome = "error"
    return ReplayOutcome(before.id, before.state, after, outcome, exc.message, exc.hint, exc.kind)


def _finished(before: Pending, after: Pending) -> ReplayOutcome:
    state = after.state
    outcome: Outcome
    hint: str | None = None
    if state == State.COMPLETED:
        outcome, message = "completed", "paid" + _sent(after)
    elif state == State.EXPIRED:
        outcome, message = "expired", after.last_error or "Payment approval expired"
        hint = restart_hint(after)
    elif state in _SIDE_EXITS:
        outcome, message = "failed", after.last_error or f"the grant is {state}"
    elif state == before.state:
        outcome, message = "unchanged", f"still {state}"
        if state == State.PAYMENT_CREATED:
            hint = f"{waiting_on(after)}; replay again later, or `opapprove status`"
    elif state == State.AWAITING_APPROVAL:
        outcome, message = "advanced", f"{before.state} -> awaiting the buyer's approval"
        hint = f"send the buyer the approval URL {after.interact_redirect}"
    else:
        outcome, message = "advanced", f"{before.state} -> {state}"
    return ReplayOutcome(after.id, before.state, state, outcome, message, hint)


def waiting_on(pending: Pending) -> str:
    """What a created payment is waiting for, in words for the operator."""
    from opapprove.approvals.seller_payment import receipt_awaited

    if receipt_awaited(pending.outgoing_payment):
        return (
            "the buyer's wallet reports the payment sent, but the seller's wallet has not"
            " shown it received yet"
        )
    return "the wallet is still sending"


def _sent(pending: Pending) -> str:
    payment = pending.outgoing_payment or {}
    sent = payment.get("sentAmount")
    return f": {money.format_wire(sent)}" if isinstance(sent, dict) else ""


# ---------------------------------------------------------------------- diagnosing


def diagnose(pending: Pending, *, now: float) -> Diagnosis:
    """Where ``pending`` stopped, why, and the next step, in words for support staff."""
    state, pid = pending.state, pending.id
    replay = f"`opapprove pending replay {pid}`"
    error = f" (last error: {pending.last_error})" if pending.last_error else ""
    if state in FINAL_STATES:
        why = pending.last_error or ("paid" if state == State.COMPLETED else str(state))
        next_step = "nothing: the grant is finished"
        if state in (State.EXPIRED, State.REJECTED, State.CANCELLED, State.FAILED):
            next_step = restart_hint(pending)
        if state == State.PARTIALLY_PAID:
            next_step = f"{replay} quotes the legs that did not pay again and pays only those"
        return Diagnosis(str(state), why, next_step)
    if state in (State.STARTED, State.INCOMING_CREATED, State.QUOTE_CREATED):
        missing = {
            State.STARTED: "the incoming payment",
            State.INCOMING_CREATED: "the quote",
            State.QUOTE_CREATED: "the buyer's approval request (interactive grant)",
        }[state]
        return Diagnosis(
            f"setting up: {state}",
            f"stopped before {missing} was created{error}",
            f"{replay} creates it and asks for approval",
        )
    if state == State.AWAITING_APPROVAL:
        if pending.approval_expires_at is not None and now > pending.approval_expires_at:
            return Diagnosis(
                "awaiting approval",
                "the approval window has passed",
                f"{replay} marks it expired; then {restart_hint(pending)}",
            )
        if pending.poll:
            return Diagnosis(
                "awaiting approval (polled)",
                "the buyer has not approved yet",
                f"{replay} polls the wallet again",
            )
        return Diagnosis(
            "awaiting approval",
            "the wallet's redirect has not arrived, and wallets do not let grants with a"
            f" finish redirect be polled{error}",
            f"paste the redirect with `opapprove finish URL`, or `opapprove pending cancel"
            f" {pid}` and start again",
        )
    steps = {
        State.APPROVED: ("approved", "the grant was not continued yet", "continues it and pays"),
        State.GRANT_ISSUED: (
            "grant issued",
            "the outgoing payment was not created yet",
            "creates it",
        ),
        State.PAYING: (
            "paying",
            "it stopped while creating the outgoing payment; the wallet may have made it",
            "looks for that payment first and creates one only if there is none",
        ),
        State.PAYMENT_CREATED: (
            "payment created",
            "the payment was not yet seen fully sent",
            "re-checks the payment's status",
        ),
    }
    where, why, then = steps[state]
    return Diagnosis(where, why + error, f"{replay} {then}")
