"""Who a split payment pays: ``--pay SELLER=AMOUNT`` (or the API's payee list), checked.

Everything here is checked before anything is asked of a wallet or stored: the payee list
is one line per mistake (what, why, what to do), kind ``input`` (exit 2, HTTP 400). What
needs the sellers' wallets (an amount finer than a wallet's scale, a currency it does not
hold) is checked next, in the flow, still before the grant's row is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from opapprove.approvals.errors import FlowError
from opapprove.approvals.records import Pending
from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.money import check_decimal

# More legs than this in one approval is more likely a mistake than a marketplace job.
MAX_PAYEES = 20
_PAY_HINT = "give each seller as --pay SELLER_ID=AMOUNT, e.g. --pay seller-a=60.00"


@dataclass(frozen=True)
class Payee:
    """One seller of a split payment and its share, in the seller's own asset."""

    seller_id: str
    amount: str


def _bad(message: str, hint: str = _PAY_HINT) -> FlowError:
    return FlowError(message, hint=hint, kind="input")


def parse_pay(text: str) -> Payee:
    """``seller-a=60.00`` → ``Payee("seller-a", "60.00")`` (the amount checked later)."""
    seller_id, sep, amount = str(text).partition("=")
    if not sep or not seller_id.strip() or not amount.strip():
        raise _bad(f"--pay {text!r} is not SELLER=AMOUNT")
    return Payee(seller_id.strip(), amount.strip())


def payees_from_json(value: Any) -> list[Payee]:
    """The API's ``"payees": [{"sellerId": "shop-a", "amount": "60.00"}, ...]``."""
    hint = 'send "payees": [{"sellerId": "shop-a", "amount": "60.00"}, ...]'
    if not isinstance(value, list):
        raise _bad("payees must be a list of {sellerId, amount}", hint)
    out = []
    for n, item in enumerate(value, start=1):
        seller = item.get("sellerId") if isinstance(item, dict) else None
        amount = item.get("amount") if isinstance(item, dict) else None
        if not isinstance(seller, str) or not seller.strip():
            raise _bad(f"payee {n} has no sellerId", hint)
        if not isinstance(amount, str | int) or isinstance(amount, bool):
            raise _bad(f"payee {n} ({seller}) has no amount (a decimal string)", hint)
        out.append(Payee(seller.strip(), str(amount).strip()))
    return out


def restart_hint(pending: Pending) -> str:
    """How to ask for a grant like ``pending`` again (a split names each seller again)."""
    command = f"opapprove quote start --offer {pending.offer_id} --buyer {pending.buyer_wallet}"
    if pending.is_split:
        return f"start over: {command} --pay SELLER=AMOUNT for each seller of" + (
            f" `opapprove pending show {pending.id}`"
        )
    return f"start over: {command} --amount {pending.amount}"


def check_payees(payees: list[Payee], *, amount: str | None = None) -> str:
    """The total of the shares (a decimal string), once every rule holds.

    Refused: no payee, too many, the same seller twice, a share that is not a positive
    amount, and an ``amount`` given beside the shares that is not their sum."""
    if not payees:
        raise _bad("a split payment needs at least one payee")
    if len(payees) > MAX_PAYEES:
        raise _bad(
            f"{len(payees)} payees is more than one approval takes ({MAX_PAYEES})",
            "split the job into several offers",
        )
    seen: set[str] = set()
    total = Decimal(0)
    for payee in payees:
        if payee.seller_id in seen:
            raise _bad(
                f"seller {payee.seller_id!r} is named twice in --pay",
                "name each seller once, with its whole share",
            )
        seen.add(payee.seller_id)
        try:
            text = check_decimal(payee.amount)
        except AmountError as exc:
            raise _bad(
                f"the share of {payee.seller_id!r} is not a positive amount: {exc.message}",
                f"{exc.hint or 'write it like 60.00'}",
            ) from exc
        share = Decimal(text)
        if share <= 0:
            raise _bad(
                f"the share of {payee.seller_id!r} is zero",
                "give every payee more than nothing, or leave it out",
            )
        total += share
    if amount is not None:
        try:
            given = Decimal(check_decimal(amount))
        except AmountError as exc:
            raise _bad(f"invalid --amount: {exc.message}", exc.hint or "") from exc
        if given != total:
            raise _bad(
                f"--amount {amount.strip()} is not the sum of the --pay shares ({total:f})",
                "leave --amount out (the shares make the total), or correct it",
            )
    return f"{total:f}"
