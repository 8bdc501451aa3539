"""Fuzzing what people type: amounts and wallet addresses. Only the documented errors escape.

Amounts (``to_minor_units``, ``check_decimal``, ``Amount.from_wire``) raise ``AmountError``
or give an exact, round-tripping value; wallet addresses raise ``WalletAddressError`` or
give a normalised URL that normalises to itself.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from opapprove.openpayments.errors import AmountError, WalletAddressError
from opapprove.openpayments.money import (
    UINT64_MAX,
    Amount,
    check_decimal,
    from_minor_units,
    to_minor_units,
)
from opapprove.openpayments.urls import parse_wallet_address

FUZZ = settings(max_examples=200, deadline=None)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
decimal_like = st.from_regex(r"\A[ _+-]?[0-9_]{0,25}(\.[0-9_]{0,25})?[ \n]?\Z")
amount_text = decimal_like | st.text(max_size=30) | st.integers(0, 2**70).map(str)
scales = st.integers(-3, 300) | st.sampled_from([True, False, None, 2.0, "2"])


@FUZZ
@given(amount=amount_text | json_scalars, scale=scales)
@example(amount="18446744073709551615", scale=0)
@example(amount="18446744073709551616", scale=0)
@example(amount="1.", scale=2)
@example(amount=".5", scale=2)
@example(amount="١٢", scale=0)
def test_to_minor_units_is_exact_or_refused(amount: Any, scale: Any) -> None:
    try:
        value = to_minor_units(amount, scale)
    except AmountError:
        return
    assert isinstance(value, int) and 0 <= value <= UINT64_MAX
    assert to_minor_units(from_minor_units(value, scale), scale) == value


@FUZZ
@given(amount=amount_text | json_scalars)
def test_check_decimal_returns_a_decimal_or_refuses(amount: Any) -> None:
    try:
        text = check_decimal(amount)
    except AmountError:
        return
    places = len(text.partition(".")[2].rstrip("0"))
    assert to_minor_units(text, places) >= 0


wire_amounts = st.fixed_dictionaries(
    {
        "value": st.integers(-5, 2**65).map(str) | json_scalars,
        "assetCode": st.sampled_from(["USD", "EUR", "X1"]) | st.text(max_size=14) | json_scalars,
        "assetScale": st.integers(-2, 260) | json_scalars,
    }
)


@FUZZ
@given(data=wire_amounts | json_values | st.dictionaries(st.text(max_size=12), json_values))
def test_amount_from_wire_parses_or_refuses(data: Any) -> None:
    try:
        amount = Amount.from_wire(data)
    except AmountError:
        return
    assert Amount.from_wire(amount.to_wire()) == amount
    assert str(amount).endswith(amount.asset_code)


@pytest.mark.parametrize(
    "call",
    [
        lambda: to_minor_units("9" * 4301, 2),
        lambda: check_decimal("9" * 4301),
        lambda: Amount.from_wire({"value": "9" * 4301, "assetCode": "USD", "assetScale": 2}),
    ],
    ids=["to_minor_units", "check_decimal", "from_wire"],
)
def test_digit_strings_past_the_int_limit_are_amount_errors(call: Any) -> None:
    with pytest.raises(AmountError):
        call()


# --------------------------------------------------------------------------- wallet addresses

hosts = st.sampled_from(
    [
        "ilp.example",
        "ILP.Example",
        "127.0.0.1",
        "localhost",
        "[::1]",
        "[fe80::1%25eth0]",
        "bücher.example",
        "user@ilp.example",
        "user:pw@ilp.example",
        "",
        "ilp.example.",
        "[::1",
        "a b",
    ]
) | st.text(alphabet=string.ascii_letters + string.digits + ".-_[]:@%", max_size=20)
ports = st.sampled_from(["", ":0", ":443", ":8080", ":65535", ":65536", ":-1", ":x", ":"])
paths = st.sampled_from(["", "/", "/alice", "/alice/", "//", "/a/b", "/%20", "/a?b", "/a#b"]) | (
    st.text(max_size=15).map(lambda t: "/" + t)
)
schemes = st.sampled_from(["https://", "http://", "HTTPS://", "ftp://", "$", "", "https:/", "//"])
typed_urls = st.builds(lambda s, h, p, q: f"{s}{h}{p}{q}", schemes, hosts, ports, paths)


@FUZZ
@given(text=typed_urls | st.text(max_size=40), allow_http=st.booleans())
@example(text="$ilp.example/alice", allow_http=False)
@example(text="https://ilp.example:99999/alice", allow_http=False)
@example(text=" https://ilp.example/alice/ ", allow_http=False)
def test_wallet_addresses_normalise_or_are_refused(text: str, allow_http: bool) -> None:
    try:
        url = parse_wallet_address(text, allow_http=allow_http)
    except WalletAddressError as exc:
        assert "\n" not in str(exc)
        return
    assert url.startswith(("https://", "http://"))
    assert not any(ch.isspace() for ch in url) and "?" not in url and "#" not in url
    assert parse_wallet_address(url, allow_http=allow_http) == url
