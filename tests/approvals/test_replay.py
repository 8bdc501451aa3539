"""Replaying stuck grants in bulk: 100 grants stopped at every state, one pass, right ends."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import FINAL_STATES, State
from opapprove.approvals.replay import (
    OUTCOMES,
    ReplayOutcome,
    diagnose,
    replay_many,
    select_for_replay,
)
from tests.approvals.conftest import FlowKit, make_kit
from tests.approvals.crash_support import (
    STEP_BY_NAME,
    CrashingTransport,
    Killed,
    fresh_flow,
    no_sleep,
    payments_by_pending,
)

pytestmark = pytest.mark.anyio

AMOUNT, MINOR = "1.00", 100

# kind of stuck grant -> (how many, outcome of the replay, state after it)
PLAN: dict[str, tuple[int, str, State]] = {
    "redirect_lost": (12, "waiting", State.AWAITING_APPROVAL),
    "approved": (12, "completed", State.COMPLETED),
    "grant_issued": (12, "completed", State.COMPLETED),
    "paying_unpaid": (12, "completed", State.COMPLETED),
    "paying_paid": (12, "completed", State.COMPLETED),
    "payment_created": (12, "completed", State.COMPLETED),
    "approval_expired": (10, "expired", State.EXPIRED),
    "started": (6, "advanced", State.AWAITING_APPROVAL),
    "incoming_created": (6, "advanced", State.AWAITING_APPROVAL),
    "quote_created": (6, "advanced", State.AWAITING_APPROVAL),
}
STATE_BEFORE = {
    "redirect_lost": State.AWAITING_APPROVAL,
    "approved": State.APPROVED,
    "grant_issued": State.GRANT_ISSUED,
    "paying_unpaid": State.PAYING,
    "paying_paid": State.PAYING,
    "payment_created": State.PAYMENT_CREATED,
    "approval_expired": State.AWAITING_APPROVAL,
    "started": State.STARTED,
    "incoming_created": State.INCOMING_CREATED,
    "quote_created": State.QUOTE_CREATED,
}


class Seeder:
    """Drives grants into each stuck state the way crashes leave them."""

    def __init__(self, kit: FlowKit) -> None:
        self.kit = kit
        self.crash = CrashingTransport(httpx.ASGITransport(app=kit.sandbox.asgi), kit.sandbox.state)
        self.flow = Flow(
            kit.store, kit.settings, transport=self.crash, clock=kit.sandbox.clock, sleep=no_sleep
        )
        self.finish_urls: dict[str, str] = {}

    async def start(self, n: int) -> Any:
        return await self.flow.start_quote(
            offer_id=f"offer-{n}", buyer_wallet=self.kit.sandbox.buyer, amount=AMOUNT
        )

    async def die_at(self, call: Any, step: str, mode: str) -> None:
        self.crash.arm(STEP_BY_NAME[step], mode)
        with pytest.raises(Killed):
            await call
        assert self.crash.fired

    async def seed(self, kind: str, n: int) -> str:
        kit, store = self.kit, self.kit.store
        if kind in ("started", "incoming_created", "quote_created"):
            step, mode = {
                "started": ("create incoming payment", "kill"),
                "incoming_created": ("create quote", "kill"),
                "quote_created": ("grant outgoing-payment (interactive)", "kill_before"),
            }[kind]
            await self.die_at(self.start(n), step, mode)
            return store.list_pending(newest_first=True, limit=1)[0].id
        pending = await self.start(n)
        if kind == "approval_expired":
            store.update(pending.id, approval_expires_at=kit.sandbox.clock() - 1)
            return str(pending.id)
        url = kit.finish_url(pending.interact_redirect)
        if kind == "redirect_lost":
            self.finish_urls[pending.id] = url  # the buyer approved; the redirect never came
        elif kind == "approved":
            await self.die_at(self.flow.finish_url(url), "continue grant", "kill_before")
        elif kind in ("grant_issued", "paying_unpaid"):
            await self.die_at(self.flow.finish_url(url), "create outgoing payment", "kill_before")
            if kind == "grant_issued":
                store.transition(pending.id, State.GRANT_ISSUED, expect=State.PAYING)
        elif kind == "paying_paid":
            await self.die_at(self.flow.finish_url(url), "create outgoing payment", "kill")
        elif kind == "payment_created":
            await self.die_at(self.flow.finish_url(url), "get outgoing payment", "kill_before")
        return str(pending.id)


@pytest.fixture
async def seeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_location: Path | str
) -> Any:
    kit = make_kit(tmp_path, monkeypatch, store_at=store_location)
    seeder = Seeder(kit)
    kinds: dict[str, str] = {}
    n = 0
    for kind, (count, _, _) in PLAN.items():
        for _ in range(count):
            n += 1
            kinds[await seeder.seed(kind, n)] = kind
    await seeder.flow.aclose()
    yield kit, kinds, seeder.finish_urls
    kit.sandbox.recorder.assert_clean()
    kit.store.close()
    kit.sandbox.state.close()


async def test_replay_of_100_mixed_stuck_grants(seeded: Any) -> None:
    kit, kinds, finish_urls = seeded
    assert len(kinds) == 100
    for pending_id, kind in kinds.items():
        assert kit.store.get_pending(pending_id).state == STATE_BEFORE[kind], kind
    paid_before = payments_by_pending(kit.sandbox.state)
    assert set(paid_before) == {
        p for p, k in kinds.items() if k in ("paying_paid", "payment_created")
    }
    # One grant whose seller is gone and one unknown id: their errors stop nobody.
    orphan = kit.store.create_pending(
        seller_id="gone", offer_id="o", buyer_wallet=kit.sandbox.buyer, amount=AMOUNT
    )
    chosen = select_for_replay(kit.store)
    assert {p.id for p in chosen} == set(kinds) | {orphan.id}

    store, flow = fresh_flow(kit)
    seen: list[ReplayOutcome] = []
    try:
        outcomes = await replay_many(
            flow, [*chosen, "no-such-grant"], concurrency=8, on_outcome=seen.append
        )
        assert len(outcomes) == len(seen) == 102
        assert [o.pending_id for o in outcomes] == [*(p.id for p in chosen), "no-such-grant"]
        by_id = {o.pending_id: o for o in outcomes}
        for pending_id, kind in kinds.items():
            _, outcome, after = PLAN[kind]
            got = by_id[pending_id]
            assert (got.outcome, got.after) == (outcome, after), (kind, got)
            assert got.before == STATE_BEFORE[kind]
            assert store.get_pending(pending_id).state == after
            assert got.message and "\n" not in got.message
        assert by_id[orphan.id].outcome == "error" and by_id[orphan.id].error_kind == "config"
        assert by_id["no-such-grant"].outcome == "error"
        expired = [o for o in outcomes if o.outcome == "expired"]
        assert all("quote start" in (o.hint or "") for o in expired)
        waiting = [o for o in outcomes if o.outcome == "waiting"]
        assert all("finish" in (o.hint or "") and "cancel" in (o.hint or "") for o in waiting)

        # Exactly one outgoing payment per paid grant; the buyer paid each once.
        payments = payments_by_pending(kit.sandbox.state)
        completed = {p for p in kinds if store.get_pending(p).state == State.COMPLETED}
        assert payments == {p: 1 for p in completed}
        assert kit.sandbox.state.balance("buyer") == 100_000 - MINOR * len(completed)

        # A second pass over what is left changes nothing and pays nothing.
        again = await replay_many(flow, select_for_replay(store), concurrency=8)
        assert Counter(o.outcome for o in again) == {"waiting": 30, "error": 1}
        assert payments_by_pending(kit.sandbox.state) == payments

        # The rest finish once the buyer's redirects arrive.
        for url in finish_urls.values():
            assert (await flow.finish_url(url)).state == State.COMPLETED
        for pending_id, kind in kinds.items():
            if kind in ("started", "incoming_created", "quote_created"):
                redirect = store.get_pending(pending_id).interact_redirect
                done = await flow.finish_url(kit.finish_url(redirect))
                assert done.state == State.COMPLETED
        finals = Counter(store.get_pending(p).state for p in kinds)
        assert finals == {State.COMPLETED: 90, State.EXPIRED: 10}
        assert payments_by_pending(kit.sandbox.state) == {
            p: 1 for p in kinds if kinds[p] != "approval_expired"
        }
        assert kit.sandbox.state.balance("buyer") == 100_000 - MINOR * 90
    finally:
        await flow.aclose()
        store.close()


async def test_a_factory_flow_is_made_once_shared_and_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_location: Path | str
) -> None:
    kit = make_kit(tmp_path, monkeypatch, store_at=store_location)
    seeder = Seeder(kit)
    ids = [await seeder.seed("paying_paid", n) for n in range(4)]
    await seeder.flow.aclose()
    made: list[Flow] = []
    closed: list[int] = []

    class CountingFlow(Flow):
        async def aclose(self) -> None:
            closed.append(len(self.access.clients))
            await super().aclose()

    def factory() -> Flow:
        made.append(
            CountingFlow(
                kit.store,
                kit.settings,
                transport=httpx.ASGITransport(app=kit.sandbox.asgi),
                clock=kit.sandbox.clock,
            )
        )
        return made[-1]

    outcomes = await replay_many(factory, ids, concurrency=2)
    assert [o.outcome for o in outcomes] == ["completed"] * 4
    assert len(made) == 1 and closed == [1]  # one Flow, one client for the one seller
    assert payments_by_pending(kit.sandbox.state) == dict.fromkeys(ids, 1)
    kit.store.close()


class FakeFlow:
    """Stands in for Flow to watch the concurrency bound and error isolation."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.running = 0
        self.peak = 0
        self.closed = False

    async def replay(self, pending_id: str) -> Any:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            pending = self.store.get_pending(pending_id)
            if pending.offer_id == "boom":
                raise RuntimeError("something broke\nsecond line")
            if pending.offer_id == "busy":
                raise FlowError("another process is on it", hint="retry", kind="busy")
            return self.store.transition(pending_id, State.COMPLETED, expect=pending.state)
        finally:
            self.running -= 1

    async def aclose(self) -> None:
        self.closed = True


async def test_concurrency_is_bounded_and_errors_stay_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_location: Path | str
) -> None:
    kit = make_kit(tmp_path, monkeypatch, store_at=store_location)
    offers = ["ok"] * 30 + ["boom", "busy"] + ["ok"] * 8
    ids = [
        kit.store.create_pending(
            seller_id="s", offer_id=o, buyer_wallet=kit.sandbox.buyer, amount="1"
        ).id
        for o in offers
    ]
    fake = FakeFlow(kit.store)
    outcomes = await replay_many(lambda: fake, ids + ids[:3], concurrency=5)  # type: ignore[arg-type,return-value]
    assert fake.peak == 5 and fake.closed
    assert len(outcomes) == 40  # one per distinct id
    counts = Counter(o.outcome for o in outcomes)
    assert counts == {"completed": 38, "error": 1, "unchanged": 1}
    boom = outcomes[30]
    assert boom.outcome == "error" and boom.message == "RuntimeError: something broke"
    assert boom.after == State.STARTED
    assert outcomes[31].error_kind == "busy"
    with pytest.raises(ValueError):
        await replay_many(lambda: fake, ids, concurrency=0)  # type: ignore[arg-type,return-value]
    kit.store.close()


async def test_select_for_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_location: Path | str
) -> None:
    kit = make_kit(tmp_path, monkeypatch, store_at=store_location)
    store = kit.store
    rows = {
        state: store.create_pending(
            seller_id="s", offer_id=str(state), buyer_wallet=kit.sandbox.buyer, amount="1"
        )
        for state in (State.STARTED, State.PAYING, State.COMPLETED, State.CANCELLED)
    }
    for state in (State.PAYING, State.COMPLETED, State.CANCELLED):
        store.transition(rows[state].id, state, expect=State.STARTED)
    non_final = {rows[State.STARTED].id, rows[State.PAYING].id}
    assert {p.id for p in select_for_replay(store)} == non_final
    assert [p.id for p in select_for_replay(store, states=[State.PAYING, State.COMPLETED])] == [
        rows[State.PAYING].id
    ]
    assert select_for_replay(store, states=[State.COMPLETED]) == []
    # Only stuck ones: untouched for stuck_after seconds (default 900).
    assert select_for_replay(store, all=False) == []
    later = rows[State.PAYING].updated_at + 901
    assert {p.id for p in select_for_replay(store, all=False, now=later)} == non_final
    assert select_for_replay(store, stuck_after=5000, now=later) == []
    kit.store.close()


def test_diagnose_says_where_why_and_what_next(kit: FlowKit) -> None:
    store = kit.store
    pending = store.create_pending(
        seller_id="s", offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1"
    )
    now = pending.created_at
    for state in State:
        told = diagnose(replace(pending, state=state, approval_expires_at=now + 10), now=now)
        assert told.where and told.why and told.next_step
        assert "\n" not in f"{told.where}{told.why}{told.next_step}"
        if state not in FINAL_STATES and state != State.AWAITING_APPROVAL:
            assert "pending replay" in told.next_step
    awaiting = replace(pending, state=State.AWAITING_APPROVAL)
    assert "finish URL" in diagnose(awaiting, now=now).next_step
    assert "cancel" in diagnose(awaiting, now=now).next_step
    stale = replace(pending, state=State.AWAITING_APPROVAL, approval_expires_at=now - 1)
    assert "expired" in diagnose(stale, now=now).next_step
    assert set(OUTCOMES) == {
        "completed",
        "advanced",
        "unchanged",
        "waiting",
        "expired",
        "failed",
        "error",
    }
