"""The currencies and fee of a demo run: ``demo --buyer-asset EUR --fee 1% --rate EUR/USD=1.1``.

The seller always holds USD (scale 2); the buyer holds ``--buyer-asset`` worth 1000.00 USD at
the demo's rates. The same rates are the quote check's reference rates, so the demo shows
the fee of a cross-currency quote as well as its rate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opapprove.approvals.quote_check import terms_or_none
from opapprove.approvals.store import Pending
from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.rates import Rates, parse_rate
from opapprove.servers.sandbox import AccountConfig, FeePolicy
from opapprove.servers.sandbox.fx import Asset, debit_for

# Round figures of late 2026, for a demo only.
DEMO_RATES = ("EUR/USD=1.08", "GBP/USD=1.27", "USD/MXN=17.05", "USD/JPY=150")
KNOWN_SCALES = {"USD": 2, "EUR": 2, "GBP": 2, "MXN": 2, "JPY": 0}
SELLER_ASSET = Asset("USD", 2)
BUYER_WORTH = 100_000  # 1000.00 USD
_ASSET = re.compile(r"\A([A-Za-z0-9]{1,12})(?::([0-9]{1,3}))?\Z")


@dataclass(frozen=True)
class DemoMoney:
    buyer: Asset = SELLER_ASSET
    fee: FeePolicy = field(default_factory=FeePolicy)
    rate_texts: tuple[str, ...] = DEMO_RATES

    @classmethod
    def parse(
        cls, buyer_asset: str | None = None, fee: str | None = None, rates: Sequence[str] = ()
    ) -> DemoMoney:
        """From the demo's options; :class:`AmountError` (one line and a hint) when wrong."""
        buyer = SELLER_ASSET
        if buyer_asset is not None:
            m = _ASSET.match(buyer_asset.strip())
            code = m[1].upper() if m else ""
            if m is None or (m[2] is None and code not in KNOWN_SCALES):
                raise AmountError(
                    f"--buyer-asset {buyer_asset!r} is not an asset I know the scale of",
                    hint="give CODE:SCALE, e.g. EUR:2 or JPY:0 (known: "
                    + ", ".join(KNOWN_SCALES)
                    + ")",
                )
            buyer = Asset(code, int(m[2]) if m[2] is not None else KNOWN_SCALES[code])
        given = {tuple(sorted(parse_rate(text)[:2])) for text in rates}
        texts = tuple(rates) + tuple(
            t for t in DEMO_RATES if tuple(sorted(parse_rate(t)[:2])) not in given
        )
        money = cls(buyer, FeePolicy.parse(fee) if fee else FeePolicy(), texts)
        money.buyer_balance()  # refuses an asset the rates cannot price
        return money

    @property
    def rates(self) -> Rates:
        return Rates.parse(self.rate_texts)

    def buyer_balance(self) -> int:
        return debit_for(BUYER_WORTH, self.buyer, SELLER_ASSET, self.rates, FeePolicy())

    def sandbox_settings(self) -> dict[str, Any]:
        """``SandboxConfig`` keywords: the two accounts, the rates and the fee."""
        buyer = AccountConfig(
            name="buyer",
            public_name="Buyer",
            asset_code=self.buyer.code,
            asset_scale=self.buyer.scale,
            balance=self.buyer_balance(),
        )
        seller = AccountConfig(name="seller", public_name="Seller")
        return {"accounts": [buyer, seller], "rates": self.rates, "fee": self.fee}


def legs(pending: Pending, rates: Rates, seller: str = "seller") -> list[dict[str, Any]]:
    """Each leg's debit and receive (one leg per seller; one seller today)."""
    terms = terms_or_none(pending.debit_amount, pending.receive_amount, rates)
    sent = (pending.outgoing_payment or {}).get("sentAmount")
    leg: dict[str, Any] = {
        "seller": seller,
        "sellerWallet": pending.seller_wallet,
        "state": str(pending.state),
        "sentAmount": sent,
    }
    leg |= terms.to_json() if terms else {"debitAmount": None, "receiveAmount": None}
    return [leg]
