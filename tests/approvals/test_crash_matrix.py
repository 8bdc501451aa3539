"""Crash at every step of the flow, then replay: every flow completes, money moves once.

For each request the flow makes, the run "dies" right after that request left, in two
ways (see crash_support): the sandbox drops the connection after doing the work, or our
process is killed after the answer arrived but before it was committed. A fresh Store and
Flow on the same file (a new process) then replays, and the buyer approves again when a
new approval is needed, until the grant is final. ``test_the_whole_matrix`` asserts (and
writes out) the steps x crash modes table.

The same machinery runs a split payment to three sellers (``SPLIT``): every step of every
leg, and a death right after each leg's ``paying`` was committed (``kill_before`` its
payment); each seller must be paid once and the buyer debited once per leg.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import Pending, State
from opapprove.approvals.split import Payee
from tests.approvals.conftest import FlowKit, make_kit, make_split_kit
from tests.approvals.crash_support import (
    SPLIT_SELLERS,
    SPLIT_STEPS,
    STEPS,
    Start,
    Step,
    die_at,
    fresh_flow,
    payments_by_pending,
)

pytestmark = pytest.mark.anyio

MODES = ("drop", "kill")
AMOUNT, MINOR = "12.34", 1234
EXPECTED = "completed, 1 payment"
# Wallet documents are fetched before the grant's row is written: a death there leaves
# nothing to replay and nothing paid (the user runs `quote start` again).
NOTHING_STORED = "nothing stored, 0 payments"
BEFORE_STORE = frozenset({"wallet GET (buyer)", "wallet GET (seller)"})


def expected(step: Step) -> str:
    return NOTHING_STORED if step.name in BEFORE_STORE else EXPECTED


# The event that shows replay took the guarded path, for the steps that have one.
RECOVERED_BY = {
    "continue grant": "approval_restarted",  # the lost token cannot be fetched again
    "create outgoing payment": "payment_found",  # found, not made a second time
}
# (backend, step name, mode) -> the cell: "<final state>, <n> payment(s)[, ...]".
MATRIX: dict[tuple[str, str, str], str] = {}
NewStore = Callable[[Path], "Path | str"]


@dataclass(frozen=True)
class Scenario:
    """What is paid: the sellers' accounts and what each receives, how the grant starts."""

    name: str
    credits: dict[str, int]
    recovered_by: dict[str, str] = field(default_factory=lambda: RECOVERED_BY)

    @property
    def expected(self) -> str:
        n = len(self.credits)
        return f"completed, {n} payment{'s' if n != 1 else ''}"

    def kit(self, tmp: Path, mp: pytest.MonkeyPatch, store_at: Path | str) -> FlowKit:
        if self.name == "single":
            return make_kit(tmp, mp, store_at=store_at)
        sellers = [f"{s}:USD:2:0" for s in self.credits]
        return make_split_kit(tmp, mp, sellers, store_at=store_at)

    def start(self, kit: FlowKit) -> Start | None:
        if self.name == "single":
            return None
        payees = [Payee(s, f"{n / 100:.2f}") for s, n in self.credits.items()]

        async def start(flow: Flow) -> Pending:
            return await flow.start_quote(
                offer_id="offer-crash", buyer_wallet=kit.sandbox.buyer, amount="", payees=payees
            )

        return start


SINGLE = Scenario("single", {"seller": MINOR})
SPLIT = Scenario(
    "split",
    dict(zip(SPLIT_SELLERS, (123, 456, 789), strict=True)),
    {
        "continue grant": "approval_restarted",
        **{f"create outgoing payment (leg {n})": "leg_payment_found" for n in (1, 2, 3)},
    },
)
# Each seller's read of what its leg delivered: the first leg's (no leg confirmed yet) and the last
# leg's (every other leg completed); the middle leg's death is one of those for each other leg.
RECEIPT_LEGS_LEFT_OUT = frozenset({"get incoming payment (leg 2)"})
# Every split step in both modes, and a death right after each leg's `paying` was committed
# (before its payment is created) and after its `payment_created` (before it is read).
SPLIT_CASES = [
    (step, mode) for step in SPLIT_STEPS if step.name not in RECEIPT_LEGS_LEFT_OUT for mode in MODES
] + [
    (step, "kill_before")
    for step in SPLIT_STEPS
    if step.name.startswith(("create outgoing", "get outgoing"))
]
SPLIT_BEFORE_STORE = frozenset(s.name for s in SPLIT_STEPS if s.name.startswith("wallet GET"))


async def _finish_as_a_new_process(kit: FlowKit, pending_id: str) -> State:
    store, flow = fresh_flow(kit)
    try:
        for _ in range(6):
            pending = store.get_pending(pending_id)
            assert pending is not None
            if pending.is_final:
                break
            if pending.state == State.AWAITING_APPROVAL:
                # The buyer approves (again): the new approval request after the crash.
                await flow.finish_url(kit.finish_url(pending.interact_redirect))
                continue
            try:
                await flow.replay(pending_id)
            except FlowError as exc:
                assert exc.kind == "waiting", str(exc)
        final = store.get_pending(pending_id)
        assert final is not None
        return final.state
    finally:
        await flow.aclose()
        store.close()


async def _run_case(
    tmp: Path, store_at: Path | str, step: Step, mode: str, scenario: Scenario = SINGLE
) -> str:
    with pytest.MonkeyPatch.context() as mp:
        kit = scenario.kit(tmp, mp, store_at)
        try:
            balance = kit.sandbox.state.balance
            buyer_before = balance("buyer")
            sellers_before = {s: balance(s) for s in scenario.credits}
            pending_id, died = await die_at(kit, step, mode, start=scenario.start(kit))
            if not died:
                return "the crash did not happen"
            if not pending_id:
                paid = sum(payments_by_pending(kit.sandbox.state).values())
                moved = buyer_before - kit.sandbox.state.balance("buyer")
                return f"nothing stored, {paid} payments" + (f", debited {moved}" if moved else "")
            state = await _finish_as_a_new_process(kit, pending_id)
            payments = payments_by_pending(kit.sandbox.state)
            count = payments.get(pending_id, 0)
            cell = f"{state}, {count} payment{'s' if count != 1 else ''}"
            debited = buyer_before - balance("buyer")
            credited = {s: balance(s) - n for s, n in sellers_before.items()}
            if sum(payments.values()) != count:
                cell += f", {sum(payments.values()) - count} stray"
            if debited != sum(scenario.credits.values()) or credited != scenario.credits:
                cell += f", debited {debited} credited {credited}"
            kinds = {e.kind for e in kit.store.events(pending_id)}
            proof = scenario.recovered_by.get(step.name) if mode != "kill_before" else None
            if proof is not None and proof not in kinds:
                cell += f", without {proof}"
            kit.sandbox.recorder.assert_clean()
            return cell
        finally:
            kit.store.close()
            kit.sandbox.state.close()


async def _cell(
    backend: str,
    tmp: Path,
    new_store: NewStore,
    step: Step,
    mode: str,
    scenario: Scenario = SINGLE,
) -> str:
    key = (backend if scenario is SINGLE else f"{backend} {scenario.name}", step.name, mode)
    if key not in MATRIX:
        MATRIX[key] = await _run_case(tmp, new_store(tmp), step, mode, scenario)
    return MATRIX[key]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("step", STEPS, ids=[s.name for s in STEPS])
async def test_crash_then_replay_completes_and_pays_once(
    tmp_path: Path, store_backend: str, new_store: NewStore, step: Step, mode: str
) -> None:
    assert await _cell(store_backend, tmp_path, new_store, step, mode) == expected(step)


@pytest.mark.parametrize(
    ("step", "mode"), SPLIT_CASES, ids=[f"{s.name}-{m}" for s, m in SPLIT_CASES]
)
async def test_split_crash_then_replay_pays_every_seller_once(
    tmp_path: Path, store_backend: str, new_store: NewStore, step: Step, mode: str
) -> None:
    """A split payment to three sellers dies at any step of any leg; replayed, each seller
    is paid once and the buyer debited once per leg."""
    cell = await _cell(store_backend, tmp_path, new_store, step, mode, SPLIT)
    assert cell == (NOTHING_STORED if step.name in SPLIT_BEFORE_STORE else SPLIT.expected)


async def _died_paying(
    tmp: Path, mp: pytest.MonkeyPatch, store_at: Path | str, mode: str
) -> tuple[FlowKit, str]:
    """A kit whose grant died (``mode``) right after its payment was asked for."""
    kit = make_kit(tmp, mp, store_at=store_at)
    pending_id, died = await die_at(kit, _step("create outgoing payment"), mode)
    assert died
    return kit, pending_id


async def test_replay_waits_for_a_live_lease_then_pays_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_location: Path | str
) -> None:
    kit, pending_id = await _died_paying(tmp_path, monkeypatch, store_location, "kill")
    store, flow = fresh_flow(kit)
    try:
        assert store.get_pending(pending_id).state == State.PAYING
        # Another process (a listener, say) is working on the grant right now.
        assert store.acquire_lease(pending_id, "listener-4242", 60)
        with pytest.raises(FlowError) as err:
            await flow.replay(pending_id)
        assert err.value.kind == "busy"
        assert store.get_pending(pending_id).state == State.PAYING
        assert payments_by_pending(kit.sandbox.state) == {pending_id: 1}
        # That process died holding the lease; once it runs out, replay carries on.
        kit.sandbox.clock.advance(61)
        done = await flow.replay(pending_id)
        assert done.state == State.COMPLETED
        assert payments_by_pending(kit.sandbox.state) == {pending_id: 1}
        assert "payment_found" in [e.kind for e in store.events(pending_id)]
    finally:
        await flow.aclose()
        store.close()
        kit.store.close()


async def test_two_replays_at_once_pay_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_location: Path | str
) -> None:
    kit, pending_id = await _died_paying(tmp_path, monkeypatch, store_location, "drop")
    (store_a, flow_a), (store_b, flow_b) = fresh_flow(kit), fresh_flow(kit)
    try:
        results = await asyncio.gather(
            flow_a.replay(pending_id), flow_b.replay(pending_id), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(r, FlowError) and r.kind == "busy" for r in refused), refused
        for _ in range(2):
            if store_a.get_pending(pending_id).state != State.COMPLETED:
                await flow_a.replay(pending_id)
        assert store_a.get_pending(pending_id).state == State.COMPLETED
        assert payments_by_pending(kit.sandbox.state) == {pending_id: 1}
    finally:
        for flow in (flow_a, flow_b):
            await flow.aclose()
        store_a.close()
        store_b.close()
        kit.store.close()


async def test_the_whole_matrix(
    tmp_path_factory: pytest.TempPathFactory, store_backend: str, new_store: NewStore
) -> None:
    """Every step x crash mode: completed with exactly one payment (runs missing cells)."""
    for step in STEPS:
        for mode in MODES:
            await _cell(store_backend, tmp_path_factory.mktemp("cell"), new_store, step, mode)
    table = _table(store_backend)
    out = tmp_path_factory.getbasetemp() / f"crash_matrix_{store_backend}.md"
    out.write_text(table, encoding="utf-8")
    wrong = {
        k: v for k, v in MATRIX.items() if k[0] == store_backend and v != expected(_step(k[1]))
    }
    assert not wrong, table


def _table(backend: str) -> str:
    width = max(len(s.name) for s in STEPS)
    cell = max(len(EXPECTED), len(NOTHING_STORED))
    lines = [
        f"| {'step (dies right after it)':<{width}} | "
        + " | ".join(f"{m:<{cell}}" for m in MODES)
        + " |",
        f"|{'-' * (width + 2)}|" + "|".join("-" * (cell + 2) for _ in MODES) + "|",
    ]
    for step in STEPS:
        cells = [f"{MATRIX.get((backend, step.name, m), 'not run'):<{cell}}" for m in MODES]
        lines.append(f"| {step.name:<{width}} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _step(name: str) -> Step:
    return next(s for s in STEPS if s.name == name)
