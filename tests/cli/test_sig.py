"""``opapprove sig verify`` on a trace file written by real requests, and on raw requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opapprove.cli import exitcodes
from opapprove.cli.trace import TraceSink
from opapprove.openpayments.client import OpenPaymentsClient
from opapprove.openpayments.exchange import Exchange
from opapprove.openpayments.keys import public_jwk
from opapprove.openpayments.models import AmountModel, CreateIncomingPayment, incoming_payment_grant
from tests.cli.conftest import Cli, one_error_line
from tests.diagnostics.conftest import Live, serve_live
from tests.diagnostics.test_sigcheck import VECTOR_JWK, VECTOR_POST

SIGNED_LINES = [2, 3, 4]  # line 1 is the unsigned wallet address GET


@dataclass
class Traces:
    live: Live
    secret: Path  # --trace-file --show-secrets
    masked: Path  # --trace-file
    jwks: Path
    token: str


def tampered_copy(trace: Path, out: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """``trace`` copied to ``out`` with ``change`` made to its third record (a signed POST)."""
    lines = trace.read_text().splitlines()
    record = json.loads(lines[2])
    change(record)
    lines[2] = json.dumps(record)
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from serve_live(tmp_path_factory)


@pytest.fixture(scope="module")
def traces(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Traces:
    tmp = tmp_path_factory.mktemp("traces")
    secret = TraceSink(to_stderr=False, path=tmp / "secret.jsonl", show_secrets=True)
    masked = TraceSink(to_stderr=False, path=tmp / "masked.jsonl")
    tokens: list[str] = []

    def both(exchange: Exchange) -> None:
        secret(exchange)
        masked(exchange)

    async def go() -> None:
        async with OpenPaymentsClient(
            wallet_address_url=live.seller,
            key=live.sandbox.key,
            key_id=live.sandbox.key_id,
            on_exchange=both,
        ) as client:
            wallet = await client.get_wallet_address(live.seller)
            grant = await client.request_grant(
                wallet.auth_server, incoming_payment_grant(live.seller)
            )
            assert grant.access_token is not None
            tokens.append(grant.access_token.value)
            body = CreateIncomingPayment(
                wallet_address=live.seller,
                incoming_amount=AmountModel(value="700", asset_code="USD", asset_scale=2),
            )
            created = await client.create_incoming_payment(wallet.resource_server, tokens[0], body)
            await client.get_incoming_payment(created.id, tokens[0])

    asyncio.run(go())
    secret.close()
    masked.close()
    jwks = tmp / "jwks.json"
    jwk = public_jwk(live.sandbox.key, live.sandbox.key_id).to_dict()
    jwks.write_text(json.dumps({"keys": [jwk]}))
    return Traces(live, tmp / "secret.jsonl", tmp / "masked.jsonl", jwks, tokens[0])


def verdicts(stdout: str) -> list[str]:
    return [ln.split()[0] for ln in stdout.splitlines() if ln.startswith(("ok  ", "FAIL", "????"))]


def test_every_signed_line_verifies_against_a_jwks_file(cli: Cli, traces: Traces) -> None:
    result = cli("sig", "verify", str(traces.secret), "--jwks", str(traces.jwks))
    assert result.exit_code == 0, result.output
    assert verdicts(result.stdout) == ["ok"] * 3
    for number in SIGNED_LINES:
        assert f"line {number}: " in result.stdout
    assert traces.token not in result.output


def test_keys_from_the_wallet_or_from_the_grant_requests_client(cli: Cli, traces: Traces) -> None:
    by_wallet = cli("sig", "verify", str(traces.secret), "--wallet", traces.live.seller)
    assert by_wallet.exit_code == 0, by_wallet.output
    by_client = cli("sig", "verify", str(traces.secret))  # the grant request names the client
    assert by_client.exit_code == 0, by_client.output
    assert f"keys from {traces.live.seller}" in by_client.stdout


def test_a_tampered_line_fails_with_exit_7_and_shows_the_diff(
    cli: Cli, traces: Traces, tmp_path: Path
) -> None:
    charset = {"content-type": "application/json; charset=utf-8"}
    tampered = tampered_copy(
        traces.secret, tmp_path / "tampered.jsonl", lambda r: r["request_headers"].update(charset)
    )
    result = cli("sig", "verify", str(tampered), "--jwks", str(traces.jwks))
    assert result.exit_code == exitcodes.VERIFICATION, result.output
    assert verdicts(result.stdout) == ["ok", "FAIL", "ok"]
    assert "part: signature; differs: content-type" in result.stdout
    assert '-"content-type": application/json' in result.stdout
    assert '+"content-type": application/json; charset=utf-8' in result.stdout
    assert traces.token not in result.output
    doc = json.loads(
        cli("--json", "sig", "verify", str(tampered), "--jwks", str(traces.jwks)).stdout
    )
    assert doc["ok"] is False
    assert [r["ok"] for r in doc["results"]] == [True, False, True]
    assert doc["results"][1]["differs"] == ["content-type"]
    assert traces.token not in json.dumps(doc)


def test_a_tampered_body_is_the_content_digest(cli: Cli, traces: Traces, tmp_path: Path) -> None:
    lines = traces.secret.read_text().splitlines()
    record = json.loads(lines[2])
    record["request_body"] = record["request_body"].replace('"700"', '"1"')
    single = tmp_path / "one.jsonl"
    single.write_text(json.dumps(record) + "\n")
    result = cli("--json", "sig", "verify", str(single), "--jwks", str(traces.jwks))
    assert result.exit_code == exitcodes.VERIFICATION
    (found,) = json.loads(result.stdout)["results"]
    assert found["part"] == "content-digest"


def test_a_masked_trace_cannot_be_checked_but_is_not_a_failure(
    cli: Cli, traces: Traces, tmp_path: Path
) -> None:
    result = cli("sig", "verify", str(traces.masked), "--jwks", str(traces.jwks))
    assert result.exit_code == exitcodes.UNCHECKED, result.output
    assert verdicts(result.stdout) == ["ok", "????", "????"]
    assert (
        "cannot check: the Authorization header was masked (re-capture with --show-secrets)"
        in result.stdout
    )
    doc = json.loads(
        cli("--json", "sig", "verify", str(traces.masked), "--jwks", str(traces.jwks)).stdout
    )
    assert [(r["ok"], r["unchecked"]) for r in doc["results"]] == [
        (True, False),
        (False, True),
        (False, True),
    ]
    # Everything else is still checked: a changed header in a masked capture is a failure.
    plain = {"content-type": "text/plain"}
    tampered = tampered_copy(
        traces.masked,
        tmp_path / "masked-tampered.jsonl",
        lambda r: r["request_headers"].update(plain),
    )
    bad = cli("sig", "verify", str(tampered), "--jwks", str(traces.jwks))
    assert bad.exit_code == exitcodes.VERIFICATION, bad.output
    assert verdicts(bad.stdout) == ["ok", "FAIL", "????"]
    assert "differs: content-type" in bad.stdout
    with_token = cli(
        "sig", "verify", str(traces.masked), "--jwks", str(traces.jwks), "--token", traces.token
    )
    assert with_token.exit_code == 0, with_token.output
    assert traces.token not in with_token.stdout


def test_one_line_and_an_unsigned_one(cli: Cli, traces: Traces) -> None:
    one = cli("sig", "verify", str(traces.secret), "--line", "3", "--jwks", str(traces.jwks))
    assert one.exit_code == 0 and verdicts(one.stdout) == ["ok"]
    unsigned = cli("sig", "verify", str(traces.secret), "--line", "1", "--jwks", str(traces.jwks))
    assert unsigned.exit_code == exitcodes.VERIFICATION and "not signed" in unsigned.stdout
    missing = cli("sig", "verify", str(traces.secret), "--line", "9", "--jwks", str(traces.jwks))
    assert missing.exit_code == exitcodes.USAGE and "no request on line 9" in one_error_line(
        missing
    )


def test_standard_input_is_read_with_a_dash(cli: Cli, traces: Traces) -> None:
    text = traces.secret.read_text()
    result = cli("sig", "verify", "-", "--jwks", str(traces.jwks), input=text)
    assert result.exit_code == 0, result.output


def test_a_raw_request_and_a_jwks_file(cli: Cli, tmp_path: Path) -> None:
    raw = tmp_path / "request.txt"
    raw.write_text(VECTOR_POST)
    jwks = tmp_path / "vector.jwk"
    jwks.write_text(json.dumps(VECTOR_JWK))
    result = cli("sig", "verify", "--raw", str(raw), "--jwks", str(jwks))
    assert result.exit_code == 0, result.output
    assert "POST https://auth.wallet.example/" in result.stdout
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(VECTOR_POST.replace("test-key-1", "test-key-2"))
    refused = cli("sig", "verify", "--raw", str(wrong), "--jwks", str(jwks))
    assert refused.exit_code == exitcodes.VERIFICATION
    assert "key id 'test-key-2' is not in the JWKS" in refused.stdout
    assert "signature base rebuilt from the request" not in refused.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), "give a trace file, or --raw FILE"),
        (("nowhere.jsonl",), "nowhere.jsonl: No such file or directory"),
        (("--raw", "r.txt", "--line", "2"), "--line goes with a trace file"),
        (("t.jsonl", "--jwks", "nowhere.json"), "neither a file nor an http(s) URL"),
        (("t.jsonl", "--jwks", "a", "--wallet", "b"), "give --jwks or --wallet, not both"),
    ],
)
def test_usage_errors_are_one_line(
    cli: Cli, traces: Traces, tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    (tmp_path / "r.txt").write_text(VECTOR_POST)
    (tmp_path / "t.jsonl").write_text(traces.secret.read_text())
    mapped = [str(tmp_path / a) if a in ("r.txt", "t.jsonl", "nowhere.jsonl") else a for a in args]
    result = cli("sig", "verify", *mapped)
    assert result.exit_code == exitcodes.USAGE, result.output
    assert words in one_error_line(result)


def test_no_keys_anywhere_is_a_usage_error(cli: Cli, traces: Traces, tmp_path: Path) -> None:
    lines = traces.secret.read_text().splitlines()
    no_grant = tmp_path / "rs.jsonl"
    no_grant.write_text(lines[3] + "\n")  # an RS request: its body names no client
    result = cli("sig", "verify", str(no_grant))
    assert result.exit_code == exitcodes.USAGE
    assert "--jwks FILE|URL or --wallet URL" in one_error_line(result)
