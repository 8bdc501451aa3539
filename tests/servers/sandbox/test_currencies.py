"""Payments between wallets of different assets, with fees, over the sandbox's HTTP API.

Every answer is checked against the Open Payments spec (the sandbox fixture's recorder), and
every balance exactly: the buyer loses the debit, the seller gains the receive amount.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from opapprove.openpayments.rates import Rates
from opapprove.servers.sandbox import FeePolicy
from opapprove.servers.sandbox.accounts import with_wallets
from opapprove.servers.sandbox.config import default_accounts
from tests.sandbox_fixtures import Sandbox, make_sandbox, reason_of
from tests.servers.sandbox.test_payments import error_of, outgoing_token, pay_quote

pytestmark = pytest.mark.anyio

RATES = Rates.parse(["EUR/USD=1.08", "USD/JPY=150"])


def amount(value: int, code: str, scale: int) -> dict[str, Any]:
    return {"value": str(value), "assetCode": code, "assetScale": scale}


def box_with(*wallets: str, fee: FeePolicy | None = None) -> Sandbox:
    return make_sandbox(
        accounts=with_wallets(default_accounts(), wallets), rates=RATES, fee=fee or FeePolicy()
    )


async def test_eur_buyer_pays_a_usd_seller_with_a_fee() -> None:
    box = box_with("buyer:EUR:2:1000.00", fee=FeePolicy(100, Decimal("0.10")))
    async with box.client() as api:
        incoming = await api.incoming_payment("2500")  # 25.00 USD
        quote = await api.quote(incoming["id"])
        # 25 / 1.08 = 23.148148... EUR; +1% = 23.379629... -> 23.38; +0.10 = 23.48
        assert quote["receiveAmount"] == amount(2500, "USD", 2)
        assert quote["debitAmount"] == amount(2348, "EUR", 2)
        token = await outgoing_token(api, box, debitAmount=quote["debitAmount"])
        paid = await pay_quote(api, box, quote, token)
        assert paid.status_code == 201, paid.text
        assert paid.json()["debitAmount"] == amount(2348, "EUR", 2)
        assert paid.json()["receiveAmount"] == amount(2500, "USD", 2)
        # Spent before this payment (Rafiki 6b); it is sent at the next request.
        assert paid.json()["grantSpentDebitAmount"] == amount(0, "EUR", 2)
        assert paid.json()["grantSpentReceiveAmount"] == amount(0, "USD", 2)
        sent = (await api.get(paid.json()["id"], token=token)).json()
        assert sent["sentAmount"] == amount(2348, "EUR", 2)
    assert box.state.balance("buyer") == 100_000 - 2348
    assert box.state.balance("seller") == 2500
    box.recorder.assert_clean()


async def test_usd_buyer_pays_a_jpy_seller_scale_0() -> None:
    box = box_with("seller:JPY:0:0")
    async with box.client() as api:
        incoming = await api.incoming_payment("1000", asset=("JPY", 0))
        quote = await api.quote(incoming["id"])
        assert quote["debitAmount"] == amount(667, "USD", 2)  # 6.666... USD, rounded up
        # A fixed debit rounds the other way: 6.67 USD buys 1000.5 JPY, 1000 arrive.
        fixed_send = await api.quote(incoming["id"], debitAmount=amount(667, "USD", 2))
        assert fixed_send["receiveAmount"] == amount(1000, "JPY", 0)
        token = await outgoing_token(api, box)
        assert (await pay_quote(api, box, quote, token)).status_code == 201
    assert box.state.balance("buyer") == 100_000 - 667
    assert box.state.balance("seller") == 1000
    box.recorder.assert_clean()


async def test_amounts_in_the_wrong_asset_are_refused() -> None:
    box = box_with("buyer:EUR:2:1000.00")
    async with box.client() as api:
        incoming = await api.incoming_payment("1000")
        token = (await api.token([{"type": "quote", "actions": ["create"]}]))["value"]
        for extra in (
            {"debitAmount": amount(100, "USD", 2)},  # the buyer holds EUR
            {"receiveAmount": amount(100, "EUR", 2)},  # the seller holds USD
        ):
            body = {"walletAddress": box.buyer, "receiver": incoming["id"], "method": "ilp"}
            resp = await api.post(box.url("/op/quotes"), body | extra, token=token)
            assert resp.status_code == 400
            assert error_of(resp)["description"] == "invalid amount"
        # An incoming payment in an asset the seller's wallet does not hold.
        ip_token = (await api.token([{"type": "incoming-payment", "actions": ["create"]}]))["value"]
        body = {"walletAddress": box.seller, "incomingAmount": amount(100, "EUR", 2)}
        resp = await api.post(box.url("/op/incoming-payments"), body, token=ip_token)
        assert resp.status_code == 400
        assert "holds USD/2" in reason_of(resp)
    assert box.state.balance("buyer") == 100_000
    box.recorder.assert_clean()


async def test_the_consent_page_shows_both_sides() -> None:
    box = box_with("buyer:EUR:2:1000.00", fee=FeePolicy(50, Decimal("0.10")))
    async with box.client() as api:
        incoming = await api.incoming_payment("2500")
        quote = await api.quote(incoming["id"])
        pending = await api.pending_outgoing_grant(
            limits={"debitAmount": quote["debitAmount"], "receiver": incoming["id"]}
        )
        html = (await api.http.get(pending["interact"]["redirect"], follow_redirects=True)).text
    debit = Decimal(quote["debitAmount"]["value"]) / 100
    for needle in (
        f'<dd id="amount">{debit} EUR</dd>',
        '<dd id="receive">25.00 USD (Seller)</dd>',
        '<dd id="rate">1 EUR = 1.08 USD</dd>',
        '<dd id="fee">0.5%+0.10 (included in the amount)</dd>',
    ):
        assert needle in html
