"""The quote check: is the wallet's quote what the offer needs, before the buyer is asked?

Three rules (issue 16), each refused with one line that shows the quote's terms:

1. ``receiveAmount`` is the offer's amount exactly: value, asset code and scale.
2. ``debitAmount`` is within the caps: the fee at most ``max_fee_percent`` of what the
   seller receives (valued in the buyer's asset), and the debit at most ``--max-debit``
   when one is given. Between two currencies the fee is only known against a reference
   rate (``reference_rates``); without one ``--max-debit`` is the cap, and with neither
   the quote is refused rather than passed unchecked.
3. The quote is valid for at least ``min_quote_seconds`` from its ``createdAt`` (the buyer
   needs the time to open the page; a quote that expires before the buyer approves is
   renewed after approval, within the approved debit). The wallet's own clock is used:
   ours may be skewed from it.

:func:`terms` describes any quote: debit, receive, the rate it implies, and its fee.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from opapprove.approvals.errors import FlowError
from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.money import Amount, check_decimal
from opapprove.openpayments.rates import RateError, Rates, format_fraction

if TYPE_CHECKING:
    from opapprove.settings import Settings

# Exit 6 with the grant ``cancelled``: nothing was asked of the buyer, nothing paid.
REFUSED_KIND = "quote_refused"
_ASSET_CODE = re.compile(r"\A[A-Za-z0-9]{1,12}\Z")


def _major(amount: Amount) -> Fraction:
    return Fraction(amount.value, 10**amount.asset_scale)


def _decimal(value: Fraction, places: int) -> str:
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return f"{exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):f}"


@dataclass(frozen=True)
class QuoteTerms:
    """A quote as a person reads it. ``fee`` is in the debit asset's major units."""

    debit: Amount
    receive: Amount
    rate: Fraction | None  # receive units one debit unit buys, as quoted (fee included)
    reference_rate: Fraction | None
    fee: Fraction | None
    fee_percent: Fraction | None

    @property
    def rate_text(self) -> str:
        if self.rate is None:
            return "no rate (nothing debited)"
        return f"1 {self.debit.asset_code} = {format_fraction(self.rate)} {self.receive.asset_code}"

    @property
    def fee_text(self) -> str:
        if self.fee is None or self.fee_percent is None:
            pair = f"{self.debit.asset_code}/{self.receive.asset_code}"
            return f"unknown (no reference rate {pair})"
        amount = _decimal(self.fee, self.debit.asset_scale)
        return f"{amount} {self.debit.asset_code} ({_decimal(self.fee_percent, 2)}%)"

    def line(self) -> str:
        return (
            f"debit {self.debit}, receive {self.receive}, rate {self.rate_text},"
            f" fee {self.fee_text}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "debitAmount": self.debit.to_wire(),
            "receiveAmount": self.receive.to_wire(),
            "rate": format_fraction(self.rate) if self.rate is not None else None,
            "rateText": self.rate_text,
            "referenceRate": (
                format_fraction(self.reference_rate) if self.reference_rate is not None else None
            ),
            "fee": _decimal(self.fee, self.debit.asset_scale) if self.fee is not None else None,
            "feeAssetCode": self.debit.asset_code,
            "feePercent": _decimal(self.fee_percent, 2) if self.fee_percent is not None else None,
        }


def terms(debit_wire: Any, receive_wire: Any, rates: Rates) -> QuoteTerms:
    """Debit, receive, implied rate and fee of a quote; the fee against ``rates``."""
    debit, receive = Amount.from_wire(debit_wire), Amount.from_wire(receive_wire)
    rate = _major(receive) / _major(debit) if debit.value else None
    try:
        reference: Fraction | None = rates.rate(debit.asset_code, receive.asset_code)
    except RateError:
        reference = None
    fee = fee_percent = None
    if reference is not None:
        worth = _major(receive) / reference  # what the receive amount is worth in the debit asset
        fee = _major(debit) - worth
        fee_percent = fee / worth * 100 if worth else None
    return QuoteTerms(debit, receive, rate, reference, fee, fee_percent)


def terms_or_none(debit_wire: Any, receive_wire: Any, rates: Rates) -> QuoteTerms | None:
    """:func:`terms`, or None when either amount is missing or malformed (for display)."""
    try:
        return terms(debit_wire, receive_wire, rates)
    except (AmountError, TypeError, ZeroDivisionError):
        return None


@dataclass(frozen=True)
class QuotePolicy:
    """The caps one grant's quote is held to: the settings' plus what ``quote start`` added."""

    max_fee_percent: Decimal
    min_seconds: float
    rates: Rates
    max_debit: str | None = None  # a decimal in the buyer's asset
    currency: str | None = None  # the offer's asset code, when the caller named one

    @classmethod
    def from_settings(
        cls, settings: Settings, *, max_debit: str | None = None, currency: str | None = None
    ) -> QuotePolicy:
        try:
            rates = Rates.parse(settings.reference_rates)
        except RateError as exc:
            raise FlowError(
                f"reference_rates in the config: {exc.message}", hint=exc.hint, kind="config"
            ) from exc
        return cls(
            max_fee_percent=Decimal(settings.max_fee_percent),
            min_seconds=float(settings.min_quote_seconds),
            rates=rates,
            max_debit=max_debit,
            currency=currency,
        )

    def note(self) -> dict[str, Any]:
        """What ``quote start`` was given, kept with the grant so a replay checks the same."""
        out: dict[str, Any] = {}
        if self.max_debit is not None:
            out["maxDebit"] = self.max_debit
        if self.currency is not None:
            out["currency"] = self.currency
        return out


def check_inputs(max_debit: str | None, currency: str | None) -> tuple[str | None, str | None]:
    """``--max-debit`` and ``--currency`` as written, before anything is asked or stored."""
    if max_debit is not None:
        try:
            max_debit = check_decimal(max_debit)
        except AmountError as exc:
            raise FlowError(
                f"invalid --max-debit: {exc.message}", hint=exc.hint, kind="input"
            ) from exc
    if currency is not None:
        currency = currency.strip().upper()
        if not _ASSET_CODE.match(currency):
            raise FlowError(
                f"invalid currency {currency!r}", hint="give an asset code like USD", kind="input"
            )
    return max_debit, currency


def check_wallets(
    policy: QuotePolicy, seller_doc: dict[str, Any], buyer_doc: dict[str, Any]
) -> None:
    """What can be refused from the two wallet documents alone, before anything is stored."""
    code = seller_doc.get("assetCode")
    if policy.currency is not None and policy.currency != code:
        raise FlowError(
            f"the offer is in {policy.currency}, but the seller's wallet"
            f" {seller_doc.get('id')} holds {code}",
            hint=f"give the amount in {code} (--currency {code}), or use a seller wallet"
            f" in {policy.currency}",
            kind="input",
        )
    buyer_max_debit(policy, buyer_doc)


def buyer_max_debit(policy: QuotePolicy, buyer_doc: dict[str, Any]) -> Amount | None:
    if policy.max_debit is None:
        return None
    return _in_asset(policy.max_debit, buyer_doc, "--max-debit for the buyer's wallet")


def _in_asset(text: str, wallet_doc: dict[str, Any], what: str) -> Amount:
    code, scale = str(wallet_doc.get("assetCode")), int(wallet_doc.get("assetScale") or 0)
    try:
        return Amount.parse(text, code, scale)
    except AmountError as exc:
        raise FlowError(
            f"invalid {what} ({code}, scale {scale}): {exc.message}", hint=exc.hint, kind="input"
        ) from exc


def _time(quote: dict[str, Any], key: str) -> float | None:
    text = quote.get(key)
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def is_expired(quote: dict[str, Any] | None, now: float) -> bool:
    """Whether a stored quote's ``expiresAt`` has passed (a quote without one never expires)."""
    expires = _time(quote or {}, "expiresAt")
    return expires is not None and expires <= now


def _lifetime(quote: dict[str, Any], now: float) -> float | None:
    """How long the quote is valid, on the wallet's own clock (``createdAt`` → ``expiresAt``)
    so that a skew between our clock and the wallet's cannot refuse a good quote."""
    expires = _time(quote, "expiresAt")
    if expires is None:
        return None
    created = _time(quote, "createdAt")
    return expires - (created if created is not None else now)


def check_quote(
    quote: dict[str, Any],
    *,
    offer: Amount,
    buyer_doc: dict[str, Any],
    policy: QuotePolicy,
    now: float,
) -> QuoteTerms:
    """The quote's terms if it passes every rule; else :class:`FlowError` ``quote_refused``."""
    try:
        t = terms(quote.get("debitAmount"), quote.get("receiveAmount"), policy.rates)
    except AmountError as exc:
        raise FlowError(
            f"quote refused: its amounts cannot be read ({exc.message})",
            hint="the wallet's quote is malformed; report it to the wallet's operator",
            kind=REFUSED_KIND,
        ) from exc

    def refuse(why: str, hint: str) -> FlowError:
        return FlowError(f"quote refused: {why} ({t.line()})", hint=hint, kind=REFUSED_KIND)

    if t.receive != offer:
        raise refuse(
            f"it delivers {t.receive}, not the offer's {offer}",
            "the seller must receive the offer's amount exactly; start again, or ask the"
            " wallet's operator why its quote differs",
        )
    buyer_asset = (buyer_doc.get("assetCode"), buyer_doc.get("assetScale"))
    if (t.debit.asset_code, t.debit.asset_scale) != buyer_asset:
        raise refuse(
            f"it debits {t.debit.asset_code}/{t.debit.asset_scale}, but the buyer's wallet"
            f" holds {buyer_asset[0]}/{buyer_asset[1]}",
            "the wallet quoted in another asset than the buyer's; ask its operator",
        )
    cap = buyer_max_debit(policy, buyer_doc)
    if cap is not None and t.debit.value > cap.value:
        raise refuse(
            f"the debit is over --max-debit {cap}",
            f"pass --max-debit {t.debit.decimal} or more to accept it, or use a cheaper wallet",
        )
    if t.fee_percent is not None and t.fee_percent > Fraction(policy.max_fee_percent):
        raise refuse(
            f"the fee is over max_fee_percent {policy.max_fee_percent}%",
            f"raise max_fee_percent in the config to {_decimal(t.fee_percent, 2)} or more"
            " to accept it, or use a cheaper wallet",
        )
    if t.fee_percent is None and cap is None:
        pair = f"{t.debit.asset_code}/{t.receive.asset_code}"
        raise refuse(
            f"its fee cannot be told from its rate without a reference rate for {pair}",
            f"pass --max-debit {t.debit.decimal} (or what the buyer may pay at most), or set"
            f' reference_rates = ["{pair}=RATE"] in the config',
        )
    lifetime = _lifetime(quote, now)
    if lifetime is not None and lifetime < policy.min_seconds:
        raise refuse(
            f"it is valid for {max(0.0, lifetime):.0f} s, less than min_quote_seconds"
            f" {policy.min_seconds:g}",
            "start a new quote (the wallet quotes afresh), or lower min_quote_seconds in the"
            " config",
        )
    return t
