"""The GNAP finish hash: Rafiki's form, the docs' url-safe form, and everything that must fail."""

from __future__ import annotations

import re

import pytest

from opapprove.openpayments.errors import InteractionHashError
from opapprove.openpayments.interaction import (
    finish_hash,
    hash_matches,
    new_nonce,
    verify_finish_hash,
)

# open-payments.md §4, the GNAP spec's example.
CLIENT_NONCE = "VJLO6A4CATR0KRO"
SERVER_NONCE = "MBDOFXG4Y5CVJCX821LH"
INTERACT_REF = "4IFWWIKYB2PQ6U56NL1"
GRANT_URL = "https://server.example.com/tx"
ARGS = (CLIENT_NONCE, SERVER_NONCE, INTERACT_REF, GRANT_URL)
RAFIKI_FORM = "x+gguKWTj8rQf7d7i3w3UhzvuJ5bpOlKyAlVpLxBffY="
DOCS_FORM = "x-gguKWTj8rQf7d7i3w3UhzvuJ5bpOlKyAlVpLxBffY"


def test_finish_hash_is_rafikis_padded_standard_base64() -> None:
    assert finish_hash(*ARGS) == RAFIKI_FORM
    assert len(finish_hash(*ARGS)) == 44


@pytest.mark.parametrize(
    "received",
    [
        RAFIKI_FORM,
        DOCS_FORM,
        RAFIKI_FORM.rstrip("="),
        DOCS_FORM + "=",
        f" {RAFIKI_FORM}\n",
    ],
)
def test_both_encodings_are_accepted(received: str) -> None:
    assert hash_matches(received, *ARGS)
    verify_finish_hash(received, *ARGS)


@pytest.mark.parametrize(
    "args",
    [
        ("VJLO6A4CATR0KRP", SERVER_NONCE, INTERACT_REF, GRANT_URL),
        (CLIENT_NONCE, "MBDOFXG4Y5CVJCX821LI", INTERACT_REF, GRANT_URL),
        (CLIENT_NONCE, SERVER_NONCE, "4IFWWIKYB2PQ6U56NL2", GRANT_URL),
        (CLIENT_NONCE, SERVER_NONCE, INTERACT_REF, "https://server.example.com/tx/"),
        (CLIENT_NONCE, SERVER_NONCE, INTERACT_REF, "https://server.example.com/"),
        (SERVER_NONCE, CLIENT_NONCE, INTERACT_REF, GRANT_URL),
    ],
    ids=["client-nonce", "server-nonce", "interact-ref", "trailing-slash", "other-url", "swapped"],
)
def test_a_hash_for_other_values_is_rejected(args: tuple[str, str, str, str]) -> None:
    assert not hash_matches(RAFIKI_FORM, *args)
    with pytest.raises(InteractionHashError) as caught:
        verify_finish_hash(RAFIKI_FORM, *args)
    assert "does not match this grant" in str(caught.value)
    assert "nothing was paid" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "received",
    [
        RAFIKI_FORM[:-2] + "Z=",
        RAFIKI_FORM[1:],
        RAFIKI_FORM + "AAAA",
        RAFIKI_FORM.lower(),
        "x+gguKWTj8rQf7d7i3w3UhzvuJ5bpOlKyAlVpLxBffY€",
        "not a hash",
    ],
)
def test_altered_hashes_are_rejected(received: str) -> None:
    assert not hash_matches(received, *ARGS)
    with pytest.raises(InteractionHashError):
        verify_finish_hash(received, *ARGS)


@pytest.mark.parametrize("received", [None, ""])
def test_a_redirect_without_a_hash_is_refused(received: str | None) -> None:
    with pytest.raises(InteractionHashError) as caught:
        verify_finish_hash(received, *ARGS)
    assert "carries no hash" in str(caught.value)
    assert caught.value.hint


def test_the_hash_covers_the_exact_grant_url() -> None:
    rafiki_style = "http://127.0.0.1:4006/"
    assert finish_hash("a", "b", "c", rafiki_style) != finish_hash("a", "b", "c", rafiki_style[:-1])


def test_non_ascii_values_hash_as_utf8() -> None:
    assert len(finish_hash("é", "日本", "ref", "https://auth.example/")) == 44


def test_new_nonces_are_url_safe_and_unique() -> None:
    nonces = {new_nonce() for _ in range(200)}
    assert len(nonces) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", n) for n in nonces)
