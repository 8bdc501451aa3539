"""One list of secrets, masked the same way in JSON, text, headers, signature bases and URLs."""

from __future__ import annotations

import json

from opapprove.approvals.records import Event
from opapprove.openpayments import models as m
from opapprove.openpayments.redaction import (
    MASK,
    is_secret,
    redact_headers,
    redact_json,
    redact_signature_base,
    redact_text,
    redact_url,
)

TOKEN = "AB12CD34EF56TOKEN"


def test_gnap_token_values_are_secret_only_under_their_holders() -> None:
    assert is_secret("value", "access_token") and is_secret("value", "continue")
    assert not is_secret("value", "debitAmount") and not is_secret("value")
    assert is_secret("sharedSecret") and is_secret("shared_secret")


def test_the_same_secret_is_hidden_in_a_record_a_model_and_json() -> None:
    incoming = {"methods": [{"type": "ilp", "ilpAddress": "test.a.b", "sharedSecret": TOKEN}]}
    event = Event(1, "p", 0.0, "incoming_created", None, None, incoming)
    method = m.IlpPaymentMethod(ilp_address="test.a.b", shared_secret=TOKEN)
    for text in (repr(event), repr(method), json.dumps(redact_json(incoming))):
        assert TOKEN not in text and MASK in text
    assert "test.a.b" in repr(event)


def test_headers_keep_the_scheme_and_hide_cookies() -> None:
    shown = redact_headers(
        {"Authorization": f"GNAP {TOKEN}", "Cookie": f"s={TOKEN}", "X-Note": f"GNAP {TOKEN}"}
    )
    assert shown == {"Authorization": "GNAP ***", "Cookie": "***", "X-Note": "GNAP ***"}


def test_signature_base_fingerprint_tells_tokens_apart() -> None:
    base = f'"@method": POST\n"authorization";sf: GNAP {TOKEN}'
    assert redact_signature_base(base) == '"@method": POST\n"authorization";sf: GNAP ***'
    one = redact_signature_base(base, fingerprint=True)
    other = redact_signature_base(base.replace(TOKEN, "OTHER"), fingerprint=True)
    assert TOKEN not in one and one != other and "(sha256 " in one


def test_database_url_passwords_are_masked() -> None:
    url = "postgresql://app:s3cr%40t@db.example:5432/opapprove?sslmode=require"
    assert redact_url(url) == "postgresql://app:***@db.example:5432/opapprove?sslmode=require"
    assert redact_url("postgresql://db/x?user=app&password=pw") == (
        "postgresql://db/x?user=app&password=***"
    )
    assert redact_url("postgresql:///opapprove") == "postgresql:///opapprove"
    assert "s3cr" not in redact_text(f"cannot connect to {url}: refused")
