"""The quote check (approvals/quote_check.py): exact receive, the caps, the expiry.

Pure rules first, then the flow against the sandbox with real fees and rates: a refused
quote asks nothing of the buyer (no interactive grant), cancels the grant, closes the
incoming payment and moves no money.
"""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opapprove.approvals import quote_check
from opapprove.approvals.errors import FlowError
from opapprove.approvals.records import State
from opapprove.openpayments.money import Amount
from opapprove.openpayments.rates import Rates
from opapprove.servers.sandbox import FeePolicy
from opapprove.servers.sandbox.accounts import with_wallets
from opapprove.servers.sandbox.config import default_accounts
from opapprove.servers.sandbox.fx import Asset, debit_for
from tests.approvals.conftest import FlowKit, make_kit

RATES = Rates.parse(["EUR/USD=1.08"])
USD_BUYER = {"assetCode": "USD", "assetScale": 2}
EUR_BUYER = {"assetCode": "EUR", "assetScale": 2}


def wire(value: int, code: str = "USD", scale: int = 2) -> dict[str, Any]:
    return {"value": str(value), "assetCode": code, "assetScale": scale}


def policy(**changes: Any) -> quote_check.QuotePolicy:
    base: dict[str, Any] = {"max_fee_percent": Decimal(5), "min_seconds": 30.0, "rates": RATES}
    return quote_check.QuotePolicy(**(base | changes))


def check(debit: dict[str, Any], receive: dict[str, Any], **kw: Any) -> quote_check.QuoteTerms:
    quote = {
        "debitAmount": debit,
        "receiveAmount": receive,
        "createdAt": kw.pop("created", None),
        "expiresAt": kw.pop("expires", None),
    }
    return quote_check.check_quote(
        quote,
        offer=kw.pop("offer", Amount(1000, "USD", 2)),
        buyer_doc=kw.pop("buyer", USD_BUYER),
        policy=kw.pop("policy", policy()),
        now=kw.pop("now", 0.0),
    )


def refused(*args: Any, **kw: Any) -> str:
    with pytest.raises(FlowError) as err:
        check(*args, **kw)
    assert err.value.kind == "quote_refused" and err.value.exit_code == 6
    # One line: what, the terms, and what to change in the hint.
    assert "\n" not in str(err.value) and err.value.hint
    return str(err.value)


def test_terms_of_a_same_currency_quote_with_a_fee() -> None:
    t = quote_check.terms(wire(1051), wire(1000), RATES)
    assert t.fee == Fraction(51, 100) and t.fee_percent == Fraction(51, 10)
    assert t.line() == (
        "debit 10.51 USD, receive 10.00 USD, rate 1 USD = 0.951475 USD, fee 0.51 USD (5.10%)"
    )
    assert t.to_json() == {
        "debitAmount": wire(1051),
        "receiveAmount": wire(1000),
        "rate": "0.951475",
        "rateText": "1 USD = 0.951475 USD",
        "referenceRate": "1",
        "fee": "0.51",
        "feeAssetCode": "USD",
        "feePercent": "5.10",
    }


def test_terms_across_currencies_value_the_fee_at_the_reference_rate() -> None:
    # 10.00 USD is worth 9.259259... EUR at 1.08; a debit of 9.50 EUR holds a 0.24 EUR fee.
    t = quote_check.terms(wire(950, "EUR"), wire(1000), RATES)
    assert t.rate == Fraction(1000, 950)
    assert t.fee_text == "0.24 EUR (2.60%)"
    unknown = quote_check.terms(wire(950, "EUR"), wire(1000), Rates())
    assert unknown.fee is None and unknown.fee_text == "unknown (no reference rate EUR/USD)"


def test_a_quote_within_every_cap_passes() -> None:
    assert check(wire(1050), wire(1000)).fee_percent == 5
    assert check(wire(950, "EUR"), wire(1000), buyer=EUR_BUYER).fee_percent is not None
    cap = policy(max_debit="9.50", rates=Rates())
    assert check(wire(950, "EUR"), wire(1000), buyer=EUR_BUYER, policy=cap).fee is None


@pytest.mark.parametrize(
    "receive",
    [wire(999), wire(1001), wire(1000, "EUR"), wire(10000, "USD", 3)],
    ids=["less", "more", "other-asset", "other-scale"],
)
def test_receive_must_be_the_offer_exactly(receive: dict[str, Any]) -> None:
    line = refused(wire(1000), receive)
    assert "not the offer's 10.00 USD" in line


def test_the_fee_cap() -> None:
    line = refused(wire(1051), wire(1000))
    assert "over max_fee_percent 5%" in line and "fee 0.51 USD (5.10%)" in line
    assert "raise max_fee_percent in the config to 5.10" in line
    assert check(wire(1051), wire(1000), policy=policy(max_fee_percent=Decimal("5.1")))


def test_the_max_debit_cap_holds_with_the_fee_cap() -> None:
    line = refused(wire(1010), wire(1000), policy=policy(max_debit="10.05"))
    assert "over --max-debit 10.05 USD" in line and "--max-debit 10.10" in line
    assert check(wire(1010), wire(1000), policy=policy(max_debit="10.10"))
    # Both caps apply: a generous --max-debit does not lift max_fee_percent.
    assert "max_fee_percent" in refused(wire(1100), wire(1000), policy=policy(max_debit="20"))


def test_a_cross_currency_quote_needs_a_reference_rate_or_a_max_debit() -> None:
    line = refused(wire(950, "EUR"), wire(1000), buyer=EUR_BUYER, policy=policy(rates=Rates()))
    assert "without a reference rate for EUR/USD" in line
    assert "--max-debit 9.50" in line and 'reference_rates = ["EUR/USD=RATE"]' in line


def test_the_debit_must_be_in_the_buyers_asset() -> None:
    assert "buyer's wallet holds USD/2" in refused(wire(950, "EUR"), wire(1000))


def test_a_quote_valid_too_briefly() -> None:
    line = refused(wire(1000), wire(1000), expires="1970-01-01T00:00:20Z")
    assert "valid for 20 s, less than min_quote_seconds 30" in line
    assert check(wire(1000), wire(1000), expires="1970-01-01T00:00:30Z")
    # Measured on the wallet's clock: a wallet an hour behind ours still passes.
    quoted = {"created": "2026-01-01T10:00:00Z", "expires": "2026-01-01T10:05:00Z"}
    assert check(wire(1000), wire(1000), now=1767265200.0 + 3600, **quoted)
    short = {"created": "2026-01-01T10:00:00Z", "expires": "2026-01-01T10:00:10.5Z"}
    assert "valid for 10 s" in refused(wire(1000), wire(1000), **short)


# ------------------------------------------------------------------ against the sandbox


def kit_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *wallets: str, **sandbox: Any
) -> FlowKit:
    return make_kit(
        tmp_path,
        monkeypatch,
        accounts=with_wallets(default_accounts(), wallets),
        rates=Rates.parse(["EUR/USD=1.08", "USD/JPY=150"]),
        **sandbox,
    )


def assert_refused_cleanly(kit: FlowKit, err: FlowError, balances: tuple[int, int]) -> None:
    assert err.kind == "quote_refused" and err.pending_id
    pending = kit.store.get_pending(err.pending_id)
    assert pending is not None and pending.state == State.CANCELLED
    assert pending.interact_redirect is None and pending.last_error == err.message
    # Nothing was asked of the buyer: no interactive grant reached the wallet.
    assert not [g for g in kit.sandbox.state.grants.values() if g.interact_id is not None]
    (incoming,) = kit.sandbox.state.incoming_payments()
    assert incoming.completed  # closed, so nobody can pay into it
    assert kit.sandbox.state.outgoing_payments() == []
    state = kit.sandbox.state
    assert (state.balance("buyer"), state.balance("seller")) == balances
    kinds = [e.kind for e in kit.store.events(err.pending_id)]
    assert kinds[-2:] == ["quote_refused", "incoming_payment_closed"]


async def approve_and_check(kit: FlowKit, pending: Any, *, debit: int, receive: int) -> None:
    done = await kit.flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert done.state == State.COMPLETED
    assert kit.sandbox.state.balance("buyer") == 100_000 - debit
    assert kit.sandbox.state.balance("seller") == receive
    await kit.flow.aclose()


@pytest.mark.anyio
async def test_a_wallet_fee_over_the_cap_is_refused_before_the_buyer_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = kit_with(tmp_path, monkeypatch, fee=FeePolicy(500, Decimal("0.10")))
    events: list[tuple[str, str]] = []
    flow = kit.new_flow(on_event=lambda kind, p, data: events.append((kind, data.get("reason"))))
    with pytest.raises(FlowError) as err:
        await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="10.00")
    assert "debit 10.60 USD, receive 10.00 USD" in err.value.message
    assert "fee 0.60 USD (6.00%)" in err.value.message
    assert_refused_cleanly(kit, err.value, (100_000, 0))
    assert events == [("payment.failed", "quote_refused")]
    # The replay of a cancelled grant does nothing more.
    assert (await flow.replay(err.value.pending_id or "")).state == State.CANCELLED
    await flow.aclose()


@pytest.mark.anyio
async def test_max_fee_percent_from_the_settings_lets_it_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPAPPROVE_MAX_FEE_PERCENT", "6")
    kit = kit_with(tmp_path, monkeypatch, fee=FeePolicy(500, Decimal("0.10")))
    pending = await kit.flow.start_quote(
        offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="10.00"
    )
    assert pending.state == State.AWAITING_APPROVAL
    checked = [e for e in kit.store.events(pending.id) if e.kind == "quote_checked"]
    assert checked[0].data["feePercent"] == "6.00"
    await approve_and_check(kit, pending, debit=1060, receive=1000)


async def stopped_before_the_quote(kit: FlowKit, **kwargs: Any) -> Any:
    """The quote call fails once with an unknown outcome: the row waits in incoming_created."""
    kit.sandbox.state.set_fault("create-quote", status=500, times=1)
    with pytest.raises(FlowError):
        await kit.flow.start_quote(
            offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="10.00", **kwargs
        )
    (pending,) = kit.store.list_pending()
    assert pending.state == State.INCOMING_CREATED
    return pending


async def assert_replay_refused(kit: FlowKit, pending: Any, said: str) -> None:
    """Replaying ``pending`` re-quotes, and the new quote is refused with ``said``: the
    grant is cancelled cleanly and nothing is paid."""
    with pytest.raises(FlowError) as err:
        await kit.flow.replay(pending.id)
    assert said in err.value.message
    assert_refused_cleanly(kit, err.value, (100_000, 0))
    await kit.flow.aclose()


@pytest.mark.anyio
async def test_cross_currency_max_debit_is_kept_for_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = kit_with(tmp_path, monkeypatch, "buyer:EUR:2:1000.00", fee=FeePolicy(100))
    pending = await stopped_before_the_quote(kit, max_debit="9.30")
    # 10.00 USD / 1.08 * 1.01 = 9.3518... -> 9.36 EUR: over the 9.30 given at the start.
    await assert_replay_refused(kit, pending, "over --max-debit 9.30 EUR")


@pytest.mark.anyio
async def test_cross_currency_with_a_max_debit_pays_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = kit_with(tmp_path, monkeypatch, "buyer:EUR:2:1000.00", fee=FeePolicy(100))
    pending = await kit.flow.start_quote(
        offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="10.00", max_debit="9.36"
    )
    assert pending.debit_amount == wire(936, "EUR")
    await approve_and_check(kit, pending, debit=936, receive=1000)


@pytest.mark.anyio
async def test_a_partly_paid_incoming_payment_quotes_less_and_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = kit_with(tmp_path, monkeypatch)
    pending = await stopped_before_the_quote(kit)
    # Someone pays 1.00 into the incoming payment meanwhile: the wallet quotes only 9.00.
    state = kit.sandbox.state
    (incoming,) = state.incoming_payments()
    incoming.received = 100
    await assert_replay_refused(kit, pending, "it delivers 9.00 USD, not the offer's 10.00 USD")


@pytest.mark.anyio
async def test_a_quote_expiring_before_the_buyer_can_approve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = kit_with(tmp_path, monkeypatch, quote_lifetime=10.0)
    with pytest.raises(FlowError) as err:
        await kit.flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1.00")
    assert "valid for 10 s, less than min_quote_seconds 30" in err.value.message
    assert_refused_cleanly(kit, err.value, (100_000, 0))
    await kit.flow.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"currency": "EUR"}, "the offer is in EUR, but the seller's wallet"),
        ({"currency": "E-R"}, "invalid currency"),
        ({"max_debit": "1.234"}, "invalid --max-debit for the buyer's wallet (USD, scale 2)"),
        ({"max_debit": "ten"}, "invalid --max-debit"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], needle: str
) -> None:
    kit = kit_with(tmp_path, monkeypatch)
    with pytest.raises(FlowError) as err:
        await kit.flow.start_quote(
            offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1.00", **kwargs
        )
    assert err.value.kind == "input" and err.value.exit_code == 2
    assert needle in err.value.message and err.value.pending_id is None
    assert kit.store.list_pending() == []
    assert kit.sandbox.state.incoming_payments() == []
    await kit.flow.aclose()


def test_reference_rates_in_the_config_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opapprove.settings import load_settings

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("OPAPPROVE_REFERENCE_RATES", json.dumps(["EUR/USD=x"]))
    with pytest.raises(FlowError) as err:
        quote_check.QuotePolicy.from_settings(load_settings())
    assert err.value.kind == "config" and "reference_rates" in err.value.message


def test_unreadable_amounts_are_refused() -> None:
    with pytest.raises(FlowError) as err:
        check({"value": "-1", "assetCode": "USD", "assetScale": 2}, wire(1000))
    assert err.value.kind == "quote_refused" and "cannot be read" in err.value.message


ASSETS = st.sampled_from([Asset("USD", 2), Asset("EUR", 2), Asset("JPY", 0)])
SANDBOX_RATES = Rates.parse(["EUR/USD=1.08", "USD/JPY=150"])


@given(
    st.integers(1, 10**9),
    ASSETS,
    ASSETS,
    st.integers(0, 2_000),
    st.decimals(min_value=0, max_value=5, places=2),
)
def test_the_fee_the_check_sees_is_the_fee_the_sandbox_charged(
    receive: int, sender: Asset, receiver: Asset, bp: int, fixed: Decimal
) -> None:
    """With the wallet's own rates as reference, the fee the check computes is the wallet's
    fee exactly, give or take the one rounding up to a whole minor unit."""
    fee = FeePolicy(bp, fixed)
    debit = debit_for(receive, sender, receiver, SANDBOX_RATES, fee)
    t = quote_check.terms(
        wire(debit, sender.code, sender.scale),
        wire(receive, receiver.code, receiver.scale),
        SANDBOX_RATES,
    )
    assert t.fee is not None
    unit = 10**sender.scale
    worth = Fraction(receive, 10**receiver.scale) / SANDBOX_RATES.rate(sender.code, receiver.code)
    charged = Fraction(fee.fixed_units(sender.scale), unit) + worth * Fraction(bp, 10_000)
    assert charged <= t.fee < charged + Fraction(1, unit)


@pytest.mark.anyio
async def test_a_cached_buyer_document_the_wallet_has_since_changed_is_fetched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sandbox restarted with the buyer in another asset, within WALLET_DOC_TTL: the store
    # still holds the old document. The quote is the wallet's own; the stale document, not
    # the wallet, must give way.
    kit = make_kit(tmp_path, monkeypatch)
    buyer = kit.sandbox.buyer
    first = await kit.flow.start_quote(offer_id="o1", buyer_wallet=buyer, amount="1.00")
    assert first.state == State.AWAITING_APPROVAL
    await kit.flow.aclose()
    flow = kit.new_flow()
    stale = kit.store.get_wallet_document(buyer, max_age=300, now=flow.clock())
    assert stale["assetCode"] == "USD"
    kit.store.put_wallet_document(buyer, {**stale, "assetCode": "EUR"}, now=flow.clock())
    pending = await flow.start_quote(offer_id="o2", buyer_wallet=buyer, amount="10.00")
    assert pending.state == State.AWAITING_APPROVAL
    assert pending.buyer_doc is not None and pending.buyer_doc["assetCode"] == "USD"
    assert kit.store.get_wallet_document(buyer, max_age=300)["assetCode"] == "USD"
    kinds = [e.kind for e in kit.store.events(pending.id)]
    assert "buyer_wallet_renewed" in kinds and "quote_refused" not in kinds
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert done.state == State.COMPLETED
    assert len(kit.sandbox.state.outgoing_payments()) == 1
    await flow.aclose()


@pytest.mark.anyio
async def test_a_refusal_the_wallet_stands_by_is_fetched_once_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = kit_with(tmp_path, monkeypatch, fee=FeePolicy(500, Decimal("0.10")))
    with pytest.raises(FlowError) as err:
        await kit.flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="10.00")
    assert_refused_cleanly(kit, err.value, (100_000, 0))
    kinds = [e.kind for e in kit.store.events(err.value.pending_id or "")]
    assert "buyer_wallet_renewed" not in kinds
    await kit.flow.aclose()
