"""Amounts: decimal strings for people, ``{value, assetCode, assetScale}`` on the wire.

Conversion is exact or refused: nothing is ever rounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from opapprove.openpayments.errors import AmountError

UINT64_MAX = 2**64 - 1
# ASCII digits only: \d would let "١٢" or "１２" through as 12.
_DECIMAL = re.compile(r"\A(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]*))?\Z")
_ASSET_CODE = re.compile(r"[A-Za-z0-9]{1,12}")


_UINT64_DIGITS = len(str(UINT64_MAX))


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else f"{text[:20]!r}… ({len(text)} characters)"


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 255:
        raise AmountError(f"asset scale {scale!r} is not an integer from 0 to 255")


def to_minor_units(amount: str, scale: int) -> int:
    """``"100.00"`` at scale 2 → ``10000``. Refuses junk, negatives, too many decimals, > uint64."""
    _check_scale(scale)
    if not isinstance(amount, str):
        raise AmountError(f"amount {amount!r} must be given as a decimal string like 100.00")
    text = amount.strip().replace("_", "")
    if text.startswith("-"):
        raise AmountError(f"amount {amount!r} is negative", hint="give a positive amount")
    m = _DECIMAL.fullmatch(text)
    if m is None:
        raise AmountError(
            f"amount {amount!r} is not a decimal number", hint="write it like 100 or 100.00"
        )
    frac = (m["frac"] or "").rstrip("0")
    if len(m["int"].lstrip("0")) > _UINT64_DIGITS:
        # Checked before int(): Python refuses to parse strings past 4,300 digits.
        raise AmountError(
            f"amount {_short(amount)} is larger than an Open Payments amount can hold"
        )
    if len(frac) > scale:
        raise AmountError(
            f"amount {amount!r} has {len(frac)} decimal places, but the asset has scale {scale}",
            hint=f"give at most {scale} decimal places",
        )
    # Annotated: int ** int is typed Any (a negative exponent would give a float).
    value: int = int(m["int"]) * 10**scale + (int(frac.ljust(scale, "0")) if frac else 0)
    if value > UINT64_MAX:
        raise AmountError(f"amount {amount!r} is larger than an Open Payments amount can hold")
    return value


def check_decimal(amount: str) -> str:
    """Refuse what is not a non-negative decimal before the asset's scale is known."""
    text = amount.strip().replace("_", "") if isinstance(amount, str) else ""
    m = _DECIMAL.match(text)
    if not isinstance(amount, str) or text.startswith("-") or m is None:
        raise AmountError(
            f"amount {amount!r} is not a positive decimal number",
            hint="write it like 100 or 100.00",
        )
    frac = (m["frac"] or "").rstrip("0")
    to_minor_units(text, len(frac))  # refuses what exceeds uint64 even at its own scale
    return text


def from_minor_units(value: int | str, scale: int) -> str:
    """``10000`` at scale 2 → ``"100.00"`` (always ``scale`` decimals)."""
    _check_scale(scale)
    n = parse_wire_value(value)
    if scale == 0:
        return str(n)
    q = Decimal(n).scaleb(-scale)
    return f"{q:.{scale}f}"


def parse_wire_value(value: int | str) -> int:
    if isinstance(value, bool):
        raise AmountError(f"amount value {value!r} is not an unsigned integer")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.isdigit() and value.isascii():
        if len(value.lstrip("0")) > _UINT64_DIGITS:
            raise AmountError(f"amount value {_short(value)} is outside the uint64 range")
        n = int(value)
    else:
        raise AmountError(f"amount value {value!r} is not an unsigned integer string")
    if not 0 <= n <= UINT64_MAX:
        raise AmountError(f"amount value {value!r} is outside the uint64 range")
    return n


@dataclass(frozen=True, order=True)
class Amount:
    """An Open Payments amount: an integer of minor units, an asset code and a scale."""

    value: int
    asset_code: str
    asset_scale: int

    def __post_init__(self) -> None:
        _check_scale(self.asset_scale)
        parse_wire_value(self.value)
        if not isinstance(self.asset_code, str) or not _ASSET_CODE.fullmatch(self.asset_code):
            raise AmountError(f"asset code {self.asset_code!r} is not a currency-like code")

    @classmethod
    def parse(cls, amount: str, asset_code: str, asset_scale: int) -> Amount:
        return cls(to_minor_units(amount, asset_scale), asset_code, asset_scale)

    @classmethod
    def from_wire(cls, data: Any) -> Amount:
        if not isinstance(data, dict):
            raise AmountError("an amount must be an object with value, assetCode and assetScale")
        try:
            return cls(parse_wire_value(data["value"]), data["assetCode"], data["assetScale"])
        except KeyError as exc:
            raise AmountError(f"the amount lacks {exc.args[0]}") from exc

    def to_wire(self) -> dict[str, Any]:
        return {
            "value": str(self.value),
            "assetCode": self.asset_code,
            "assetScale": self.asset_scale,
        }

    @property
    def decimal(self) -> str:
        return from_minor_units(self.value, self.asset_scale)

    def same_asset(self, other: Amount) -> bool:
        return (self.asset_code, self.asset_scale) == (other.asset_code, other.asset_scale)

    def __str__(self) -> str:
        return f"{self.decimal} {self.asset_code}"


def format_wire(data: Any) -> str:
    """A wire amount for people (``"100.00 USD"``); raw if it is not a valid amount."""
    try:
        return str(Amount.from_wire(data))
    except (AmountError, TypeError):
        return repr(data)
