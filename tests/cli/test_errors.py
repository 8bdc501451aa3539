"""Every error class a user can cause maps to one line, a kind and a documented exit code."""

from __future__ import annotations

import json

import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.store import StoreError
from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError, classify
from opapprove.openpayments import errors as op
from opapprove.openpayments.redaction import redact_body, redact_json, redact_text
from opapprove.settings import SettingsError

TOKEN = "AB12CD34EF56TOKEN"


@pytest.mark.parametrize(
    ("exc", "code", "kind"),
    [
        (CliError("x"), exitcodes.USAGE, "usage"),
        (
            op.TransportError("down", method="GET", url="https://w/x"),
            exitcodes.TRANSPORT,
            "transport",
        ),
        (
            op.GrantError("no", method="POST", url="https://a/", status=400, code="invalid_client"),
            exitcodes.REFUSED,
            "refused",
        ),
        (
            op.InvalidResponse("bad body", method="GET", url="https://w/x", status=200),
            exitcodes.REFUSED,
            "invalid_response",
        ),
        (op.KeyLoadError("bad key"), exitcodes.CONFIG, "key"),
        (op.SignatureError("bad sig"), exitcodes.VERIFICATION, "verification"),
        (op.InteractionHashError("bad hash"), exitcodes.VERIFICATION, "verification"),
        (op.WalletAddressError("bad url"), exitcodes.USAGE, "wallet_address"),
        (op.AmountError("bad amount"), exitcodes.USAGE, "amount"),
        (SettingsError("bad setting", hint="fix it"), exitcodes.CONFIG, "config"),
        (StoreError("bad store", "fix it"), exitcodes.CONFIG, "store"),
        (FlowError("rejected", kind="rejected"), exitcodes.NOT_APPROVED, "rejected"),
        (FlowError("too slow", kind="timeout"), exitcodes.TIMEOUT, "timeout"),
        (FlowError("no seller", kind="config"), exitcodes.CONFIG, "config"),
        (RuntimeError("boom"), exitcodes.UNEXPECTED, "unexpected"),
    ],
)
def test_classify(exc: BaseException, code: int, kind: str) -> None:
    report = classify(exc)
    assert (report.exit_code, report.kind) == (code, kind)
    assert "\n" not in report.line() and report.line().startswith("error: ")


def test_response_error_json_has_status_and_code() -> None:
    exc = op.ResourceError(
        "the wallet refused",
        method="GET",
        url="https://w/op/x",
        status=403,
        code="403",
        description="Inactive Token",
        hint="rotate via manage",
    )
    doc = classify(exc).to_json()
    assert doc["ok"] is False
    assert doc["error"] == {
        "message": "the wallet refused",
        "hint": "rotate via manage",
        "kind": "refused",
        "status": 403,
        "code": "403",
    }


def test_tokens_in_error_text_and_details_are_masked() -> None:
    exc = op.GrantError(
        f"denied for Authorization: GNAP {TOKEN}\nsecond line",
        method="POST",
        url="https://a/continue/1",
        status=401,
        code="request_denied",
        details={"access_token": {"value": TOKEN, "manage": "https://a/token/1"}},
        hint=f'body was {{"continue":{{"access_token":{{"value":"{TOKEN}"}}}}}}',
    )
    report = classify(exc)
    line = report.line()
    assert TOKEN not in line and "GNAP ***" in line and "\n" not in line
    dumped = json.dumps(report.to_json())
    assert TOKEN not in dumped
    assert report.to_json()["error"]["details"]["access_token"]["manage"] == "https://a/token/1"


def test_redaction_keeps_amounts_and_as_uri() -> None:
    data = {
        "debitAmount": {"value": "1000", "assetCode": "USD", "assetScale": 2},
        "access_token": {"value": TOKEN, "manage": "m"},
        "continue": {"access_token": {"value": TOKEN}, "uri": "u"},
        "methods": [{"type": "ilp", "sharedSecret": "c2VjcmV0", "ilpAddress": "test.x"}],
    }
    masked = redact_json(data)
    assert masked["debitAmount"]["value"] == "1000"
    assert TOKEN not in json.dumps(masked) and "c2VjcmV0" not in json.dumps(masked)
    assert masked["methods"][0]["ilpAddress"] == "test.x"
    assert redact_text('WWW-Authenticate: GNAP as_uri="https://a/"') == (
        'WWW-Authenticate: GNAP as_uri="https://a/"'
    )
    assert TOKEN not in redact_body(json.dumps(data).encode())
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----"
    assert "MC4CAQ" not in redact_text(f"key: {pem}")
