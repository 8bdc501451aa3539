"""A split payment's legs in the store, on both backends: created with their grant, moved
state by state with an event each, and copied with the rest of the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opapprove.approvals.records import LegState, State
from opapprove.approvals.store import StaleState, Store
from opapprove.approvals.store_copy import copy_store, count_rows

LEGS = [
    {"seller_id": "seller-a", "seller_wallet": "https://ilp.test/a", "amount": "60.00"},
    {"seller_id": "seller-b", "seller_wallet": "https://ilp.test/b", "amount": "30.00"},
    {"seller_id": "seller-c", "seller_wallet": "https://ilp.test/c", "amount": "10.00"},
]


@pytest.fixture
def store(store_location: Path | str) -> Iterator[Store]:
    with Store(store_location) as s:
        yield s


def split(store: Store) -> str:
    return store.create_pending(
        seller_id="seller-a",
        offer_id="42",
        buyer_wallet="https://ilp.test/buyer",
        amount="100.00",
        legs=LEGS,
    ).id


def test_a_split_grant_is_created_with_its_legs_and_a_single_one_without(store: Store) -> None:
    pid = split(store)
    pending = store.get_pending(pid)
    assert pending is not None and pending.leg_count == 3 and pending.is_split
    legs = store.legs(pid)
    assert [(g.leg, g.seller_id, g.amount, g.state) for g in legs] == [
        (1, "seller-a", "60.00", LegState.STARTED),
        (2, "seller-b", "30.00", LegState.STARTED),
        (3, "seller-c", "10.00", LegState.STARTED),
    ]
    single = store.create_pending(
        seller_id="s", offer_id="1", buyer_wallet="https://ilp.test/buyer", amount="1.00"
    )
    assert single.leg_count == 0 and not single.is_split and store.legs(single.id) == []


def test_a_bad_leg_field_stores_nothing(store: Store) -> None:
    with pytest.raises(TypeError, match="unknown Leg fields: colour"):
        store.create_pending(
            seller_id="seller-a",
            offer_id="42",
            buyer_wallet="https://ilp.test/buyer",
            amount="100.00",
            legs=[{**LEGS[0], "colour": "red"}],
        )
    assert store.list_pending() == []


def test_leg_transitions_are_committed_with_an_event_and_guarded(store: Store) -> None:
    pid = split(store)
    before = store.get_pending(pid)
    assert before is not None
    leg = store.transition_leg(
        pid,
        2,
        LegState.INCOMING_CREATED,
        expect=LegState.STARTED,
        event="leg_incoming_payment_created",
        data={"incomingPayment": "https://ilp.test/ip/1"},
        incoming_payment_url="https://ilp.test/ip/1",
        incoming_payment={"id": "https://ilp.test/ip/1"},
    )
    assert leg.state == LegState.INCOMING_CREATED and leg.version == 2
    assert leg.incoming_payment == {"id": "https://ilp.test/ip/1"}
    (event,) = [e for e in store.events(pid) if e.kind == "leg_incoming_payment_created"]
    assert (event.from_state, event.to_state) == ("started", "incoming_created")
    assert event.data == {"leg": 2, "incomingPayment": "https://ilp.test/ip/1"}
    # The other legs and the grant's own state are untouched.
    assert [g.state for g in store.legs(pid)] == [
        LegState.STARTED,
        LegState.INCOMING_CREATED,
        LegState.STARTED,
    ]
    assert store.get_pending(pid).state == State.STARTED  # type: ignore[union-attr]
    with pytest.raises(StaleState, match=r"leg 2 of grant .* is incoming_created, not started"):
        store.transition_leg(pid, 2, LegState.INCOMING_CREATED, expect=LegState.STARTED)
    with pytest.raises(StaleState, match="has no leg 9"):
        store.transition_leg(pid, 9, LegState.PAYING, expect=LegState.STARTED)
    with pytest.raises(TypeError, match="cannot set state"):
        store.update_leg(pid, 1, state="completed")


def test_a_leg_error_shows_on_the_grant_too(store: Store) -> None:
    pid = split(store)
    store.record_leg_error(pid, 3, "403 unauthorized")
    leg = store.get_leg(pid, 3)
    assert leg is not None and (leg.last_error, leg.attempts) == ("403 unauthorized", 1)
    pending = store.get_pending(pid)
    assert pending is not None
    assert (pending.last_error, pending.attempts) == ("leg 3: 403 unauthorized", 1)
    moved = store.transition_leg(pid, 3, LegState.COMPLETED, expect=LegState.STARTED)
    assert moved.last_error is None  # a paid leg's earlier trouble is history


def test_a_grants_legs_are_copied_with_it(store: Store, tmp_path: Path) -> None:
    pid = split(store)
    store.update_leg(pid, 1, quote={"id": "q1"}, event="noted")
    with Store(tmp_path / "copy.db") as copy:
        copied = copy_store(store, copy)
        assert copied["pending_legs"] == 3 and count_rows(copy)["pending_legs"] == 3
        assert [g.to_json() for g in copy.legs(pid)] == [g.to_json() for g in store.legs(pid)]
        assert copy.get_leg(pid, 1).quote == {"id": "q1"}  # type: ignore[union-attr]
