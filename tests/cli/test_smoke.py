"""``opapprove smoke`` against the served sandbox: steps, --json, JUnit XML, exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from opapprove.approvals.records import State
from opapprove.approvals.store import Store
from opapprove.cli import exitcodes
from opapprove.diagnostics.smoke import STEP_NAMES
from tests.cli.conftest import Cli, one_error_line
from tests.diagnostics.conftest import Live, serve_live


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from serve_live(tmp_path_factory)


def add_seller(cli: Cli, live: Live) -> None:
    result = cli(
        "seller",
        "add",
        "default-seller",
        "--wallet",
        live.seller,
        "--key-id",
        live.sandbox.key_id,
        "--key",
        str(live.key_path),
    )
    assert result.exit_code == 0, result.output


def suite_of(path: Path) -> ET.Element:
    suite = ET.parse(path).getroot().find("testsuite")  # noqa: S314 (our own output)
    assert suite is not None
    return suite


def step_lines(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln.split()[:1] in (["pass"], ["FAIL"], ["skip"])]


def test_all_steps_pass_and_junit_is_written(cli: Cli, live: Live, tmp_path: Path) -> None:
    add_seller(cli, live)
    junit = tmp_path / "reports" / "smoke.xml"
    result = cli("smoke", "--buyer", live.buyer, "--amount", "0.01", "--junit", str(junit))
    assert result.exit_code == 0, result.output
    steps = step_lines(result.stdout)
    assert [ln.split("  ")[1].strip() for ln in steps] == list(STEP_NAMES)
    assert all(ln.startswith("pass") for ln in steps)
    assert result.stdout.rstrip().endswith("smoke: ok")
    suite = suite_of(junit)
    assert suite.get("tests") == str(len(STEP_NAMES)) and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.findall("testcase")] == list(STEP_NAMES)
    with Store(cli.store) as store:
        (pending,) = store.list_pending()
        assert pending.state == State.CANCELLED


def test_json_is_one_document(cli: Cli, live: Live) -> None:
    add_seller(cli, live)
    result = cli("--json", "smoke", "--buyer", live.buyer, "--amount", "0.01")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["exitCode"] == 0 and doc["pendingId"]
    assert [s["status"] for s in doc["steps"]] == ["pass"] * len(STEP_NAMES)


def test_a_bad_buyer_wallet_fails_with_its_exit_code_and_a_failing_testcase(
    cli: Cli, live: Live, tmp_path: Path
) -> None:
    add_seller(cli, live)
    junit = tmp_path / "smoke.xml"
    result = cli(
        "smoke", "--buyer", f"{live.url}/nobody", "--amount", "0.01", "--junit", str(junit)
    )
    assert result.exit_code == exitcodes.REFUSED, result.output
    failed = [ln for ln in step_lines(result.stdout) if ln.startswith("FAIL")]
    assert len(failed) == 1 and "buyer wallet" in failed[0]
    assert "smoke: FAILED at buyer wallet" in result.stdout
    suite = suite_of(junit)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("10", "1", "6")
    (case,) = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert case.get("name") == "buyer wallet"


def test_without_a_seller_the_first_step_fails_with_exit_3(cli: Cli, live: Live) -> None:
    doc = json.loads(cli("--json", "smoke", "--buyer", live.buyer, "--amount", "1").stdout)
    assert doc["ok"] is False and doc["exitCode"] == exitcodes.CONFIG
    assert doc["steps"][0]["status"] == "fail" and "seller add" in doc["steps"][0]["hint"]


def test_a_junit_path_that_cannot_be_written_is_one_error_line(
    cli: Cli, live: Live, tmp_path: Path
) -> None:
    add_seller(cli, live)
    result = cli("smoke", "--buyer", live.buyer, "--amount", "0.01", "--junit", str(tmp_path))
    assert result.exit_code == exitcodes.USAGE
    assert "cannot write the JUnit report" in one_error_line(result)


def test_a_real_process_exits_with_the_first_failures_code(cli: Cli, live: Live) -> None:
    add_seller(cli, live)
    done = cli.run_process("--json", "smoke", "--buyer", f"{live.url}/nobody", "--amount", "0.01")
    assert done.returncode == exitcodes.REFUSED, done.stderr
    assert json.loads(done.stdout)["exitCode"] == exitcodes.REFUSED
    assert "Traceback" not in done.stderr


def test_the_probe_is_a_browsers_and_is_traced_and_the_incoming_payment_is_closed(
    cli: Cli, live: Live, tmp_path: Path
) -> None:
    add_seller(cli, live)
    trace = tmp_path / "trace.jsonl"
    result = cli("--trace-file", str(trace), "smoke", "--buyer", live.buyer, "--amount", "0.01")
    assert result.exit_code == 0, result.output
    assert "incoming payment closed" in result.stdout
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    [probe] = [r for r in records if r["operation"] == "approval-url-probe"]
    assert (
        probe["request_headers"]["accept"].startswith("text/html,")
        and "*/*" in (probe["request_headers"]["accept"])
    )
    # As on Rafiki: the interact URL sends a browser on to the identity provider.
    assert probe["status"] == 302 and "/idp/?" in probe["response_headers"]["location"]
    with Store(cli.store) as store:
        (pending,) = store.list_pending()
    [incoming] = [
        ip
        for ip in live.sandbox.state.incoming_payments()
        if pending.incoming_payment_url.endswith(ip.id)
    ]
    assert incoming.completed
