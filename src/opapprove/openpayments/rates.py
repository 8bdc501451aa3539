"""Exchange rates between assets, written the way traders write them: ``EUR/USD=1.08``.

``EUR/USD=1.08`` means one EUR buys 1.08 USD (major units). A table answers for the pair as
given, its inverse, and pairs joined through other assets (EUR→USD→JPY), always exactly
(``Fraction``, never a float), so a sandbox and the quote check agree to the last unit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from opapprove.openpayments.errors import AmountError

_PAIR = re.compile(r"\A\s*([A-Za-z0-9]{1,12})\s*/\s*([A-Za-z0-9]{1,12})\s*=\s*(\S+)\s*\Z")
# Rates far outside this range are typos (a rate of 0.0000001 or 10**9), not currencies.
_RATE_DIGITS = 12


class RateError(AmountError):
    """A rate that cannot be read, or a pair the table cannot price."""


def parse_decimal(text: str, what: str) -> Fraction:
    """A positive decimal like ``1.08`` as an exact fraction; refuses floats' spellings."""
    raw = text.strip()
    if not re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", raw) or len(raw) > 2 * _RATE_DIGITS:
        raise RateError(
            f"{what} {text!r} is not a positive decimal number", hint="write it like 1.08"
        )
    try:
        value = Fraction(Decimal(raw))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise RateError(f"{what} {text!r} is not a decimal number") from exc
    if value <= 0:
        raise RateError(f"{what} {text!r} must be greater than 0", hint="e.g. EUR/USD=1.08")
    return value


def parse_rate(text: str) -> tuple[str, str, Fraction]:
    """``"EUR/USD=1.08"`` → ``("EUR", "USD", Fraction(27, 25))``."""
    m = _PAIR.match(text) if isinstance(text, str) else None
    if m is None:
        raise RateError(
            f"rate {text!r} is not written BASE/QUOTE=NUMBER",
            hint="e.g. EUR/USD=1.08 (one EUR buys 1.08 USD)",
        )
    base, quote = m[1].upper(), m[2].upper()
    if base == quote:
        raise RateError(f"rate {text!r} names {base} twice", hint="give two different assets")
    return base, quote, parse_decimal(m[3], f"the rate of {base}/{quote}")


@dataclass(frozen=True)
class Rates:
    """How many units of one asset one unit of another buys (major units, exact)."""

    table: Mapping[tuple[str, str], Fraction] = field(default_factory=dict)

    @classmethod
    def parse(cls, texts: Iterable[str]) -> Rates:
        table: dict[tuple[str, str], Fraction] = {}
        for text in texts:
            base, quote, rate = parse_rate(text)
            if (base, quote) in table or (quote, base) in table:
                raise RateError(
                    f"the rate of {base}/{quote} is given twice", hint="give each pair once"
                )
            table[(base, quote)] = rate
        return cls(table)

    def assets(self) -> set[str]:
        return {code for pair in self.table for code in pair}

    def rate(self, base: str, quote: str) -> Fraction:
        """Units of ``quote`` one ``base`` buys; via other assets when no pair is direct."""
        if base == quote:
            return Fraction(1)
        edges: dict[str, list[tuple[str, Fraction]]] = {}
        for (a, b), value in self.table.items():
            edges.setdefault(a, []).append((b, value))
            edges.setdefault(b, []).append((a, 1 / value))
        # Breadth first: the fewest hops, so a direct pair always wins over a detour.
        seen = {base: Fraction(1)}
        frontier = [base]
        while frontier:
            following = []
            for code in frontier:
                for other, value in edges.get(code, []):
                    if other not in seen:
                        seen[other] = seen[code] * value
                        following.append(other)
            if quote in seen:
                return seen[quote]
            frontier = following
        known = ", ".join(f"{a}/{b}" for a, b in self.table) or "none"
        raise RateError(
            f"no exchange rate from {base} to {quote} (rates known: {known})",
            hint=f"add one, e.g. --rate {base}/{quote}=1.08",
        )

    def describe(self) -> list[str]:
        return [f"{a}/{b}={format_fraction(v)}" for (a, b), v in self.table.items()]


def format_fraction(value: Fraction, places: int = 6) -> str:
    """A rate for people: exact when it is a short decimal, else rounded to ``places``."""
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    text = f"{round(exact, places):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
