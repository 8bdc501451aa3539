"""Currencies and fees: what a quote debits for what it delivers, computed as a wallet does.

Integer minor units at both ends, exact fractions in between, and one rounding at the end,
always in the wallet's favour (as Rafiki's quotes round):

- the receive amount is fixed (the incoming payment's amount, or a quote's receiveAmount):
  the debit is rounded UP to the next minor unit of the debit asset;
- the debitAmount is fixed: the receive amount is rounded DOWN, to the largest amount whose
  debit still fits.

The fee (``--fee 0.5%+0.10``) is a percent of the converted amount (what the receive amount
is worth in the debit asset) plus a fixed part in the debit asset. The fixed part is a
decimal of the debit asset's major units, rounded up to a whole minor unit (0.10 on a JPY
wallet of scale 0 is 1 JPY).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.money import UINT64_MAX
from opapprove.openpayments.rates import Rates

_PERCENT = re.compile(r"\A([0-9]+(?:\.[0-9]{1,2})?)%\Z")
_FIXED = re.compile(r"\A[0-9]+(?:\.[0-9]+)?\Z")
_FEE_HINT = "write it like 0.5%+0.10 (a percent, a fixed part in the debit asset, or both)"


@dataclass(frozen=True)
class Asset:
    code: str
    scale: int


@dataclass(frozen=True)
class FeePolicy:
    """The sending wallet's fee: ``basis_points`` of the converted amount plus ``fixed``.

    ``fixed`` is a decimal amount of the debit asset (``Decimal("0.10")``), not minor units,
    so one policy means the same on a USD wallet of scale 2 and a JPY wallet of scale 0.
    """

    basis_points: int = 0
    fixed: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        fixed = self.fixed
        if isinstance(fixed, str) and _FIXED.match(fixed.strip()):
            fixed = Decimal(fixed.strip())
            object.__setattr__(self, "fixed", fixed)
        if not isinstance(fixed, Decimal) or not fixed.is_finite() or fixed < 0:
            # An int here most likely meant minor units; refuse rather than guess the scale.
            raise TypeError(
                f"FeePolicy.fixed {fixed!r} must be a Decimal amount of the debit asset,"
                " e.g. Decimal('0.10')"
            )
        bp = self.basis_points
        if isinstance(bp, bool) or not isinstance(bp, int) or not 0 <= bp <= 100_000:
            raise ValueError(f"FeePolicy.basis_points {bp!r} must be an integer from 0 to 100000")

    @classmethod
    def parse(cls, text: str) -> FeePolicy:
        """``"0.5%+0.10"``, ``"1%"``, ``"0.25"`` or ``"0"``."""
        parts = [p.strip() for p in str(text).split("+")]
        percent: str | None = None
        fixed: str | None = None
        for part in parts:
            m = _PERCENT.match(part)
            if m is not None and percent is None:
                percent = m[1]
            elif _FIXED.match(part) and fixed is None:
                fixed = part
            else:
                raise AmountError(f"fee {text!r} cannot be read", hint=_FEE_HINT)
        bp = int(Decimal(percent) * 100) if percent is not None else 0
        if bp > 100_000:
            raise AmountError(f"fee {text!r} is over 1000%", hint=_FEE_HINT)
        return cls(basis_points=bp, fixed=Decimal(fixed) if fixed is not None else Decimal(0))

    def fixed_units(self, scale: int) -> int:
        return math.ceil(Fraction(self.fixed) * _unit(scale))

    def describe(self) -> str:
        parts = []
        if self.basis_points:
            parts.append(f"{Decimal(self.basis_points) / 100:f}%")
        if self.fixed:
            parts.append(f"{self.fixed:f}")
        return "+".join(parts) or "none"


def _unit(scale: int) -> int:
    # Annotated: int ** int is typed Any (a negative exponent would give a float).
    unit: int = 10**scale
    return unit


def _worth(receive: int, sender: Asset, receiver: Asset, rates: Rates) -> Fraction:
    """What ``receive`` minor units of the receiver's asset are worth in the sender's."""
    rate = rates.rate(sender.code, receiver.code)  # receiver units one sender unit buys
    return Fraction(receive * _unit(sender.scale)) / (_unit(receiver.scale) * rate)


def debit_for(receive: int, sender: Asset, receiver: Asset, rates: Rates, fee: FeePolicy) -> int:
    """The debit that delivers exactly ``receive``: converted, plus fee, rounded up."""
    with_fee = _worth(receive, sender, receiver, rates) * (10_000 + fee.basis_points) / 10_000
    debit = fee.fixed_units(sender.scale) + math.ceil(with_fee)
    if debit > UINT64_MAX:
        raise AmountError(f"the debit for {receive} would be {debit}, more than an amount can hold")
    return debit


def receive_for(debit: int, sender: Asset, receiver: Asset, rates: Rates, fee: FeePolicy) -> int:
    """The largest receive amount whose :func:`debit_for` fits in ``debit`` (0 if none).

    ``debit_for`` is the ceiling of a rising straight line plus an integer, so the inverse
    of that line at ``debit`` minus the fixed part, rounded down, is that largest amount.
    """
    room = debit - fee.fixed_units(sender.scale)
    if room <= 0:
        return 0
    rate = rates.rate(sender.code, receiver.code)
    exact = (
        Fraction(room * 10_000, 10_000 + fee.basis_points)
        * _unit(receiver.scale)
        * rate
        / _unit(sender.scale)
    )
    return math.floor(exact)
