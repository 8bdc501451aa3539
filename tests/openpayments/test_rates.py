"""Exchange-rate tables: parsing, inverses, pairs joined through a third asset, refusals."""

from __future__ import annotations

from fractions import Fraction

import pytest

from opapprove.openpayments.rates import RateError, Rates, format_fraction, parse_rate


def test_parse_rate_is_exact() -> None:
    assert parse_rate("EUR/USD=1.08") == ("EUR", "USD", Fraction(108, 100))
    assert parse_rate(" eur / usd = 1.08 ") == ("EUR", "USD", Fraction(27, 25))


@pytest.mark.parametrize(
    "text",
    ["EUR/USD", "EURUSD=1.08", "EUR/USD=0", "EUR/USD=-1", "EUR/USD=1e3", "EUR/EUR=1", "/USD=1"],
)
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(RateError):
        Rates.parse([text])


def test_direct_inverse_and_joined_pairs() -> None:
    rates = Rates.parse(["EUR/USD=1.08", "USD/JPY=150"])
    assert rates.rate("EUR", "USD") == Fraction(27, 25)
    assert rates.rate("USD", "EUR") == Fraction(25, 27)
    assert rates.rate("EUR", "JPY") == Fraction(162)
    assert rates.rate("JPY", "EUR") == Fraction(1, 162)
    assert rates.rate("MXN", "MXN") == 1
    with pytest.raises(RateError, match="no exchange rate from EUR to MXN") as err:
        rates.rate("EUR", "MXN")
    assert "--rate EUR/MXN=" in (err.value.hint or "")


def test_a_pair_given_twice_is_refused() -> None:
    with pytest.raises(RateError, match="twice"):
        Rates.parse(["EUR/USD=1.08", "USD/EUR=0.92"])


def test_format_fraction() -> None:
    assert format_fraction(Fraction(27, 25)) == "1.08"
    assert format_fraction(Fraction(25, 27)) == "0.925926"
    assert format_fraction(Fraction(150)) == "150"
