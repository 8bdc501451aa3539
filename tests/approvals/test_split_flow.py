"""Split payments end to end on the in-process sandbox: one approval, one payment per seller,
exact balances on every account; a leg that fails for good, then a replay of only that leg;
single/split x same/other currency x with/without a fee."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from opapprove.approvals import split_flow
from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import LegState, State
from opapprove.approvals.replay import replay_many, select_for_replay
from opapprove.approvals.split import Payee
from opapprove.errors import REFUSED, USAGE, for_state
from opapprove.openpayments.rates import Rates
from opapprove.servers.sandbox import FeePolicy
from tests.approvals.conftest import FlowKit, make_split_kit
from tests.approvals.crash_support import CrashingTransport, Killed, Step

pytestmark = pytest.mark.anyio

RATE_TEXTS = ["EUR/USD=1.08"]


def minor(text: str) -> int:
    return int(Decimal(text) * 100)


async def start_split(kit: FlowKit, shares: dict[str, str], **flow_args: Any) -> Any:
    flow = kit.new_flow(**flow_args)
    pending = await flow.start_quote(
        offer_id="42",
        buyer_wallet=kit.sandbox.buyer,
        amount="",
        payees=[Payee(seller, share) for seller, share in shares.items()],
    )
    return flow, pending


@pytest.mark.parametrize(
    "shares",
    [
        {"seller-a": "60.00", "seller-b": "40.00"},
        {"s1": "1.01", "s2": "2.02", "s3": "3.03", "s4": "4.04", "s5": "0.01"},
    ],
    ids=["2-sellers", "5-sellers"],
)
async def test_one_approval_pays_every_seller_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shares: dict[str, str]
) -> None:
    kit = make_split_kit(tmp_path, monkeypatch, [f"{s}:USD:2:0" for s in shares])
    state = kit.sandbox.state
    buyer_before = state.balance("buyer")
    told: list[tuple[str, dict[str, Any]]] = []
    grants: list[dict[str, Any]] = []

    def saw(exchange: Any) -> None:
        if exchange.url.endswith("/auth") and b'"outgoing-payment"' in exchange.request_body:
            grants.append(json.loads(exchange.request_body))

    flow, pending = await start_split(
        kit, shares, on_event=lambda kind, p, data: told.append((kind, data)), on_exchange=saw
    )
    total = sum(minor(v) for v in shares.values())
    debit = {"value": str(total), "assetCode": "USD", "assetScale": 2}
    assert pending.state == State.AWAITING_APPROVAL and pending.leg_count == len(shares)
    assert pending.debit_amount == debit and pending.amount == f"{Decimal(total) / 100:.2f}"
    # One interactive grant for the sum, with no single receiver.
    ((access,),) = [g["access_token"]["access"] for g in grants]
    assert access["limits"] == {"debitAmount": debit}
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert done.state == State.COMPLETED
    assert state.balance("buyer") == buyer_before - total
    for seller, share in shares.items():
        assert state.balance(seller) == minor(share)
    payments = state.outgoing_payments()
    assert sorted(p.metadata["leg"] for p in payments) == list(range(1, len(shares) + 1))
    legs = kit.store.legs(pending.id)
    assert [(leg.seller_id, leg.state) for leg in legs] == [(s, LegState.COMPLETED) for s in shares]
    kinds = [e.kind for e in kit.store.events(pending.id)]
    assert kinds.count("leg_paying") == len(shares) and kinds.count("completed") == 1
    # A webhook per offer, the legs in its body.
    assert [kind for kind, _ in told] == ["approval.needed", "payment.completed"]
    assert [leg["state"] for leg in told[-1][1]["legs"]] == ["completed"] * len(shares)
    await flow.aclose()
    kit.sandbox.recorder.assert_clean()
    kit.store.close()


async def test_legs_still_unsent_after_the_reads_stay_payment_created_until_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like a single grant's unsent payment: the grant stays ``payment_created`` when the
    wallet has not sent its legs within the reads' budget, and ``status`` completes it later
    (it used to fall through to the single grant's check and fail on the split's lack of
    one payment URL)."""
    shares = {"seller-a": "6.00", "seller-b": "4.00"}
    kit = make_split_kit(tmp_path, monkeypatch, [f"{s}:USD:2:0" for s in shares], settle_delay=3600)
    sleep, slept = kit.clock_sleep()
    flow, pending = await start_split(kit, shares, sleep=sleep)
    waiting = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert waiting.state == State.PAYMENT_CREATED and slept
    assert [leg.state for leg in kit.store.legs(pending.id)] == [LegState.PAYMENT_CREATED] * 2
    made = len(kit.sandbox.state.outgoing_payments())
    assert made == 2
    # Every leg's payment is made: a cancel has nothing to give up on, and changes nothing.
    with pytest.raises(FlowError, match="every leg's payment was made") as refused:
        await kit.new_flow().cancel(pending.id)
    assert refused.value.exit_code == USAGE
    assert kit.store.get_pending(pending.id).state == State.PAYMENT_CREATED  # type: ignore[union-attr]
    kit.sandbox.clock.advance(3600)
    done = await kit.new_flow(sleep=sleep).refresh(pending.id)
    assert done.state == State.COMPLETED
    assert [kit.sandbox.state.balance(s) for s in shares] == [600, 400]
    assert len(kit.sandbox.state.outgoing_payments()) == made  # read again, never paid again
    await flow.aclose()
    kit.store.close()


async def test_a_leg_requoted_dearer_than_approved_fails_and_replay_moves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leg whose quote expired and whose new quote debits more than the buyer approved for
    it fails (as a single grant does), so a replay goes on to the next leg instead of asking
    the wallet for the same refused quote again; nothing is ever paid over the approval."""
    shares = {"seller-a": "6.00", "seller-b": "4.00"}
    kit = make_split_kit(tmp_path, monkeypatch, [f"{s}:USD:2:0" for s in shares])
    flow, pending = await start_split(kit, shares)
    url = kit.finish_url(pending.interact_redirect or "")
    kit.sandbox.clock.advance(301)  # quotes live 300 s, approvals 600 s
    kit.sandbox.state.config.fee = FeePolicy(fixed=Decimal("0.05"))
    with pytest.raises(FlowError, match=r"leg 1 .*more than"):
        await flow.finish_url(url)
    assert [leg.state for leg in kit.store.legs(pending.id)] == [
        LegState.FAILED,
        LegState.QUOTE_CREATED,
    ]
    with pytest.raises(FlowError, match=r"leg 2 .*more than"):
        await kit.new_flow().replay(pending.id)
    ended = await kit.new_flow().replay(pending.id)
    assert ended.state == State.FAILED  # no leg paid
    assert [leg.state for leg in kit.store.legs(pending.id)] == [LegState.FAILED] * 2
    assert kit.sandbox.state.outgoing_payments() == []
    await flow.aclose()
    kit.store.close()


# (wallets, fee, debit of each leg in the buyer's asset): 12.34 USD to one seller, or
# 7.34 + 5.00 USD to two; each leg's debit rounds up on its own and pays its own fixed fee.
CASES = {
    "single-usd": ([], None, ["1234"]),
    "single-usd-fee": ([], "1%+0.10", ["1257"]),
    "single-eur": (["buyer:EUR:2:1000.00"], None, ["1143"]),
    "single-eur-fee": (["buyer:EUR:2:1000.00"], "1%+0.10", ["1165"]),
    "split-usd": ([], None, ["734", "500"]),
    "split-usd-fee": ([], "1%+0.10", ["752", "515"]),
    "split-eur": (["buyer:EUR:2:1000.00"], None, ["680", "463"]),
    "split-eur-fee": (["buyer:EUR:2:1000.00"], "1%+0.10", ["697", "478"]),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_every_combination_pays_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    wallets, fee, debits = CASES[case]
    monkeypatch.setenv("OPAPPROVE_REFERENCE_RATES", json.dumps(RATE_TEXTS))
    shares = {"seller": "12.34"} if len(debits) == 1 else {"seller-a": "7.34", "seller-b": "5.00"}
    kit = make_split_kit(
        tmp_path,
        monkeypatch,
        [f"{s}:USD:2:0" for s in shares if s != "seller"],
        wallets=wallets,
        rates=Rates.parse(RATE_TEXTS),
        fee=FeePolicy.parse(fee) if fee else FeePolicy(),
    )
    state = kit.sandbox.state
    asset = "EUR" if wallets else "USD"
    buyer_before = state.balance("buyer")
    if len(debits) == 1:
        flow = kit.flow
        pending = await flow.start_quote(
            offer_id="42", buyer_wallet=kit.sandbox.buyer, amount="12.34"
        )
    else:
        flow, pending = await start_split(kit, shares)
    total = sum(int(d) for d in debits)
    assert pending.debit_amount == {"value": str(total), "assetCode": asset, "assetScale": 2}
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert done.state == State.COMPLETED
    assert state.balance("buyer") == buyer_before - total
    for seller, share in shares.items():
        assert state.balance(seller) == minor(share)
    sent = sorted(p.debit for p in state.outgoing_payments())
    assert sent == sorted(int(d) for d in debits)
    legs = kit.store.legs(pending.id)
    assert [leg.debit_amount["value"] for leg in legs] == (debits if len(debits) > 1 else [])
    await flow.aclose()
    kit.sandbox.recorder.assert_clean()
    kit.store.close()


@pytest.mark.parametrize(
    ("how", "then"), [("refused", "replay"), ("failed", "replay"), ("failed", "cancel")]
)
async def test_a_leg_that_fails_for_good_then_replay_pays_it_or_cancel_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, then: str
) -> None:
    shares = {"seller-a": "3.00", "seller-b": "2.00", "seller-c": "1.00"}
    kit = make_split_kit(tmp_path, monkeypatch, [f"{s}:USD:2:0" for s in shares])
    # With a webhook URL each announced transition writes its delivery (the outbox).
    kit.settings = kit.settings.model_copy(update={"webhook_url": "http://127.0.0.1:9/hook"})
    state = kit.sandbox.state
    buyer_before = state.balance("buyer")
    told: list[tuple[str, dict[str, Any]]] = []
    flow, pending = await start_split(
        kit, shares, on_event=lambda kind, p, data: told.append((kind, data))
    )
    if how == "refused":  # the wallet refuses the first leg's payment (a 4xx)
        state.set_fault("POST /op/outgoing-payments", status=400, times=1)
    else:  # the wallet makes it, then gives up on it (failed: true)
        state.fail_next_payments(1)
    ended = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert ended.state == State.PARTIALLY_PAID and for_state(str(ended.state)) == REFUSED
    assert ended.last_error and ended.last_error.startswith("leg 1 (seller-a): ")
    assert [leg.state for leg in kit.store.legs(pending.id)] == [
        LegState.FAILED,
        LegState.COMPLETED,
        LegState.COMPLETED,
    ]
    assert [state.balance(s) for s in shares] == [0, 200, 100]
    assert state.balance("buyer") == buyer_before - 300
    failed = told[-1]
    assert failed[0] == "payment.failed" and failed[1]["reason"] == "partially_paid"
    assert [leg["state"] for leg in failed[1]["legs"]] == ["failed", "completed", "completed"]
    # The failed leg's incoming payment stays open: the replay pays into it.
    first = kit.store.get_leg(pending.id, 1)
    assert first is not None
    url = first.incoming_payment_url or ""
    (open_one,) = [p for p in state.incoming_payments() if url.endswith(p.id)]
    assert not open_one.completed

    made = len(state.outgoing_payments())
    if then == "cancel":
        await _cancel_gives_up_on_the_failed_leg(kit, pending.id, open_one.id, made)
        return
    done = await kit.new_flow().replay(pending.id)
    assert done.state == State.COMPLETED and done.last_error is None
    assert [state.balance(s) for s in shares] == [300, 200, 100]
    assert state.balance("buyer") == buyer_before - 600
    assert len(state.outgoing_payments()) == made + 1  # only the failed leg was paid again
    retried = [e for e in kit.store.events(pending.id) if e.kind == "retrying_legs"]
    assert [e.data["legs"] for e in retried] == [[1]]
    # One webhook per offer and event, each seller's leg in its body.
    bodies = [json.loads(d.body) for d in kit.store.webhook_deliveries(pending_id=pending.id)]
    assert [(b["type"], b["status"]) for b in bodies] == [
        ("approval.needed", "awaiting_approval"),
        ("payment.failed", "partially_paid"),
        ("payment.completed", "paid"),
    ]
    states = [[leg["state"] for leg in b["legs"]] for b in bodies]
    assert states == [
        ["quote_created"] * 3,
        ["failed", "completed", "completed"],
        ["completed"] * 3,
    ]
    await flow.aclose()
    kit.sandbox.recorder.assert_clean()
    kit.store.close()


async def _cancel_gives_up_on_the_failed_leg(
    kit: FlowKit, pending_id: str, incoming_id: str, made: int
) -> None:
    """`pending cancel` of a partially paid grant: the failed leg ends cancelled and its
    incoming payment is closed; the paid legs, every balance and a later replay pay nothing."""
    state = kit.sandbox.state
    balances = {name: state.balance(name) for name in ("buyer", "seller-a", "seller-b", "seller-c")}
    others = [(p.id, p.received, p.completed) for p in state.incoming_payments()]
    paid_before = [o for o in others if o[0] != incoming_id]
    cancelled = await kit.new_flow().cancel(pending_id)
    assert cancelled.state == State.CANCELLED
    legs = kit.store.legs(pending_id)
    assert [leg.state for leg in legs] == [
        LegState.CANCELLED,
        LegState.COMPLETED,
        LegState.COMPLETED,
    ]
    (closed,) = [p for p in state.incoming_payments() if p.id == incoming_id]
    assert closed.completed
    now = [(p.id, p.received, p.completed) for p in state.incoming_payments()]
    assert [o for o in now if o[0] != incoming_id] == paid_before
    kinds = [e.kind for e in kit.store.events(pending_id)]
    assert kinds.count("leg_cancelled") == 1 and kinds.count("incoming_payment_closed") == 1
    again = await kit.new_flow().cancel(pending_id)  # the CLI says "already cancelled"
    assert again.state == State.CANCELLED
    replayed = await kit.new_flow().replay(pending_id)
    assert replayed.state == State.CANCELLED
    assert len(state.outgoing_payments()) == made
    assert {name: state.balance(name) for name in balances} == balances
    kit.store.close()


async def test_sellers_in_different_assets_each_get_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """seller-a holds USD (scale 2), seller-b JPY (scale 0), the buyer EUR: each leg is
    quoted and paid in its seller's asset; the grant's summed receive amount is none."""
    rates = ["EUR/USD=1.08", "EUR/JPY=160"]
    monkeypatch.setenv("OPAPPROVE_REFERENCE_RATES", json.dumps(rates))
    kit = make_split_kit(
        tmp_path,
        monkeypatch,
        ["seller-a:USD:2:0", "seller-b:JPY:0:0"],
        wallets=["buyer:EUR:2:1000.00"],
        rates=Rates.parse(rates),
    )
    state = kit.sandbox.state
    buyer_before = state.balance("buyer")
    flow, pending = await start_split(kit, {"seller-a": "7.34", "seller-b": "500"})
    # 7.34 USD / 1.08 = 6.7963 EUR and 500 JPY / 160 = 3.125 EUR, each rounded up.
    assert pending.debit_amount == {"value": "993", "assetCode": "EUR", "assetScale": 2}
    assert pending.receive_amount is None
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert done.state == State.COMPLETED
    assert state.balance("buyer") == buyer_before - 993
    assert (state.balance("seller-a"), state.balance("seller-b")) == (734, 500)
    assert sorted(p.debit for p in state.outgoing_payments()) == [313, 680]
    assert done.amount == "7.34 USD + 500 JPY"  # a sum across assets would mean nothing
    legs = [leg.to_json() for leg in kit.store.legs(done.id)]  # `legs` of `status --json`
    assert [leg["receiveAmount"] for leg in legs] == [
        {"value": "734", "assetCode": "USD", "assetScale": 2},
        {"value": "500", "assetCode": "JPY", "assetScale": 0},
    ]
    assert [leg["sentAmount"]["assetCode"] for leg in legs] == ["EUR", "EUR"]
    await flow.aclose()
    kit.sandbox.recorder.assert_clean()
    kit.store.close()


async def _partially_paid(kit: FlowKit, shares: dict[str, str], told: list[str]) -> Any:
    """A split whose first leg the wallet refused (a 4xx), the others paid: partially paid,
    the marketplace told once."""
    kit.settings = kit.settings.model_copy(update={"webhook_url": "http://127.0.0.1:9/hook"})
    flow, pending = await start_split(
        kit, shares, on_event=lambda kind, p, data: told.append(f"{kind} {data.get('reason')}")
    )
    kit.sandbox.state.set_fault("POST /op/outgoing-payments", status=400, times=1)
    ended = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert ended.state == State.PARTIALLY_PAID
    await flow.aclose()
    return ended


async def test_a_replay_whose_new_quote_is_over_the_approval_tells_nobody_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partially paid grant's replay quotes its failed leg again; a quote dearer than the
    buyer approved changes nothing (the grant stays partially paid, its leg failed), so the
    marketplace is not told again, and no second ``partially_paid`` is logged. It used to
    move the grant to ``paying`` first, then end it partially paid a second time."""
    shares = {"seller-a": "6.00", "seller-b": "4.00"}
    kit = make_split_kit(tmp_path, monkeypatch, [f"{s}:USD:2:0" for s in shares])
    told: list[str] = []
    pending = await _partially_paid(kit, shares, told)
    assert told == ["approval.needed None", "payment.failed partially_paid"]
    kit.sandbox.state.config.fee = FeePolicy(fixed=Decimal("0.05"))
    for _ in range(2):  # every such replay alike
        flow = kit.new_flow(on_event=lambda kind, p, data: told.append(kind))
        with pytest.raises(FlowError, match=r"leg 1 .*more than the 6.00 USD approved"):
            await flow.replay(pending.id)
        await flow.aclose()
    assert told == ["approval.needed None", "payment.failed partially_paid"]
    now = kit.store.get_pending(pending.id)
    assert now is not None and now.state == State.PARTIALLY_PAID
    assert [leg.state for leg in kit.store.legs(pending.id)] == [
        LegState.FAILED,
        LegState.COMPLETED,
    ]
    kinds = [e.kind for e in kit.store.events(pending.id)]
    assert kinds.count("partially_paid") == 1 and "retrying_legs" not in kinds
    deliveries = kit.store.webhook_deliveries(pending_id=pending.id)
    assert [d.event_type for d in deliveries] == ["approval.needed", "payment.failed"]
    # Once the wallet quotes within the approval again, a replay pays that leg, once. A
    # bulk replay leaves a partially paid grant (it ended) unless its state is named.
    kit.sandbox.state.config.fee = FeePolicy()
    assert select_for_replay(kit.store) == []
    chosen = select_for_replay(kit.store, states=[State.PARTIALLY_PAID, State.COMPLETED])
    (outcome,) = await replay_many(kit.new_flow, chosen)
    assert (outcome.pending_id, outcome.outcome) == (pending.id, "completed")
    assert [kit.sandbox.state.balance(s) for s in shares] == [600, 400]
    assert len(kit.sandbox.state.outgoing_payments()) == 2
    kit.store.close()


async def test_each_step_reads_the_legs_once_and_logs_one_quote_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set-up reads a split's legs once, and logs its legs' quote check in one
    ``quote_checked`` event written with the grant's next update (as a single grant's);
    paying, checking and ending (the webhook's delivery and on_event alike) read them once."""
    shares = {"seller-a": "6.00", "seller-b": "4.00"}
    kit = make_split_kit(tmp_path, monkeypatch, [f"{s}:USD:2:0" for s in shares])
    kit.settings = kit.settings.model_copy(update={"webhook_url": "http://127.0.0.1:9/hook"})
    reads: list[str] = []
    legs = kit.store.legs

    def counted(pending_id: str) -> Any:
        reads.append(pending_id)
        return legs(pending_id)

    monkeypatch.setattr(kit.store, "legs", counted)
    told: list[dict[str, Any]] = []
    flow, pending = await start_split(kit, shares, on_event=lambda kind, p, data: told.append(data))
    # The set-up's own read, then one for approval.needed (its delivery and on_event).
    assert len(reads) == 2
    (checked,) = [e for e in kit.store.events(pending.id) if e.kind == "quote_checked"]
    assert [leg["leg"] for leg in checked.data["legs"]] == [1, 2]
    assert checked.data["legs"][0]["debitAmount"]["value"] == "600"
    reads.clear()
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert done.state == State.COMPLETED
    assert len(reads) == 1
    assert [leg["state"] for leg in told[-1]["legs"]] == ["completed", "completed"]
    (delivery,) = [
        d
        for d in kit.store.webhook_deliveries(pending_id=pending.id)
        if d.event_type == "payment.completed"
    ]
    assert [leg["state"] for leg in json.loads(delivery.body)["legs"]] == ["completed"] * 2
    await flow.aclose()
    kit.store.close()


@pytest.mark.parametrize("first", ["made", "unsent", "interrupted"])
async def test_cancel_while_paying_gives_up_on_the_unsent_legs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """`pending cancel` of a split whose run stopped while paying: a leg whose payment the
    wallet made (found by its quote) is paid and stays paid; the legs not sent are
    cancelled and their incoming payments closed; the grant ends cancelled, the marketplace
    told once, and a replay or a second cancel pays nothing. A cancel that stopped right
    after committing its intent is finished by the replay, which pays no leg."""
    shares = {"seller-a": "3.00", "seller-b": "2.00", "seller-c": "1.00"}
    kit = make_split_kit(tmp_path, monkeypatch, [f"{s}:USD:2:0" for s in shares])
    kit.settings = kit.settings.model_copy(update={"webhook_url": "http://127.0.0.1:9/hook"})
    state = kit.sandbox.state
    buyer_before = state.balance("buyer")
    told: list[dict[str, Any]] = []
    flow, pending = await start_split(kit, shares)
    # The first leg's payment: made, then the answer lost; or refused with a 5xx (not made).
    fault = {"drop": "after_commit"} if first == "made" else {"status": 500}
    state.set_fault("POST /op/outgoing-payments", times=1, **fault)
    with pytest.raises(FlowError, match=r"could not finish the payment|failed while creating"):
        await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    await flow.aclose()
    assert kit.store.get_pending(pending.id).state == State.PAYING  # type: ignore[union-attr]
    legs = [leg.state for leg in kit.store.legs(pending.id)]
    assert legs == [LegState.PAYING, LegState.QUOTE_CREATED, LegState.QUOTE_CREATED]
    flow = kit.new_flow(on_event=lambda kind, p, data: told.append({"kind": kind, **data}))
    if first == "interrupted":  # the cancel's first commit, then it died
        kit.store.transition(
            pending.id, State.PAYMENT_CREATED, expect=State.PAYING, event="cancel_requested"
        )
        ended = await flow.replay(pending.id)
    else:
        ended = await flow.cancel(pending.id)
    await flow.aclose()
    assert ended.state == State.CANCELLED
    paid = first == "made"
    assert [leg.state for leg in kit.store.legs(pending.id)] == [
        LegState.COMPLETED if paid else LegState.CANCELLED,
        LegState.CANCELLED,
        LegState.CANCELLED,
    ]
    assert [state.balance(s) for s in shares] == [300 if paid else 0, 0, 0]
    assert state.balance("buyer") == buyer_before - (300 if paid else 0)
    assert len(state.outgoing_payments()) == (1 if paid else 0)
    assert all(p.completed for p in state.incoming_payments())  # paid, or closed by us
    events = kit.store.events(pending.id)
    closed = [e.data["leg"] for e in events if e.kind == "incoming_payment_closed"]
    assert closed == ([2, 3] if paid else [1, 2, 3])
    ((notice,),) = [[t for t in told if t["kind"] == "payment.failed"]]
    assert notice["reason"] == "cancelled"
    assert [leg["state"] for leg in notice["legs"]] == [
        str(leg.state) for leg in kit.store.legs(pending.id)
    ]
    again = await kit.new_flow().cancel(pending.id)
    assert again.state == State.CANCELLED
    assert (await kit.new_flow().replay(pending.id)).state == State.CANCELLED
    assert len(state.outgoing_payments()) == (1 if paid else 0)
    kit.sandbox.recorder.assert_clean()
    kit.store.close()


async def test_cancel_while_a_made_payment_is_still_being_sent_ends_once_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel finds the first leg's payment made (its answer was lost) but not yet sent:
    the other legs are cancelled at once, the grant waits in ``payment_created`` (a made
    payment cannot be stopped), and ``status`` ends it cancelled once the wallet sent it."""
    shares = {"seller-a": "3.00", "seller-b": "2.00"}
    kit = make_split_kit(tmp_path, monkeypatch, [f"{s}:USD:2:0" for s in shares], settle_delay=3600)
    sleep, slept = kit.clock_sleep()
    flow, pending = await start_split(kit, shares)
    kit.sandbox.state.set_fault("POST /op/outgoing-payments", drop="after_commit", times=1)
    with pytest.raises(FlowError, match="could not finish the payment"):
        await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    await flow.aclose()
    waiting = await kit.new_flow(sleep=sleep).cancel(pending.id)
    assert waiting.state == State.PAYMENT_CREATED and slept
    assert [leg.state for leg in kit.store.legs(pending.id)] == [
        LegState.PAYMENT_CREATED,
        LegState.CANCELLED,
    ]
    kit.sandbox.clock.advance(3600)
    done = await kit.new_flow(sleep=sleep).refresh(pending.id)
    assert done.state == State.CANCELLED
    assert [leg.state for leg in kit.store.legs(pending.id)] == [
        LegState.COMPLETED,
        LegState.CANCELLED,
    ]
    assert [kit.sandbox.state.balance(s) for s in shares] == [300, 0]
    assert len(kit.sandbox.state.outgoing_payments()) == 1
    kit.store.close()


@pytest.mark.parametrize("stopped", ["paying", "partially_paid"])
async def test_a_cancel_that_stopped_is_finished_by_replay_failed_legs_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped: str
) -> None:
    """`pending cancel` of a split with a failed leg dies right after committing its intent;
    the replay finishes the cancel: the failed leg is given up on like the unsent ones, never
    paid (before, it was left failed, and the grant partially paid, for a replay to pay)."""
    shares = {"seller-a": "3.00", "seller-b": "2.00", "seller-c": "1.00"}
    kit = make_split_kit(tmp_path, monkeypatch, [f"{s}:USD:2:0" for s in shares])
    state = kit.sandbox.state
    flow, pending = await start_split(kit, shares)
    # The wallet refuses leg 1's payment for good (a 4xx): the leg fails, the others go on.
    state.set_fault("POST /op/outgoing-payments", status=400, times=1)
    if stopped == "paying":  # leg 2's answer is a 5xx: the run stops while paying
        state.set_fault("create-outgoing-payment", status=500, times=1)
    with contextlib.suppress(FlowError):
        await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    await flow.aclose()
    paid = [LegState.COMPLETED] * 2 if stopped == "partially_paid" else []
    assert [leg.state for leg in kit.store.legs(pending.id)][:1] == [LegState.FAILED]
    # The cancel dies right after committing its intent: before giving up on any leg
    # (paying), or before cancelling the grant at the wallet (partially paid).
    crashing = CrashingTransport(httpx.ASGITransport(app=kit.sandbox.asgi), state)
    crashing.arm(Step("cancel grant", "DELETE", r"/auth/continue/[^/]+"), "kill_before")
    dying = Flow(kit.store, kit.settings, transport=crashing, clock=kit.sandbox.clock)
    with monkeypatch.context() as patch, pytest.raises(Killed):
        if stopped == "paying":

            async def die(*args: Any) -> None:
                raise Killed("killed before giving up on a leg")

            patch.setattr(split_flow, "_give_up", die)
        await dying.cancel(pending.id)
    await dying.aclose()
    made = len(state.outgoing_payments())
    replayer = kit.new_flow()
    ended = await replayer.replay(pending.id)
    assert ended.state == State.CANCELLED
    assert [leg.state for leg in kit.store.legs(pending.id)] == [
        LegState.CANCELLED,
        *(paid or [LegState.CANCELLED] * 2),
    ]
    assert (await replayer.replay(pending.id)).state == State.CANCELLED
    await replayer.aclose()
    assert len(state.outgoing_payments()) == made  # the failed leg was never paid again
    kit.sandbox.recorder.assert_clean()
    kit.store.close()


async def test_a_split_renews_a_stale_cached_buyer_document_as_one_seller_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sandbox restarted with the buyer in another asset, within WALLET_DOC_TTL: each
    leg's quote is the wallet's own, and the stale cached document, not the wallet, gives
    way (event buyer_wallet_renewed), as for a single seller (7a7fcc4)."""
    shares = {"seller-a": "3.00", "seller-b": "2.00"}
    kit = make_split_kit(tmp_path, monkeypatch, [f"{s}:USD:2:0" for s in shares])
    buyer = kit.sandbox.buyer
    first, _ = await start_split(kit, shares)
    await first.aclose()
    flow = kit.new_flow()  # a new process: the store's cache, not the first one's memory
    stale = kit.store.get_wallet_document(buyer, max_age=300, now=flow.clock())
    assert stale["assetCode"] == "USD"
    kit.store.put_wallet_document(buyer, {**stale, "assetCode": "EUR"}, now=flow.clock())
    pending = await flow.start_quote(
        offer_id="43",
        buyer_wallet=buyer,
        amount="",
        payees=[Payee(seller, share) for seller, share in shares.items()],
    )
    assert pending.state == State.AWAITING_APPROVAL
    assert pending.buyer_doc is not None and pending.buyer_doc["assetCode"] == "USD"
    kinds = [e.kind for e in kit.store.events(pending.id)]
    assert "buyer_wallet_renewed" in kinds and "quote_refused" not in kinds
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert done.state == State.COMPLETED
    assert len(kit.sandbox.state.outgoing_payments()) == len(shares)
    await flow.aclose()
    kit.sandbox.recorder.assert_clean()
    kit.store.close()
