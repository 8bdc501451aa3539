"""Faults on every route the flow uses: 500s, timeouts, dropped connections, slow answers.

The faults come from the sandbox's own fault modes (``set_fault``). For each one:
- the flow raises a ``FlowError`` with one line and a hint, and nothing else escapes;
- the store holds the last committed state, consistently (the fields that state needs,
  none of a later one, an event trail that chains, the lease released, ``last_error``);
- a GET is retried (a fault once still completes), a POST is never retried;
- after the fault, replay (and a new approval when one is needed) completes the payment,
  with exactly one outgoing payment and the money moved once.

500s and in-process drops run on ``httpx.ASGITransport``; timeouts, drops and slow answers
on real loopback, where a delay longer than the client's timeout is a real timeout. A
"hanging" delay waits on a gate that opens only when the test is over, so a request the
client gave up on is never processed behind the test's back.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import HAPPY_PATH, Pending, State
from opapprove.approvals.store import Store
from opapprove.openpayments.exchange import Exchange
from opapprove.settings import Settings, load_settings
from tests.approvals.conftest import FlowKit, make_kit
from tests.approvals.crash_support import (
    STEP_BY_NAME,
    STEPS,
    CrashingTransport,
    Killed,
    no_sleep,
    payments_by_pending,
)
from tests.sandbox_fixtures import Sandbox, make_sandbox

pytestmark = pytest.mark.anyio

AMOUNT, MINOR = "12.34", 1234
GET_ATTEMPTS = 3  # the client tries a GET three times
HANG = 3600.0  # a delay fault this long waits on the test's gate instead
TIMEOUT = 0.5  # the client's timeout for the timeout cases (a loopback answer takes ms)

GET_ROUTES = ("get-wallet-address", "get-outgoing-payment")
POST_ROUTES = (
    "post-request",
    "create-incoming-payment",
    "create-quote",
    "post-request (interactive)",
    "post-continue",
    "create-outgoing-payment",
)
# The operation each route is, as the client names it in its exchanges.
OPERATION = {"post-request (interactive)": "post-request"}

# The order of the happy path, and the state from which each field of a grant is set.
ORDER = HAPPY_PATH
FIELD_FROM = {
    "incoming_payment_url": State.INCOMING_CREATED,
    "incoming_payment": State.INCOMING_CREATED,
    "quote_url": State.QUOTE_CREATED,
    "quote": State.QUOTE_CREATED,
    "debit_amount": State.QUOTE_CREATED,
    "interact_redirect": State.AWAITING_APPROVAL,
    "server_finish_nonce": State.AWAITING_APPROVAL,
    "continue_uri": State.AWAITING_APPROVAL,
    "continue_token": State.AWAITING_APPROVAL,
    "interact_ref": State.APPROVED,
    "access_token": State.GRANT_ISSUED,
    "outgoing_payment_url": State.PAYMENT_CREATED,
    "outgoing_payment": State.PAYMENT_CREATED,
}

# --------------------------------------------------------------------------- harness


@dataclass
class Attempts:
    """Every exchange the client made, by operation (``on_exchange``)."""

    seen: list[Exchange] = field(default_factory=list)

    def __call__(self, exchange: Exchange) -> None:
        self.seen.append(exchange)

    def of(self, operation: str) -> list[Exchange]:
        return [e for e in self.seen if e.operation == operation]

    def retried(self, operation: str) -> bool:
        return any(e.attempt > 1 for e in self.of(operation))


@dataclass
class Case:
    kit: FlowKit
    settings: Settings
    transport: httpx.AsyncBaseTransport | None
    buyer: str
    attempts: Attempts = field(default_factory=Attempts)
    balances: tuple[int, int] = (0, 0)

    def flow(self, **kwargs: Any) -> Flow:
        return Flow(
            self.kit.store,
            self.settings,
            transport=self.transport,
            clock=self.kit.sandbox.clock,
            sleep=no_sleep,
            on_exchange=self.attempts,
            **kwargs,
        )

    def fault(self, route: str, **spec: Any) -> None:
        self.kit.sandbox.state.set_fault(OPERATION.get(route, route), **spec)

    def clear(self) -> None:
        self.kit.sandbox.state.clear_faults()

    def only_pending(self) -> Pending:
        rows = [p for p in self.kit.store.list_pending() if p.offer_id == "offer-fault"]
        assert len(rows) == 1, rows
        return rows[0]


@contextmanager
def in_process(tmp: Path) -> Iterator[Case]:
    with pytest.MonkeyPatch.context() as mp:
        kit = make_kit(tmp, mp)
        case = Case(kit, kit.settings, httpx.ASGITransport(app=kit.sandbox.asgi), kit.sandbox.buyer)
        case.balances = _balances(kit)
        try:
            yield case
            kit.sandbox.recorder.assert_clean()
        finally:
            kit.store.close()
            kit.sandbox.state.close()


@dataclass
class Served:
    """One sandbox on loopback for the whole module (starting uvicorn per test is slow)."""

    kit_box: Sandbox
    url: str
    gate: threading.Event


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    gate = threading.Event()

    async def gated_sleep(seconds: float) -> None:
        if seconds >= HANG:
            while not gate.is_set():
                await asyncio.sleep(0.01)
        else:
            await asyncio.sleep(seconds)

    box = make_sandbox(sleep=gated_sleep)
    try:
        with box.served() as server:
            try:
                yield Served(box, server.url, gate)
            finally:
                gate.set()  # what still hangs finishes (unprocessed) before the server stops
        box.recorder.assert_clean()
    finally:
        box.state.close()


@contextmanager
def on_loopback(tmp: Path, served: Served, *, timeout: float = TIMEOUT) -> Iterator[Case]:
    box = served.kit_box
    box.state.clear_faults()
    box.state.set_latency(0)
    store = Store(tmp / "store.db", clock=box.clock)
    box.add_default_seller(store, tmp / "seller.pem", base=served.url)
    settings = load_settings(
        store=tmp / "store.db", allow_http=True, base_url="http://127.0.0.1:3999", timeout=timeout
    )
    kit = FlowKit(box, store, settings, Flow(store, settings), tmp)
    case = Case(kit, settings, None, f"{served.url}/buyer")
    case.balances = _balances(kit)
    try:
        yield case
    finally:
        box.state.clear_faults()
        store.close()


def payments_of(case: Case) -> dict[str, int]:
    """Outgoing payments per pending grant of this case's store (the sandbox may be shared)."""
    ours = {p.id for p in case.kit.store.list_pending()}
    return {k: v for k, v in payments_by_pending(case.kit.sandbox.state).items() if k in ours}


def _balances(kit: FlowKit) -> tuple[int, int]:
    state = kit.sandbox.state
    return state.balance("buyer"), state.balance("seller")


async def run_flow(case: Case, flow: Flow) -> FlowError | None:
    """Start a quote, approve it as the buyer, finish it; the FlowError if one came."""
    try:
        pending = await flow.start_quote(
            offer_id="offer-fault", buyer_wallet=case.buyer, amount=AMOUNT
        )
        await flow.finish_url(case.kit.finish_url(pending.interact_redirect or ""))
    except FlowError as exc:
        return exc
    return None


async def warm_grant_cache(case: Case) -> None:
    """One quote started and cancelled, so the next one only POSTs the interactive grant."""
    async with case.flow() as flow:
        pending = await flow.start_quote(offer_id="warm-up", buyer_wallet=case.buyer, amount="1")
        await flow.cancel(pending.id)


async def replay_to_the_end(case: Case, pending_id: str) -> Pending:
    """What a person does next: replay, approving again when a new approval is asked for."""
    async with case.flow() as flow:
        for _ in range(6):
            pending = case.kit.store.get_pending(pending_id)
            assert pending is not None
            if pending.is_final:
                return pending
            if pending.state == State.AWAITING_APPROVAL:
                await flow.finish_url(case.kit.finish_url(pending.interact_redirect or ""))
                continue
            try:
                await flow.replay(pending_id)
            except FlowError as exc:
                assert exc.kind == "waiting", str(exc)
    final = case.kit.store.get_pending(pending_id)
    assert final is not None
    return final


def assert_clean_error(error: FlowError | None) -> FlowError:
    assert isinstance(error, FlowError), "the fault should have stopped the flow"
    text = str(error)
    assert "\n" not in text and "Traceback" not in text, text
    assert error.message and error.hint, text
    return error


def assert_consistent(case: Case, pending: Pending) -> None:
    """The row is a state the flow committed, with exactly that state's fields."""
    current = case.kit.store.get_pending(pending.id)
    assert current is not None
    pending = current
    events = case.kit.store.events(pending.id)
    moves = [e for e in events if e.to_state is not None]
    assert moves[0].to_state == State.STARTED
    for before, after in itertools.pairwise(moves):
        assert after.from_state == before.to_state, [(e.from_state, e.to_state) for e in moves]
    assert moves[-1].to_state == pending.state
    assert pending.lease_holder is None, "the lease must be released"
    if pending.state in ORDER:
        at = ORDER.index(pending.state)
        for name, since in FIELD_FROM.items():
            value = getattr(pending, name)
            if ORDER.index(since) <= at:
                assert value is not None, f"{pending.state} without {name}"
            else:
                assert value is None, f"{pending.state} already has {name}"


def assert_paid_once(case: Case, pending: Pending) -> None:
    assert pending.state == State.COMPLETED, pending.last_error
    assert payments_of(case) == {pending.id: 1}
    buyer, seller = _balances(case.kit)
    assert (case.balances[0] - buyer, seller - case.balances[1]) == (MINOR, MINOR)


async def fault_then_replay(case: Case, route: str, **spec: Any) -> tuple[FlowError, Pending]:
    """Run the flow into the fault; check the error and the row; replay to the end."""
    if route == "post-request (interactive)":
        await warm_grant_cache(case)
        case.balances = _balances(case.kit)
    case.fault(route, **spec)
    async with case.flow() as flow:
        error = assert_clean_error(await run_flow(case, flow))
    stopped = case.only_pending()
    assert_consistent(case, stopped)
    case.clear()
    final = await replay_to_the_end(case, stopped.id)
    assert_consistent(case, final)
    assert_paid_once(case, final)
    return error, stopped


async def into_paying(case: Case) -> Pending:
    """A grant left in ``paying`` with its payment made (the answer was lost)."""
    case.fault("create-outgoing-payment", drop="after_commit", times=1)
    async with case.flow() as flow:
        assert_clean_error(await run_flow(case, flow))
    pending = case.only_pending()
    assert pending.state == State.PAYING
    assert payments_of(case) == {pending.id: 1}
    return pending


# --------------------------------------------------------------------------- 500s


@pytest.mark.parametrize("route", GET_ROUTES)
async def test_a_500_once_on_a_get_is_retried_and_the_flow_completes(
    tmp_path: Path, route: str
) -> None:
    with in_process(tmp_path) as case:
        case.fault(route, status=500, times=1)
        async with case.flow() as flow:
            assert await run_flow(case, flow) is None
        assert case.attempts.retried(route)
        pending = case.only_pending()
        assert_consistent(case, pending)
        assert_paid_once(case, pending)


async def test_a_500_once_on_the_payment_search_is_retried(tmp_path: Path) -> None:
    with in_process(tmp_path) as case:
        stopped = await into_paying(case)
        case.fault("list-outgoing-payments", status=500, times=1)
        final = await replay_to_the_end(case, stopped.id)
        assert case.attempts.retried("list-outgoing-payments")
        assert "payment_found" in [e.kind for e in case.kit.store.events(stopped.id)]
        assert_paid_once(case, final)


@pytest.mark.parametrize("route", GET_ROUTES)
async def test_500s_on_every_try_of_a_get_then_replay_pays_once(tmp_path: Path, route: str) -> None:
    with in_process(tmp_path) as case:
        if route == "get-wallet-address":
            # Fetched before the grant's row exists: nothing is stored, the rerun pays.
            case.fault(route, status=500, times=GET_ATTEMPTS)
            async with case.flow() as flow:
                error = assert_clean_error(await run_flow(case, flow))
            assert "nothing was stored" in (error.hint or "")
            assert error.pending_id is None and not case.kit.store.list_pending()
            case.clear()
            async with case.flow() as flow:
                assert await run_flow(case, flow) is None
            assert_paid_once(case, case.only_pending())
        else:
            await fault_then_replay(case, route, status=500, times=GET_ATTEMPTS)
        assert len(case.attempts.of(route)) >= GET_ATTEMPTS


async def test_500s_on_every_try_of_the_payment_search(tmp_path: Path) -> None:
    with in_process(tmp_path) as case:
        stopped = await into_paying(case)
        case.fault("list-outgoing-payments", status=500, times=GET_ATTEMPTS)
        async with case.flow() as flow:
            with pytest.raises(FlowError) as err:
                await flow.replay(stopped.id)
        assert_clean_error(err.value)
        assert_consistent(case, case.kit.store.get_pending(stopped.id) or stopped)
        case.clear()
        assert_paid_once(case, await replay_to_the_end(case, stopped.id))


@pytest.mark.parametrize("route", POST_ROUTES)
async def test_a_500_on_a_post_is_not_retried_and_stops_cleanly(tmp_path: Path, route: str) -> None:
    with in_process(tmp_path) as case:
        if route == "post-request (interactive)":
            await warm_grant_cache(case)
        case.fault(route, status=500, times=1)
        async with case.flow() as flow:
            error = assert_clean_error(await run_flow(case, flow))
        operation = OPERATION.get(route, route)
        assert not case.attempts.retried(operation)
        assert [e.status for e in case.attempts.of(operation)].count(500) == 1
        assert "500" in error.message
        pending = case.only_pending()
        assert_consistent(case, pending)
        assert pending.last_error and "500" in pending.last_error
        assert payments_of(case) == {}


@pytest.mark.parametrize("route", POST_ROUTES)
async def test_after_a_500_on_a_post_replay_pays_once(tmp_path: Path, route: str) -> None:
    with in_process(tmp_path) as case:
        await fault_then_replay(case, route, status=500, times=1)


# --------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize("route", GET_ROUTES)
async def test_a_get_that_times_out_once_is_retried(
    tmp_path: Path, served: Served, route: str
) -> None:
    with on_loopback(tmp_path, served) as case:
        case.fault(route, delay=HANG, times=1)
        async with case.flow() as flow:
            assert await run_flow(case, flow) is None
        timed_out = [e for e in case.attempts.of(route) if e.status is None]
        assert len(timed_out) == 1 and "timed out" in (timed_out[0].error or "")
        assert_paid_once(case, case.only_pending())


@pytest.mark.parametrize("route", POST_ROUTES)
async def test_a_post_that_times_out_stops_cleanly_then_replay_pays_once(
    tmp_path: Path, served: Served, route: str
) -> None:
    with on_loopback(tmp_path, served) as case:
        error, stopped = await fault_then_replay(case, route, delay=HANG, times=1)
        assert error.kind == "transport" and "timed out" in error.message
        assert "pending replay" in (error.hint or "")
        assert stopped.last_error and "timed out" in stopped.last_error
        assert not case.attempts.retried(OPERATION.get(route, route))


# --------------------------------------------------------------------------- dropped connections


@pytest.mark.parametrize("mode", ["before_commit", "after_commit"])
@pytest.mark.parametrize("route", GET_ROUTES)
async def test_a_get_whose_connection_drops_once_is_retried(
    tmp_path: Path, served: Served, route: str, mode: str
) -> None:
    with on_loopback(tmp_path, served) as case:
        case.fault(route, drop=mode, times=1)
        async with case.flow() as flow:
            assert await run_flow(case, flow) is None
        assert case.attempts.retried(route)
        assert_paid_once(case, case.only_pending())


@pytest.mark.parametrize("mode", ["before_commit", "after_commit"])
@pytest.mark.parametrize("route", POST_ROUTES)
async def test_a_post_whose_connection_drops_stops_cleanly_then_replay_pays_once(
    tmp_path: Path, served: Served, route: str, mode: str
) -> None:
    with on_loopback(tmp_path, served) as case:
        error, stopped = await fault_then_replay(case, route, drop=mode, times=1)
        assert error.kind == "transport"
        assert stopped.last_error
        assert not case.attempts.retried(OPERATION.get(route, route))
        if route == "create-outgoing-payment":
            # The money-moves-once guard: the lost payment is found, not made again.
            assert stopped.state == State.PAYING
            found = [e.kind for e in case.kit.store.events(stopped.id)]
            assert ("payment_found" in found) == (mode == "after_commit")


async def test_the_payment_search_dropping_once_is_retried(tmp_path: Path, served: Served) -> None:
    with on_loopback(tmp_path, served) as case:
        stopped = await into_paying(case)
        case.fault("list-outgoing-payments", drop="before_commit", times=1)
        final = await replay_to_the_end(case, stopped.id)
        assert case.attempts.retried("list-outgoing-payments")
        assert_paid_once(case, final)


# --------------------------------------------------------------------------- slow answers


async def test_slow_answers_on_every_route_still_complete(tmp_path: Path, served: Served) -> None:
    with on_loopback(tmp_path, served, timeout=10.0) as case:
        case.kit.sandbox.state.set_latency(0.02)
        for route in (*GET_ROUTES, *POST_ROUTES):
            case.fault(route, delay=0.05)
        async with case.flow() as flow:
            assert await run_flow(case, flow) is None
        assert not any(e.attempt > 1 for e in case.attempts.seen)
        assert_paid_once(case, case.only_pending())


# --------------------------------------------------------------------------- cancel


@pytest.mark.parametrize(
    ("spec", "noted"),
    [
        ({"status": 500}, "500"),
        ({"drop": "before_commit"}, "unreachable"),
        ({"delay": HANG}, "timed out"),
    ],
    ids=["500", "drop", "timeout"],
)
async def test_cancel_still_cancels_when_the_wallet_fails(
    tmp_path: Path, served: Served, spec: dict[str, Any], noted: str
) -> None:
    with on_loopback(tmp_path, served) as case:
        async with case.flow() as flow:
            pending = await flow.start_quote(
                offer_id="offer-fault", buyer_wallet=case.buyer, amount=AMOUNT
            )
            case.fault("delete-continue", times=1, **spec)
            cancelled = await flow.cancel(pending.id)
        assert cancelled.state == State.CANCELLED
        (note,) = [e.data for e in case.kit.store.events(pending.id) if e.kind == "cancelled"]
        assert noted in note["grant"]
        assert_consistent(case, cancelled)


# --------------------------------------------------------------------------- expired token


async def _paying_with_an_expired_token(case: Case, mode: str = "kill_before") -> Pending:
    """A grant left ``paying`` by a death at its payment (``kill_before``: none was made;
    ``kill``: made, the answer lost), its access token since expired."""
    crashing = CrashingTransport(
        httpx.ASGITransport(app=case.kit.sandbox.asgi), case.kit.sandbox.state
    )
    dying = Flow(case.kit.store, case.settings, transport=crashing, clock=case.kit.sandbox.clock)
    pending = await dying.start_quote(
        offer_id="offer-fault", buyer_wallet=case.buyer, amount=AMOUNT
    )
    crashing.arm(STEP_BY_NAME["create outgoing payment"], mode)
    with pytest.raises(Killed):
        await dying.finish_url(case.kit.finish_url(pending.interact_redirect or ""))
    await dying.aclose()
    case.kit.store.release_lease(pending.id, dying.holder)  # the process died holding it
    case.kit.sandbox.clock.advance(case.kit.sandbox.state.config.token_lifetime + 60)
    stopped = case.only_pending()
    assert stopped.state == State.PAYING
    return stopped


async def test_replay_with_an_expired_token_rotates_it_and_pays_once(tmp_path: Path) -> None:
    with in_process(tmp_path) as case:
        stopped = await _paying_with_an_expired_token(case)
        async with case.flow() as flow:
            done = await flow.replay(stopped.id)
        assert "token_rotated" in [e.kind for e in case.kit.store.events(stopped.id)]
        assert_paid_once(case, done)


async def test_a_500_on_token_rotation_stops_cleanly(tmp_path: Path) -> None:
    with in_process(tmp_path) as case:
        stopped = await _paying_with_an_expired_token(case)
        case.fault("post-token", status=500, times=1)
        async with case.flow() as flow:
            with pytest.raises(FlowError) as err:
                await flow.replay(stopped.id)
        assert_clean_error(err.value)
        assert not case.attempts.retried("post-token")
        assert_consistent(case, case.only_pending())


async def test_a_token_lost_after_the_payment_left_does_not_ask_to_pay_again(
    tmp_path: Path,
) -> None:
    """The rotation's answer lost (a crash, a dropped connection): the old token is dead and
    the new one unknown, so the payment made before cannot be looked up. The hint told the
    operator to have the buyer approve a new grant (``quote start``), which pays again."""
    with in_process(tmp_path) as case:
        stopped = await _paying_with_an_expired_token(case, "kill")
        case.fault("post-token", drop="after_commit", times=1)
        async with case.flow() as flow:
            with pytest.raises(FlowError):
                await flow.replay(stopped.id)  # the rotation happened; its answer was lost
            with pytest.raises(FlowError) as err:
                await flow.replay(stopped.id)
        hint = assert_clean_error(err.value).hint or ""
        assert payments_of(case) == {stopped.id: 1}  # the buyer has paid
        assert "quote start" not in hint and "would pay again" in hint
        assert f"pending show {stopped.id}" in hint
        assert case.only_pending().state == State.PAYING


def test_the_routes_cover_every_request_the_flow_makes() -> None:
    """Keeps this file honest when the flow learns a new request (crash_support lists them)."""
    methods = Counter(step.method for step in STEPS)
    assert methods == {"GET": 4, "POST": 7}
    gets = {
        "wallet GET (buyer)",
        "wallet GET (seller)",
        "get outgoing payment",
        "get incoming payment",
    }
    assert {s.name for s in STEPS if s.method == "GET"} == gets
    assert {OPERATION.get(r, r) for r in POST_ROUTES} == {
        "post-request",
        "create-incoming-payment",
        "create-quote",
        "post-continue",
        "create-outgoing-payment",
    }
