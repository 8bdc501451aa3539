"""``opapprove webhook verify``: valid, altered, stale, no secret; body from flag, file or stdin."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from opapprove.approvals.webhooks import sign
from opapprove.cli import exitcodes
from tests.cli.conftest import Cli, one_error_line

SECRET = "whsec-test-0123456789"
BODY = '{"type":"payment.completed","pendingId":"01X","offerId":"7","status":"paid"}'


def header(body: str = BODY, secret: str = SECRET, at: float | None = None) -> str:
    return sign(secret, body, int(time.time() if at is None else at))


def test_valid_from_body(cli: Cli) -> None:
    result = cli("webhook", "verify", "--secret", SECRET, "--header", header(), "--body", BODY)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("VALID")


def test_valid_from_file_stdin_and_config_secret(cli: Cli) -> None:
    path = cli.tmp / "body.json"
    path.write_bytes(BODY.encode())
    from_file = cli(
        "webhook", "verify", "--secret", SECRET, "--header", header(), "--body-file", str(path)
    )
    assert from_file.exit_code == 0
    cli.write_config(f'webhook_secret = "{SECRET}"\n')
    whole_line = f"Opapprove-Signature: {header()}"
    from_stdin = cli("--json", "webhook", "verify", "--header", whole_line, input=BODY)
    assert from_stdin.exit_code == 0, from_stdin.output
    doc = json.loads(from_stdin.stdout)
    assert doc["ok"] is True and doc["valid"] is True and SECRET not in from_stdin.stdout


# Headers are signed when the test runs, not at collection: on a slow run a header signed
# minutes earlier would be refused as stale instead of for the reason under test.
@pytest.mark.parametrize(
    ("make_header", "body", "reason"),
    [
        (header, BODY.replace("paid", "PAID"), "mismatch"),
        (lambda: header(secret="other"), BODY, "mismatch"),
        (lambda: header(at=time.time() - 3600), BODY, "stale"),
        (lambda: "v1=abc", BODY, "format"),
    ],
    ids=["altered-body", "other-secret", "an-hour-old", "garbled"],
)
def test_invalid_is_exit_7_with_the_reason(
    cli: Cli, make_header: Callable[[], str], body: str, reason: str
) -> None:
    hdr = make_header()
    result = cli("--json", "webhook", "verify", "--secret", SECRET, "--header", hdr, "--body", body)
    assert result.exit_code == exitcodes.VERIFICATION
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["valid"] is False and doc["reason"] == reason
    human = cli("webhook", "verify", "--secret", SECRET, "--header", hdr, "--body", body)
    assert human.stdout.startswith(f"INVALID ({reason})")


def test_no_secret_is_config_error(cli: Cli) -> None:
    result = cli("webhook", "verify", "--header", header(), "--body", BODY)
    assert result.exit_code == exitcodes.CONFIG
    assert "webhook_secret" in one_error_line(result)


def test_body_and_body_file_together(cli: Cli) -> None:
    result = cli(
        "webhook", "verify", "--secret", "s", "--header", "h", "--body", "x", "--body-file", "y"
    )
    assert result.exit_code == exitcodes.USAGE
    one_error_line(result)
