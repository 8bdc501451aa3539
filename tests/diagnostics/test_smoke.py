"""``run_smoke`` against the served sandbox: every step, the grant cancelled, JUnit XML."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from opapprove.approvals.flow import Flow
from opapprove.approvals.records import State
from opapprove.approvals.store import Store
from opapprove.diagnostics.junit import JUnitCase, junit_xml
from opapprove.diagnostics.smoke import STEP_NAMES, SmokeReport, run_smoke, to_junit
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments.client import OpenPaymentsClient
from tests.diagnostics.conftest import OTHER_KID, Live, closed_port_url


def smoke(live: Live, tmp: Path, buyer: str, **overrides: Any) -> tuple[SmokeReport, Store]:
    settings = live.settings(tmp, **overrides)
    store = Store(settings.store)

    async def go() -> SmokeReport:
        async with Flow(store, settings) as flow:
            return await run_smoke(flow, buyer=buyer, amount="0.01", offer_id="smoke-test")

    return asyncio.run(go()), store


def smoke_failing_once(live: Live, tmp: Path, operation: str) -> tuple[SmokeReport, Store]:
    """The smoke test while the sandbox answers ``operation`` once with a 500."""
    live.sandbox.state.set_fault(operation, status=500, times=1)
    try:
        return smoke(live, tmp, live.buyer)
    finally:
        live.sandbox.state.clear_faults()


def statuses(report: SmokeReport) -> dict[str, str]:
    return {s.name: s.status for s in report.steps}


def junit(report: SmokeReport) -> ET.Element:
    root = ET.fromstring(to_junit(report))  # noqa: S314 (our own output)
    suite = root.find("testsuite")
    assert suite is not None
    return suite


def test_every_step_passes_and_the_grant_ends_cancelled(live: Live, tmp_path: Path) -> None:
    report, store = smoke(live, tmp_path, live.buyer)
    try:
        assert [s.name for s in report.steps] == list(STEP_NAMES)
        assert all(s.status == "pass" for s in report.steps), report.steps
        assert report.ok and report.exit_code == 0
        assert report.approval_url and report.approval_url.startswith(f"{live.url}/interact/")
        pending = store.get_pending(report.pending_id or "")
        assert pending is not None and pending.state == State.CANCELLED
        assert "revoked at the wallet" in report.steps[-1].message
        # The wallet shows the grant revoked: continuing it now is refused.
        assert pending.continue_uri and pending.continue_token

        async def continue_it() -> None:
            async with OpenPaymentsClient(
                wallet_address_url=live.seller, key=live.sandbox.key, key_id=live.sandbox.key_id
            ) as client:
                await client.continue_grant(
                    pending.continue_uri or "", pending.continue_token or ""
                )

        with pytest.raises(op_errors.GrantError) as refused:
            asyncio.run(continue_it())
        # Rafiki 4c: a cancelled grant is an "invalid grant".
        assert (refused.value.status, refused.value.code) == (401, "invalid_continuation")
    finally:
        store.close()
    suite = junit(report)
    assert suite.get("tests") == str(len(STEP_NAMES)) and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == len(STEP_NAMES)
    assert suite.find("testcase/failure") is None and suite.find("testcase/skipped") is None


def test_an_unknown_buyer_wallet_fails_there_and_skips_the_rest(live: Live, tmp_path: Path) -> None:
    report, store = smoke(live, tmp_path, f"{live.url}/nobody")
    store.close()
    failed = report.first_failure
    assert failed is not None and failed.name == "buyer wallet"
    assert failed.kind == "wallet" and report.exit_code == 5 and "404" in failed.message
    found = statuses(report)
    assert [found[n] for n in STEP_NAMES[:3]] == ["pass"] * 3
    assert all(found[n] == "skip" for n in STEP_NAMES[4:])
    assert report.pending_id is None
    suite = junit(report)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("10", "1", "6")
    (failure,) = suite.findall("testcase/failure")
    assert failure.get("type") == "wallet" and "404" in (failure.get("message") or "")


def test_an_unreachable_buyer_wallet_is_a_transport_failure(live: Live, tmp_path: Path) -> None:
    report, store = smoke(live, tmp_path, closed_port_url("/buyer"))
    store.close()
    assert report.first_failure is not None and report.first_failure.name == "buyer wallet"
    assert report.exit_code == 4


@pytest.mark.parametrize("buyer", ["not a wallet", "ftp://x.example/a"])
def test_a_malformed_buyer_wallet_is_bad_input(live: Live, tmp_path: Path, buyer: str) -> None:
    report, store = smoke(live, tmp_path, buyer)
    store.close()
    assert report.first_failure is not None and report.first_failure.kind == "input"
    assert report.exit_code == 2


def test_an_unpublished_seller_key_fails_first(live: Live, tmp_path: Path) -> None:
    report, store = smoke(live, tmp_path, live.buyer, seller_key_id=OTHER_KID)
    store.close()
    failed = report.first_failure
    assert failed is not None and failed.name == "seller key published"
    assert report.exit_code == 3 and "is not the public key of" in failed.message


def test_a_failing_approval_url_still_cancels_the_grant(live: Live, tmp_path: Path) -> None:
    report, store = smoke_failing_once(live, tmp_path, "interaction-start")
    try:
        found = statuses(report)
        assert found["approval URL"] == "fail" and found["grant cancelled"] == "pass"
        assert report.first_failure is not None
        assert report.first_failure.name == "approval URL" and report.exit_code == 5
        pending = store.get_pending(report.pending_id or "")
        assert pending is not None and pending.state == State.CANCELLED
    finally:
        store.close()


def test_a_flow_step_that_fails_is_named(live: Live, tmp_path: Path) -> None:
    report, store = smoke_failing_once(live, tmp_path, "create-quote")
    store.close()
    found = statuses(report)
    assert found["wallet addresses"] == "pass" and found["incoming payment"] == "pass"
    assert found["quote"] == "fail" and found["outgoing payment grant"] == "skip"
    assert report.first_failure is not None and "500" in report.first_failure.message
    assert report.exit_code == report.first_failure.exit_code != 0
    assert report.pending_id is not None


def test_junit_xml_escapes_and_counts() -> None:
    cases = [
        JUnitCase('a <b> & "c"', "x.y", 0.5),
        JUnitCase("failed", "x.y", 1.25, failure="bad ]]> thing", failure_type="t", details="d"),
        JUnitCase("skipped", "x.y", skipped="why"),
    ]
    xml = junit_xml("suite", cases, timestamp=0, properties={"k": "v"})
    root = ET.fromstring(xml)  # noqa: S314 (our own output)
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    assert suite.get("time") == "1.750" and suite.get("timestamp") == "1970-01-01T00:00:00"
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names == ['a <b> & "c"', "failed", "skipped"]
    failure = suite.find("testcase/failure")
    assert failure is not None and failure.get("message") == "bad ]]> thing"
    assert failure.text == "d"
    prop = suite.find("properties/property")
    assert prop is not None and prop.get("name") == "k"
