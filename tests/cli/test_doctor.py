"""``opapprove doctor`` against a live sandbox: one line per check, the exit code by the worst."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from opapprove.cli import exitcodes
from tests.cli.conftest import Cli
from tests.diagnostics.conftest import Live, closed_port_url, serve_live

CHECKS = 9


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from serve_live(tmp_path_factory)


def add_seller(
    cli: Cli,
    live: Live,
    *,
    kid: str | None = None,
    key: Path | None = None,
    wallet: str | None = None,
) -> None:
    result = cli(
        "seller",
        "add",
        "default-seller",
        "--wallet",
        wallet or live.seller,
        "--key-id",
        kid or live.sandbox.key_id,
        "--key",
        str(key or live.key_path),
    )
    assert result.exit_code == 0, result.output


def lines(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln.strip()]


def test_all_pass_exit_0(cli: Cli, live: Live) -> None:
    add_seller(cli, live)
    result = cli("doctor")
    assert result.exit_code == 0, result.output
    out = lines(result.stdout)
    assert len(out) == CHECKS + 1
    assert all(ln.startswith("PASS  ") for ln in out[:CHECKS]), out
    assert out[-1] == f"doctor: {CHECKS} checks, 0 warning(s), 0 failure(s)"
    assert result.stderr == ""
    doc = json.loads(cli("--json", "doctor").stdout)
    assert doc["ok"] is True and doc["worst"] == "pass" and doc["exitCode"] == 0
    assert [c["status"] for c in doc["checks"]] == ["pass"] * CHECKS


def test_a_key_not_in_the_jwks_fails_with_exit_3(cli: Cli, live: Live) -> None:
    add_seller(cli, live, kid="not-published")
    result = cli("doctor")
    assert result.exit_code == exitcodes.CONFIG, result.output
    failed = [ln for ln in lines(result.stdout) if ln.startswith("FAIL")]
    assert len(failed) == 1 and "key published" in failed[0] and "not-published" in failed[0]
    assert "→ upload the public JWK" in result.stdout
    doc = json.loads(cli("--json", "doctor").stdout)
    assert doc["ok"] is False and doc["worst"] == "fail" and doc["exitCode"] == 3


def test_a_key_file_others_can_read_warns_and_strict_fails(
    cli: Cli, live: Live, tmp_path: Path
) -> None:
    key = tmp_path / "shared.pem"
    key.write_bytes(live.key_path.read_bytes())
    key.chmod(0o644)
    add_seller(cli, live, key=key)
    result = cli("doctor")
    assert result.exit_code == 0, result.output
    warned = [ln for ln in lines(result.stdout) if ln.startswith("WARN")]
    assert len(warned) == 1 and "key file" in warned[0] and "0o644" in warned[0]
    assert f"→ chmod 600 {key}" in result.stdout
    assert "1 warning(s), 0 failure(s)" in result.stdout
    strict = cli("doctor", "--strict")
    assert strict.exit_code == exitcodes.CONFIG


def test_an_unreachable_wallet_exits_4(cli: Cli, live: Live) -> None:
    add_seller(cli, live, wallet=closed_port_url("/shop"))
    result = cli("doctor")
    assert result.exit_code == exitcodes.TRANSPORT, result.output
    assert any(ln.startswith("FAIL  wallet address") for ln in lines(result.stdout))


def test_a_store_that_is_not_a_store_fails_without_a_traceback(cli: Cli, live: Live) -> None:
    cli.write_config(
        f'seller_wallet_address_url = "{live.seller}"\n'
        f'seller_key_id = "{live.sandbox.key_id}"\n'
        f'seller_private_key_path = "{live.key_path}"\n'
    )
    cli.store.parent.mkdir(parents=True, exist_ok=True)
    cli.store.write_text("not a database\n")
    result = cli("doctor")
    assert result.exit_code == exitcodes.CONFIG, result.output
    assert "Traceback" not in result.output
    store_line = next(ln for ln in lines(result.stdout) if "store" in ln.split()[1])
    assert store_line.startswith("FAIL") and "not an opapprove store" in store_line
    assert cli.store.read_text() == "not a database\n"
    assert any(ln.startswith("PASS  key published") for ln in lines(result.stdout))


def test_a_broken_config_is_one_failed_check(cli: Cli) -> None:
    cli.write_config("this is = = not toml\n")
    result = cli("doctor")
    assert result.exit_code == exitcodes.CONFIG
    out = lines(result.stdout)
    assert out[0].startswith("FAIL  config") and "not valid TOML" in out[0]


def test_an_unknown_seller_is_a_failed_check(cli: Cli) -> None:
    result = cli("doctor", "--seller", "nope")
    assert result.exit_code == exitcodes.CONFIG
    assert "FAIL  seller" in result.stdout and "unknown seller 'nope'" in result.stdout


def test_json_is_one_document_even_when_failing(cli: Cli) -> None:
    result = cli("--json", "doctor")
    assert result.exit_code == exitcodes.CONFIG
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and [c["check"] for c in doc["checks"]][-1] == "seller"
    assert result.stderr == ""


def test_trace_shows_the_requests_doctor_makes(cli: Cli, live: Live) -> None:
    add_seller(cli, live)
    result = cli("--trace", "doctor")
    assert result.exit_code == 0, result.output
    assert f"--> GET {live.seller}  (get-wallet-address)" in result.stderr
    assert f"--> GET {live.seller}/jwks.json  (get-wallet-address-keys)" in result.stderr
