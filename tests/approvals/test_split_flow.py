"""Split payments end to end on the in-process sandbox: one approval, one payment per seller,
exact balances on every account; a leg that fails for good, then a replay of only that leg;
single/split x same/other currency x with/without a fee."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.records import LegState
from opapprove.approvals.split import Payee
from opapprove.approvals.store import State
from opapprove.errors import REFUSED, for_state
from opapprove.openpayments.rates import Rates
from opapprove.servers.sandbox import FeePolicy
from tests.approvals.conftest import FlowKit, make_split_kit

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
