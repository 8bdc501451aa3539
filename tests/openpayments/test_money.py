"""Amounts: exact conversion between decimal strings and uint64 minor units, or a refusal."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.money import (
    UINT64_MAX,
    Amount,
    check_decimal,
    format_wire,
    from_minor_units,
    parse_wire_value,
    to_minor_units,
)

uint64 = st.integers(min_value=0, max_value=UINT64_MAX)
scales = st.integers(min_value=0, max_value=18)
asset_codes = st.from_regex(r"\A[A-Z]{3}\Z")
_DECIMAL = re.compile(r"\A[0-9]+(\.[0-9]*)?\Z")


@given(uint64, scales)
def test_minor_units_round_trip_for_any_uint64_and_scale(value: int, scale: int) -> None:
    text = from_minor_units(value, scale)
    assert to_minor_units(text, scale) == value
    assert from_minor_units(str(value), scale) == text


@given(uint64, scales)
def test_from_minor_units_always_writes_scale_decimals(value: int, scale: int) -> None:
    text = from_minor_units(value, scale)
    assert _DECIMAL.match(text)
    if scale == 0:
        assert "." not in text and text == str(value)
    else:
        whole, frac = text.split(".")
        assert len(frac) == scale
        assert int(whole + frac) == value


@given(uint64, scales, st.integers(min_value=1, max_value=9))
def test_more_decimals_than_the_scale_are_refused(value: int, scale: int, extra: int) -> None:
    text = from_minor_units(value, scale)
    if "." not in text:
        text += "."
    too_precise = text + "0" * (extra - 1) + "5"
    with pytest.raises(AmountError) as caught:
        to_minor_units(too_precise, scale)
    message = str(caught.value)
    assert f"has {scale + extra} decimal places" in message
    assert f"scale {scale}" in message
    assert f"at most {scale} decimal places" in message


@given(uint64, scales, st.integers(min_value=1, max_value=6))
def test_trailing_zeros_beyond_the_scale_are_accepted(value: int, scale: int, zeros: int) -> None:
    text = from_minor_units(value, scale)
    padded = text + ("" if "." in text else ".") + "0" * zeros
    assert to_minor_units(padded, scale) == value


def test_trailing_zeros_examples() -> None:
    assert to_minor_units("1.500", 2) == 150
    assert to_minor_units("1.000000", 0) == 1
    assert to_minor_units("100", 2) == 10000
    assert to_minor_units("100.", 2) == 10000
    assert to_minor_units("0.01", 2) == 1
    assert to_minor_units(" 12.5 ", 2) == 1250


@given(st.integers(min_value=1, max_value=UINT64_MAX), scales)
def test_negative_amounts_are_refused(value: int, scale: int) -> None:
    with pytest.raises(AmountError) as caught:
        to_minor_units("-" + from_minor_units(value, scale), scale)
    assert "is negative" in str(caught.value)


@given(st.integers(min_value=UINT64_MAX + 1, max_value=UINT64_MAX * 10**6), scales)
def test_amounts_beyond_uint64_are_refused(value: int, scale: int) -> None:
    text = str(value)
    if scale:
        text = (text[:-scale] or "0") + "." + text[-scale:].rjust(scale, "0")
    with pytest.raises(AmountError) as caught:
        to_minor_units(text, scale)
    assert "larger than an Open Payments amount can hold" in str(caught.value)


def test_the_largest_amount_is_accepted() -> None:
    assert to_minor_units("184467440737095516.15", 2) == UINT64_MAX
    with pytest.raises(AmountError):
        to_minor_units("184467440737095516.16", 2)


@given(st.text(max_size=12).filter(lambda t: not _DECIMAL.match(t.strip().replace("_", ""))))
def test_junk_is_refused(junk: str) -> None:
    with pytest.raises(AmountError) as caught:
        to_minor_units(junk, 2)
    message = str(caught.value)
    assert "is negative" in message or "is not a decimal number" in message


@pytest.mark.parametrize(
    "junk",
    ["", " ", "abc", "1e5", "1,00", "0x10", "1.2.3", ".5", "+5", "NaN", "Infinity", "١٢", "１２"],
)
def test_junk_examples_are_refused(junk: str) -> None:
    with pytest.raises(AmountError) as caught:
        to_minor_units(junk, 2)
    assert "is not a decimal number" in str(caught.value)
    assert caught.value.hint == "write it like 100 or 100.00"


@pytest.mark.parametrize("not_a_string", [100, 1.5, None, b"100"])
def test_amounts_must_be_strings(not_a_string: object) -> None:
    with pytest.raises(AmountError) as caught:
        to_minor_units(not_a_string, 2)  # type: ignore[arg-type]
    assert "decimal string" in str(caught.value)


@pytest.mark.parametrize("scale", [-1, 256, True, 2.0, "2"])
def test_bad_scales_are_refused(scale: object) -> None:
    with pytest.raises(AmountError) as caught:
        to_minor_units("1", scale)  # type: ignore[arg-type]
    assert "asset scale" in str(caught.value)
    with pytest.raises(AmountError):
        from_minor_units(1, scale)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "wire", ["-1", "1.0", "", " 1", "+1", "1e3", "１２", str(UINT64_MAX + 1), -1, True, 1.0, None]
)
def test_wire_values_must_be_uint64_strings(wire: object) -> None:
    with pytest.raises(AmountError):
        parse_wire_value(wire)  # type: ignore[arg-type]


@given(uint64)
def test_wire_values_parse_as_strings_or_ints(value: int) -> None:
    assert parse_wire_value(str(value)) == value
    assert parse_wire_value(value) == value


@given(uint64, asset_codes, st.integers(min_value=0, max_value=255))
def test_amount_wire_round_trip(value: int, code: str, scale: int) -> None:
    amount = Amount(value, code, scale)
    wire = amount.to_wire()
    assert wire == {"value": str(value), "assetCode": code, "assetScale": scale}
    assert Amount.from_wire(wire) == amount


@given(uint64, asset_codes, scales)
def test_amount_parse_and_decimal_agree(value: int, code: str, scale: int) -> None:
    amount = Amount(value, code, scale)
    assert Amount.parse(amount.decimal, code, scale) == amount
    assert str(amount) == f"{amount.decimal} {code}"


@pytest.mark.parametrize(
    ("wire", "says"),
    [
        ("100", "must be an object"),
        ({"assetCode": "USD", "assetScale": 2}, "lacks value"),
        ({"value": "1", "assetScale": 2}, "lacks assetCode"),
        ({"value": "1", "assetCode": "USD"}, "lacks assetScale"),
        ({"value": "-1", "assetCode": "USD", "assetScale": 2}, "not an unsigned integer"),
        ({"value": "1", "assetCode": "US D", "assetScale": 2}, "asset code"),
        ({"value": "1", "assetCode": "USD\n", "assetScale": 2}, "asset code"),
        ({"value": "1", "assetCode": "", "assetScale": 2}, "asset code"),
        ({"value": "1", "assetCode": 840, "assetScale": 2}, "asset code"),
        ({"value": "1", "assetCode": "USD", "assetScale": 300}, "asset scale"),
    ],
)
def test_amount_from_wire_refuses_bad_amounts(wire: object, says: str) -> None:
    with pytest.raises(AmountError) as caught:
        Amount.from_wire(wire)
    assert says in str(caught.value)


def test_amount_compares_and_matches_assets() -> None:
    usd = Amount(100, "USD", 2)
    assert usd.same_asset(Amount(5, "USD", 2))
    assert not usd.same_asset(Amount(100, "USD", 3))
    assert not usd.same_asset(Amount(100, "EUR", 2))
    assert Amount(1, "USD", 2) < usd


def test_format_wire_is_for_people() -> None:
    assert format_wire({"value": "10000", "assetCode": "USD", "assetScale": 2}) == "100.00 USD"
    assert format_wire({"value": "7", "assetCode": "JPY", "assetScale": 0}) == "7 JPY"
    assert format_wire({"value": "x"}) == "{'value': 'x'}"
    assert format_wire(None) == "None"


@pytest.mark.parametrize("text", ["0", "0.00", "100", "100.00", "1.500", " 12.5 ", "1_000"])
def test_check_decimal_returns_the_cleaned_text(text: str) -> None:
    cleaned = check_decimal(text)
    assert isinstance(cleaned, str)
    assert cleaned == text.strip().replace("_", "")


@pytest.mark.parametrize(
    "junk", ["", "-1", "abc", "1e5", ".5", "12abc", "1.2.3", "١٢", "1" * 21, 100, None]
)
def test_check_decimal_refuses_what_is_not_a_decimal(junk: object) -> None:
    with pytest.raises(AmountError):
        check_decimal(junk)  # type: ignore[arg-type]


@given(uint64, scales)
def test_check_decimal_accepts_every_exact_amount(value: int, scale: int) -> None:
    text = from_minor_units(value, scale)
    assert check_decimal(text) == text
