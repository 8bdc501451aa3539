"""Approval analytics over the store: the funnel, approval rate, times, failures, stuck grants.

``load_histories`` is the only place that reads the store (through its public methods);
``build_report`` is pure: the same histories and ``now`` give the same report. Nothing
here prints; ``cli/report.py`` shows it and ``diagnostics/report_html.py`` draws it.

Definitions (the README's "Approval report" section says the same):
- funnel: *started* is every grant; *awaiting approval* those that ever reached
  ``awaiting_approval``; *approved* those that went on from there (``approved``, or
  straight to ``grant_issued`` when polled); *paid* those ``completed``.
- side exits: grants that ended ``rejected``, ``expired``, ``cancelled`` or ``failed``,
  by the stage they left from (before approval, awaiting approval, after approval).
- approval rate: approved / decided, where *decided* is every grant that left
  ``awaiting_approval`` (approved, or a side exit from there).
- time to approve: from the last entry into ``awaiting_approval`` to the approval;
  approval to payment: from the approval to ``completed``. Percentiles are nearest-rank.
- stuck: not final and unchanged for ``stuck_after`` seconds, aged from the last change.
- per day: by the UTC day the grant was started.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opapprove.approvals.records import FINAL_STATES, Event, Pending, State
from opapprove.approvals.store import Store

AWAITING = str(State.AWAITING_APPROVAL)
APPROVAL_STATES = frozenset({str(State.APPROVED), str(State.GRANT_ISSUED)})
BEFORE_APPROVAL = frozenset(
    {str(State.STARTED), str(State.INCOMING_CREATED), str(State.QUOTE_CREATED)}
)
SIDE_EXITS = (State.REJECTED, State.EXPIRED, State.CANCELLED, State.FAILED)
# Upper bounds in seconds; the last bucket is open.
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("<1h", 3600.0),
    ("1h-1d", 86400.0),
    ("1d-7d", 7 * 86400.0),
    (">7d", math.inf),
)
REASON_LENGTH = 120
_URL = re.compile(r"https?://\S+")
_ID = re.compile(r"\b(?:[0-9A-HJKMNP-TV-Z]{26}|[0-9a-f]{8}-[0-9a-f-]{27,}|[0-9a-f]{16,})\b", re.I)


@dataclass(frozen=True)
class History:
    """One grant and its events, oldest first: what the report is computed from."""

    pending: Pending
    events: tuple[Event, ...]


def load_histories(
    store: Store, *, since: float | None = None, seller_id: str | None = None
) -> list[History]:
    """Every grant started at or after ``since`` (of ``seller_id``), with its events."""
    rows = store.list_pending(since=since)
    return [
        History(p, tuple(store.events(p.id)))
        for p in rows
        if seller_id is None or p.seller_id == seller_id
    ]


@dataclass(frozen=True)
class Durations:
    """Seconds: how many, the median, the 90th percentile and the longest."""

    count: int = 0
    p50: float | None = None
    p90: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Iterable[float]) -> Durations:
        ordered = sorted(values)
        if not ordered:
            return cls()
        return cls(len(ordered), _rank(ordered, 0.5), _rank(ordered, 0.9), ordered[-1])

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "p50": self.p50, "p90": self.p90, "max": self.max}


def _rank(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` of them at or below."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class SideExit:
    state: str
    stage: str  # before_approval, awaiting_approval, after_approval
    count: int


@dataclass(frozen=True)
class Reason:
    state: str
    reason: str
    count: int


@dataclass(frozen=True)
class StuckState:
    state: str
    count: int
    oldest: float  # seconds since its last change
    by_age: dict[str, int]


@dataclass(frozen=True)
class Day:
    day: str  # YYYY-MM-DD, UTC
    started: int
    approved: int
    paid: int
    side_exits: int
    open: int


@dataclass
class Report:
    generated_at: float
    since: float | None
    seller_id: str | None
    stuck_after: float
    total: int = 0
    funnel: dict[str, int] = field(default_factory=dict)
    side_exits: list[SideExit] = field(default_factory=list)
    open_by_state: dict[str, int] = field(default_factory=dict)
    decided: int = 0
    approval_rate: float | None = None
    time_to_approve: Durations = field(default_factory=Durations)
    approval_to_payment: Durations = field(default_factory=Durations)
    reasons: list[Reason] = field(default_factory=list)
    stuck: list[StuckState] = field(default_factory=list)
    days: list[Day] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """camelCase keys, ISO-8601 UTC times, durations in seconds."""
        return {
            "generatedAt": iso(self.generated_at),
            "since": iso(self.since) if self.since is not None else None,
            "sellerId": self.seller_id,
            "stuckAfterSeconds": self.stuck_after,
            "total": self.total,
            "funnel": dict(self.funnel),
            "sideExits": [
                {"state": s.state, "stage": _camel(s.stage), "count": s.count}
                for s in self.side_exits
            ],
            "open": dict(self.open_by_state),
            "approvalRate": self.approval_rate,
            "decided": self.decided,
            "timeToApprove": self.time_to_approve.to_json(),
            "approvalToPayment": self.approval_to_payment.to_json(),
            "failureReasons": [
                {"state": r.state, "reason": r.reason, "count": r.count} for r in self.reasons
            ],
            "stuck": [
                {
                    "state": s.state,
                    "count": s.count,
                    "oldestSeconds": s.oldest,
                    "byAge": dict(s.by_age),
                }
                for s in self.stuck
            ],
            "days": [
                {
                    "day": d.day,
                    "started": d.started,
                    "approved": d.approved,
                    "paid": d.paid,
                    "sideExits": d.side_exits,
                    "open": d.open,
                }
                for d in self.days
            ],
        }


FUNNEL_STEPS = ("started", "awaitingApproval", "approved", "paid")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _stage(from_state: str | None) -> str:
    if from_state == AWAITING:
        return "awaiting_approval"
    if from_state in BEFORE_APPROVAL:
        return "before_approval"
    if from_state is None:
        return "unknown"
    return "after_approval"


def reason_of(pending: Pending, final: Event | None) -> str:
    """Why a grant left the happy path, with URLs and ids masked so alike reasons group."""
    state = pending.state
    if state == State.REJECTED:
        return "rejected by the buyer"
    if state == State.EXPIRED:
        return "approval expired"
    # Our own quote check ends a grant cancelled before the buyer is asked; its refusal is
    # the reason worth grouping, not the state's name.
    if state == State.CANCELLED and (final is None or final.kind != "quote_refused"):
        return "cancelled"
    text = pending.last_error or (final.data.get("error") if final is not None else None)
    if not text:
        return "failed (no reason recorded)"
    text = _ID.sub("<id>", _URL.sub("<url>", " ".join(str(text).split())))
    return text if len(text) <= REASON_LENGTH else text[: REASON_LENGTH - 1] + "…"


@dataclass(frozen=True)
class _Walk:
    awaiting: bool
    awaiting_at: float | None
    approved_at: float | None
    paid_at: float | None
    final: Event | None


def _walk(history: History) -> _Walk:
    awaiting_at: float | None = None
    approved_at: float | None = None
    paid_at: float | None = None
    final: Event | None = None
    awaiting = False
    for event in history.events:
        to = event.to_state
        if to is None:
            continue
        if to == AWAITING and approved_at is None:
            awaiting, awaiting_at = True, event.at
        elif to in APPROVAL_STATES and event.from_state == AWAITING and approved_at is None:
            approved_at = event.at
        elif to == str(State.COMPLETED) and paid_at is None:
            paid_at = event.at
        if to in {str(s) for s in FINAL_STATES}:
            final = event
    return _Walk(awaiting, awaiting_at, approved_at, paid_at, final)


def build_report(
    histories: list[History],
    *,
    now: float,
    stuck_after: float,
    since: float | None = None,
    seller_id: str | None = None,
) -> Report:
    report = Report(generated_at=now, since=since, seller_id=seller_id, stuck_after=stuck_after)
    report.total = len(histories)
    funnel = Counter[str]()
    exits = Counter[tuple[str, str]]()
    reasons = Counter[tuple[str, str]]()
    open_states = Counter[str]()
    to_approve: list[float] = []
    to_pay: list[float] = []
    stuck: dict[str, list[float]] = {}
    per_day: dict[str, Counter[str]] = {}
    left_awaiting = 0
    for history in histories:
        pending = history.pending
        walk = _walk(history)
        day = per_day.setdefault(iso(pending.created_at)[:10], Counter())
        day["started"] += 1
        funnel["started"] += 1
        if walk.awaiting:
            funnel["awaitingApproval"] += 1
        if walk.approved_at is not None:
            funnel["approved"] += 1
            day["approved"] += 1
            left_awaiting += 1
            if walk.awaiting_at is not None:
                to_approve.append(walk.approved_at - walk.awaiting_at)
        state = pending.state
        if state == State.COMPLETED:
            funnel["paid"] += 1
            day["paid"] += 1
            if walk.approved_at is not None and walk.paid_at is not None:
                to_pay.append(walk.paid_at - walk.approved_at)
        elif state in SIDE_EXITS:
            from_state = walk.final.from_state if walk.final is not None else None
            stage = _stage(from_state)
            exits[(str(state), stage)] += 1
            reasons[(str(state), reason_of(pending, walk.final))] += 1
            day["side_exits"] += 1
            if stage == "awaiting_approval":
                left_awaiting += 1
        else:
            open_states[str(state)] += 1
            day["open"] += 1
            idle = now - pending.updated_at
            if idle >= stuck_after:
                stuck.setdefault(str(state), []).append(idle)
    report.funnel = {step: funnel[step] for step in FUNNEL_STEPS}
    order = {str(s): i for i, s in enumerate(State)}
    stages = ("before_approval", "awaiting_approval", "after_approval", "unknown")
    report.side_exits = [
        SideExit(state, stage, count)
        for (state, stage), count in sorted(
            exits.items(), key=lambda kv: (order[kv[0][0]], stages.index(kv[0][1]))
        )
    ]
    report.open_by_state = {s: open_states[s] for s in sorted(open_states, key=order.__getitem__)}
    report.decided = left_awaiting
    report.approval_rate = funnel["approved"] / left_awaiting if left_awaiting else None
    report.time_to_approve = Durations.of(to_approve)
    report.approval_to_payment = Durations.of(to_pay)
    report.reasons = [
        Reason(state, reason, count)
        for (state, reason), count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    report.stuck = [
        StuckState(state, len(ages), max(ages), _age_buckets(ages))
        for state, ages in sorted(stuck.items(), key=lambda kv: order[kv[0]])
    ]
    report.days = [
        Day(d, c["started"], c["approved"], c["paid"], c["side_exits"], c["open"])
        for d, c in sorted(per_day.items())
    ]
    return report


def _age_buckets(ages: list[float]) -> dict[str, int]:
    counts = dict.fromkeys((name for name, _ in AGE_BUCKETS), 0)
    for seconds in ages:
        name = next(name for name, upper in AGE_BUCKETS if seconds < upper)
        counts[name] += 1
    return counts
