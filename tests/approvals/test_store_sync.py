"""How hard the store syncs: no fsync per commit, except the one that guards money (paying)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opapprove.approvals.records import State
from opapprove.approvals.store import DURABLE_STATES, Store

NORMAL, FULL = 1, 2  # PRAGMA synchronous values


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "op.db") as s:
        yield s


def _synchronous(store: Store) -> int:
    conn = store._connection()
    value: int = conn.execute("PRAGMA synchronous").fetchone()[0]
    return value


def _to_grant_issued(store: Store) -> str:
    pid = store.create_pending(
        seller_id="s", offer_id="o", buyer_wallet="https://ilp.test/buyer", amount="1.00"
    ).id
    path = [
        State.INCOMING_CREATED,
        State.QUOTE_CREATED,
        State.AWAITING_APPROVAL,
        State.APPROVED,
        State.GRANT_ISSUED,
    ]
    previous = State.STARTED
    for state in path:
        store.transition(pid, state, expect=previous)
        previous = state
    return pid


def test_commits_do_not_fsync_by_default(store: Store) -> None:
    assert _synchronous(store) == NORMAL


def test_only_the_move_to_paying_is_committed_with_full_sync(store: Store) -> None:
    assert DURABLE_STATES == {State.PAYING}
    pid = _to_grant_issued(store)
    seen: list[str] = []
    conn = store._connection()
    conn.set_trace_callback(seen.append)
    try:
        store.transition(pid, State.PAYING, expect=State.GRANT_ISSUED, event="paying")
        store.transition(pid, State.PAYMENT_CREATED, expect=State.PAYING)
    finally:
        conn.set_trace_callback(None)
    full = [i for i, s in enumerate(seen) if s == "PRAGMA synchronous = FULL"]
    assert len(full) == 1
    # FULL is set before that transaction begins and dropped once it committed.
    paying_begin = seen.index("BEGIN IMMEDIATE", full[0])
    paying_commit = seen.index("COMMIT", paying_begin)
    assert seen.index("PRAGMA synchronous = NORMAL", paying_commit) > paying_commit
    assert store.get_pending(pid).state == State.PAYMENT_CREATED  # type: ignore[union-attr]
    assert _synchronous(store) == NORMAL


def test_a_refused_paying_transition_still_restores_normal_sync(store: Store) -> None:
    pid = store.create_pending(
        seller_id="s", offer_id="o", buyer_wallet="https://ilp.test/buyer", amount="1.00"
    ).id
    with pytest.raises(Exception, match="cannot become paying"):
        store.transition(pid, State.PAYING, expect=State.GRANT_ISSUED)
    assert _synchronous(store) == NORMAL
