"""A store of 1,000 grants with known fates, for the report's tests (built once per process).

Ten days of 100 grants (day d starts at ``T0 + d days``), fate by ``i % 10`` (and ``i % 20``):

    0-4  completed; approved 30 s * (i % 10 + 1) after awaiting, paid 5 s later (50 s for 4)
    5    rejected by the buyer while awaiting approval
    6    expired while awaiting approval
    7    failed before approval: "cannot reach wallet <url> (timed out)" (i % 20 == 7)
         or "quote refused: 400 invalid amount" (i % 20 == 17)
    8    approved after 300 s, then failed while paying: "outgoing payment refused: ..."
    9    still awaiting approval (i % 20 == 9) or cancelled before approval (i % 20 == 19)

Grants with ``i % 100 < 10`` belong to seller "shop-b", the rest to "shop-a". The hand
counts the tests check are written out next to each assertion.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opapprove.approvals.records import State
from opapprove.approvals.store import Store

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86400.0
# Mid-day 9: the open grants of day 9 are ~10 h idle, of day 3 ~6.4 d, of day 2 ~7.4 d.
NOW = T0 + 9.5 * DAY
_built: dict[str, Path] = {}

_SETUP = (State.INCOMING_CREATED, State.QUOTE_CREATED, State.AWAITING_APPROVAL)
_PAYING = (State.GRANT_ISSUED, State.PAYING, State.PAYMENT_CREATED)


def seeded_store(factory: pytest.TempPathFactory) -> Path:
    """The path of the 1,000-grant store (read it; do not write to it)."""
    if "path" not in _built:
        path = factory.mktemp("report") / "opapprove.db"
        _seed(path)
        _built["path"] = path
    return _built["path"]


def _seed(path: Path) -> None:
    clock = [T0]
    store = Store(path, clock=lambda: clock[0])

    def at(seconds: float) -> None:
        clock[0] = seconds

    def walk(pid: str, states: tuple[State, ...], start: State, **fields: object) -> State:
        current = start
        for state in states:
            store.transition(pid, state, expect=current, **fields)
            current = state
        return current

    with store:
        for i in range(1000):
            fate = i % 10
            born = T0 + (i // 100) * DAY + (i % 100) * 60
            at(born)
            seller = "shop-b" if i % 100 < 10 else "shop-a"
            pid = store.create_pending(
                seller_id=seller, offer_id=f"offer-{i}", buyer_wallet="https://w.example/bo",
                amount="10.00",
            ).id  # fmt: skip
            if fate == 7:
                at(born + 2)
                if i % 20 == 7:
                    message = f"cannot reach wallet https://w.example/alice-{i} (timed out)"
                    store.transition(pid, State.FAILED, expect=State.STARTED, last_error=message)
                else:
                    store.transition(pid, State.INCOMING_CREATED, expect=State.STARTED)
                    store.transition(
                        pid, State.FAILED, expect=State.INCOMING_CREATED,
                        last_error="quote refused: 400 invalid amount",
                    )  # fmt: skip
                continue
            if fate == 9 and i % 20 == 19:
                at(born + 2)
                walk(pid, (State.INCOMING_CREATED, State.QUOTE_CREATED), State.STARTED)
                store.transition(pid, State.CANCELLED, expect=State.QUOTE_CREATED)
                continue
            at(born + 1)
            awaiting = walk(pid, _SETUP, State.STARTED)
            if fate == 9:
                continue  # still awaiting approval: stuck
            if fate in (5, 6):
                at(born + 100)
                final = State.REJECTED if fate == 5 else State.EXPIRED
                store.transition(pid, final, expect=awaiting)
                continue
            approve_after = 300.0 if fate == 8 else 30.0 * (fate + 1)
            at(born + 1 + approve_after)
            store.transition(pid, State.APPROVED, expect=awaiting)
            current = walk(pid, _PAYING, State.APPROVED)
            if fate == 8:
                store.transition(
                    pid, State.FAILED, expect=current,
                    last_error=f"outgoing payment refused: insufficient funds (grant {pid})",
                )  # fmt: skip
                continue
            at(born + 1 + approve_after + (50.0 if fate == 4 else 5.0))
            store.transition(pid, State.COMPLETED, expect=current)
