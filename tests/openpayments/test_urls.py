"""Wallet address parsing, loopback detection, the use_http rewrite and the http guard."""

from __future__ import annotations

import pytest

from opapprove.openpayments.errors import OpenPaymentsError, WalletAddressError
from opapprove.openpayments.urls import (
    InsecureUrlError,
    apply_use_http,
    check_url,
    is_loopback,
    parse_wallet_address,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://ilp.example/alice", "https://ilp.example/alice"),
        ("  https://ilp.example/alice/  ", "https://ilp.example/alice"),
        ("https://ilp.example/alice//", "https://ilp.example/alice"),
        ("HTTPS://ILP.Example/Alice", "https://ilp.example/Alice"),
        ("$ilp.example/alice", "https://ilp.example/alice"),
        ("$ilp.example/alice/", "https://ilp.example/alice"),
        ("https://ilp.example/tenant/accounts/bob", "https://ilp.example/tenant/accounts/bob"),
        ("https://ilp.example:8443/alice", "https://ilp.example:8443/alice"),
        ("http://127.0.0.1:3000/alice", "http://127.0.0.1:3000/alice"),
        ("http://127.8.9.1/alice", "http://127.8.9.1/alice"),
        ("http://localhost:3000/accounts/alice", "http://localhost:3000/accounts/alice"),
        ("http://[::1]:3000/alice", "http://[::1]:3000/alice"),
    ],
)
def test_accepted(text: str, expected: str) -> None:
    assert parse_wallet_address(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ilp.example/alice", "no scheme"),
        ("ftp://ilp.example/alice", "ftp://"),
        ("https://user:pw@ilp.example/alice", "user name or password"),
        ("https://user@ilp.example/alice", "user name or password"),
        ("https://ilp.example/alice?x=1", "query"),
        ("https://ilp.example/alice?", "query"),
        ("https://ilp.example/alice#frag", "fragment"),
        ("https://ilp.example", "no path"),
        ("https://ilp.example/", "no path"),
        ("$ilp.example", "no path"),
        ("https:///alice", "no host"),
        ("https://ilp.example/al ice", "whitespace"),
        ("http://ilp.example/alice", "plain http"),
        ("http://10.0.0.1/alice", "plain http"),
        ("https://ilp.example:99999/alice", "not a valid URL"),
    ],
)
def test_refused(text: str, says: str) -> None:
    with pytest.raises(WalletAddressError) as caught:
        parse_wallet_address(text)
    err = caught.value
    assert says in err.message
    assert err.hint, "every refusal says what to do"
    assert "\n" not in str(err)


def test_allow_http_lets_any_host_through() -> None:
    assert parse_wallet_address("http://wallet.local/alice", allow_http=True) == (
        "http://wallet.local/alice"
    )


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://localhost/a", True),
        ("http://LOCALHOST:8000/a", True),
        ("http://127.0.0.1/a", True),
        ("http://127.255.0.3:1/a", True),
        ("http://[::1]/a", True),
        ("http://[::2]/a", False),
        ("http://128.0.0.1/a", False),
        ("http://localhost.example.com/a", False),
        ("https://wallet.example/a", False),
        ("not a url", False),
        ("http://[bad/a", False),
    ],
)
def test_is_loopback(url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://wallet.example/a?b=1", "http://wallet.example/a?b=1"),
        ("HTTPS://wallet.example/a", "http://wallet.example/a"),
        ("http://wallet.example/a", "http://wallet.example/a"),
    ],
)
def test_apply_use_http(url: str, expected: str) -> None:
    assert apply_use_http(url) == expected


def test_check_url() -> None:
    assert check_url("https://wallet.example/a") == "https://wallet.example/a"
    assert check_url("http://127.0.0.1:9/a") == "http://127.0.0.1:9/a"
    assert check_url("http://wallet.example/a", allow_http=True) == "http://wallet.example/a"
    for bad in ("http://wallet.example/a", "ftp://wallet.example/a", "https:///a"):
        with pytest.raises(InsecureUrlError) as caught:
            check_url(bad)
        assert isinstance(caught.value, OpenPaymentsError)
        assert caught.value.hint
