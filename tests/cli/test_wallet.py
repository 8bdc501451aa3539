"""``opapprove wallet check`` against a live sandbox on loopback (and against nothing at all)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from opapprove.cli import exitcodes
from opapprove.openpayments.keys import generate_private_key, write_private_key
from tests.cli.conftest import Cli, one_error_line
from tests.diagnostics.conftest import OTHER_KID, Live, closed_port_url, serve_live


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The diagnostics' sandbox: its seller wallet also publishes OTHER_KID, another key."""
    yield from serve_live(tmp_path_factory)


def add_seller(cli: Cli, live: Live, sid: str, kid: str, key: Path) -> None:
    result = cli("seller", "add", sid, "--wallet", live.seller, "--key-id", kid, "--key", str(key))
    assert result.exit_code == 0, result.output


def test_ok_with_published_matching_key(cli: Cli, live: Live) -> None:
    add_seller(cli, live, "shop", live.sandbox.key_id, live.key_path)
    result = cli("wallet", "check", live.buyer, "--seller", "shop")
    assert result.exit_code == 0, result.output
    assert "OK: " in result.stdout and "matches its private key" in result.stdout
    assert "Buyer" in result.stdout and f"{live.url}/auth" in result.stdout
    doc = json.loads(cli("--json", "wallet", "check", live.buyer, "--seller", "shop").stdout)
    assert doc["ok"] is True
    assert doc["wallet"]["id"] == live.buyer
    assert doc["wallet"]["assetCode"] == "USD" and doc["wallet"]["assetScale"] == 2
    assert doc["wallet"]["resourceServer"] == f"{live.url}/op"
    assert all(c["ok"] for c in doc["checks"])
    assert doc["verdict"].startswith("OK: ")


def test_default_seller_is_checked_without_flag(cli: Cli, live: Live) -> None:
    add_seller(cli, live, "default-seller", live.sandbox.key_id, live.key_path)
    doc = json.loads(cli("--json", "wallet", "check", live.seller).stdout)
    assert doc["ok"] is True and doc["seller"]["id"] == "default-seller"
    assert live.sandbox.key_id in doc["walletKeys"]


def test_key_id_not_published(cli: Cli, live: Live) -> None:
    other = cli.tmp / "other.pem"
    write_private_key(other, generate_private_key())
    add_seller(cli, live, "shop", "never-uploaded", other)
    result = cli("wallet", "check", live.buyer, "--seller", "shop")
    assert result.exit_code == exitcodes.CONFIG
    assert "PROBLEM: key id 'never-uploaded' is not in" in result.stdout
    assert "Traceback" not in result.output
    doc = json.loads(cli("--json", "wallet", "check", live.buyer, "--seller", "shop").stdout)
    assert doc["ok"] is False and doc["verdict"].startswith("PROBLEM: ")


def test_published_jwk_does_not_match_private_key(cli: Cli, live: Live) -> None:
    add_seller(cli, live, "shop", OTHER_KID, live.key_path)
    result = cli("wallet", "check", live.buyer, "--seller", "shop")
    assert result.exit_code == exitcodes.CONFIG
    assert "PROBLEM: " in result.stdout and "is not the public key of" in result.stdout


def test_no_seller_configured_checks_wallet_only(cli: Cli, live: Live) -> None:
    doc = json.loads(cli("--json", "wallet", "check", live.buyer).stdout)
    assert doc["ok"] is True and doc["seller"] is None
    assert doc["sellerNote"] == "no seller is configured"
    assert not cli.store.exists(), "a read-only check must not create the store"


def test_unknown_account_is_refused(cli: Cli, live: Live) -> None:
    result = cli("wallet", "check", f"{live.url}/nobody")
    assert result.exit_code == exitcodes.REFUSED
    assert one_error_line(result).startswith("error: Invalid wallet address")


def test_unreachable_wallet_is_exit_4_one_line(cli: Cli) -> None:
    result = cli("wallet", "check", closed_port_url())
    assert result.exit_code == exitcodes.TRANSPORT
    line = one_error_line(result)
    assert line.startswith("error: Invalid wallet address")
    doc = json.loads(cli("--json", "wallet", "check", closed_port_url()).stdout)
    assert doc["ok"] is False and doc["error"]["kind"] == "transport"


def test_unreachable_wallet_subprocess_no_traceback(cli: Cli) -> None:
    proc = cli.run_process("wallet", "check", closed_port_url())
    assert proc.returncode == exitcodes.TRANSPORT
    assert proc.stderr.startswith("error: Invalid wallet address")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "url", ["not a url", "ilp.example/alice", "https://ilp.example", "https://u:p@ilp.example/a"]
)
def test_malformed_url_is_usage_error(cli: Cli, url: str) -> None:
    result = cli("wallet", "check", url)
    assert result.exit_code == exitcodes.USAGE
    assert one_error_line(result).startswith("error: Invalid wallet address")


def test_trace_and_trace_file(cli: Cli, live: Live) -> None:
    trace_file = cli.tmp / "trace" / "t.jsonl"
    result = cli("--trace", "wallet", "check", live.buyer, "--trace-file", str(trace_file))
    assert result.exit_code == 0, result.output
    assert f"--> GET {live.buyer}" in result.stderr
    assert f"--> GET {live.buyer}/jwks.json" in result.stderr
    assert "<-- 200 in " in result.stderr
    assert "accept: application/json" in result.stderr.lower()
    assert stat.S_IMODE(trace_file.stat().st_mode) == 0o600
    records = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert [r["url"] for r in records] == [live.buyer, f"{live.buyer}/jwks.json"]
    assert all(r["status"] == 200 and r["method"] == "GET" for r in records)
    # Appends, never truncates.
    cli("wallet", "check", live.buyer, "--trace-file", str(trace_file))
    assert len(trace_file.read_text().splitlines()) == 4
