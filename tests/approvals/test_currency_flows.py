"""The approval flow across currencies and fees, end to end on the in-process sandbox.

Same or other currency, with or without a fee: the buyer is debited exactly the quote's
debitAmount, the seller receives exactly the offer's amount, once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opapprove.approvals.records import State
from opapprove.openpayments.rates import Rates
from opapprove.servers.sandbox import FeePolicy
from opapprove.servers.sandbox.accounts import with_wallets
from opapprove.servers.sandbox.config import default_accounts
from tests.approvals.conftest import make_kit

pytestmark = pytest.mark.anyio

RATE_TEXTS = ["EUR/USD=1.08", "USD/JPY=150"]
RATES = Rates.parse(RATE_TEXTS)


@pytest.mark.parametrize(
    ("wallets", "fee", "amount", "debit", "receive"),
    [
        ([], None, "12.34", ("1234", "USD", 2), ("1234", "USD", 2)),
        # 0.5% of 12.34 = 0.0617 -> 0.07, + 0.10
        ([], "0.5%+0.10", "12.34", ("1251", "USD", 2), ("1234", "USD", 2)),
        # 12.34 / 1.08 = 11.425925... -> 11.43 EUR
        (["buyer:EUR:2:1000.00"], None, "12.34", ("1143", "EUR", 2), ("1234", "USD", 2)),
        # 11.425925... * 1.01 = 11.540185... -> 11.55, + 0.10
        (["buyer:EUR:2:1000.00"], "1%+0.10", "12.34", ("1165", "EUR", 2), ("1234", "USD", 2)),
        # 1850 JPY / 150 = 12.333... USD -> 12.34
        (["seller:JPY:0:0"], None, "1850", ("1234", "USD", 2), ("1850", "JPY", 0)),
    ],
    ids=["usd-usd", "usd-usd-fee", "eur-usd", "eur-usd-fee", "usd-jpy"],
)
async def test_pays_exactly_once_with_exact_balances(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wallets: list[str],
    fee: str | None,
    amount: str,
    debit: tuple[str, str, int],
    receive: tuple[str, str, int],
) -> None:
    # The quote check values a cross-currency fee against the same rates the wallet uses.
    monkeypatch.setenv("OPAPPROVE_REFERENCE_RATES", json.dumps(RATE_TEXTS))
    kit = make_kit(
        tmp_path,
        monkeypatch,
        accounts=with_wallets(default_accounts(), wallets),
        rates=RATES,
        fee=FeePolicy.parse(fee) if fee else FeePolicy(),
    )
    state = kit.sandbox.state
    buyer_before, seller_before = state.balance("buyer"), state.balance("seller")
    pending = await kit.flow.start_quote(
        offer_id="o-1", buyer_wallet=kit.sandbox.buyer, amount=amount
    )
    wire = dict(zip(("value", "assetCode", "assetScale"), debit, strict=True))
    assert pending.debit_amount == wire
    assert pending.receive_amount == dict(
        zip(("value", "assetCode", "assetScale"), receive, strict=True)
    )
    done = await kit.flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert done.state == State.COMPLETED
    assert state.balance("buyer") == buyer_before - int(debit[0])
    assert state.balance("seller") == seller_before + int(receive[0])
    assert len(state.outgoing_payments()) == 1
    await kit.flow.aclose()
    kit.sandbox.recorder.assert_clean()
    kit.store.close()
