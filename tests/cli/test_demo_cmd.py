"""``opapprove demo`` in-process: the table, --keep, --browser with a stand-in for the person."""

from __future__ import annotations

import asyncio
import json
import stat
import threading

import httpx
import pytest

from opapprove.cli import exitcodes
from opapprove.demo import press_approve
from tests.cli.conftest import Cli, one_error_line


def test_rich_table_and_keep(cli: Cli) -> None:
    kept = cli.tmp / "kept"
    result = cli("demo", "--keep", str(kept), "--amount", "2.50")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("step", "requests", "ms", "Create quote", "approval URL:", "Payment completed."):
        assert text in out
    assert "buyer 1000.00 USD -> 997.50 USD; seller 0.00 USD -> 2.50 USD" in out
    assert "final state:   completed" in out
    assert stat.S_IMODE((kept / "opapprove.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((kept / "seller.pem").stat().st_mode) == 0o600
    assert not cli.store.exists()


def test_browser_waits_for_the_person(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def person_clicks_approve(url: str, *args: object, **kwargs: object) -> bool:
        async def click() -> None:
            async with httpx.AsyncClient(timeout=30) as browser:
                # Approve on the consent page, then follow the redirect to the listener.
                await browser.get(await press_approve(browser, url))

        opened.append(url)
        threading.Thread(target=lambda: asyncio.run(click()), daemon=True).start()
        return True

    monkeypatch.setattr("webbrowser.open", person_clicks_approve)
    result = cli("--json", "demo", "--browser")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["state"] == "completed" and opened == [doc["approvalUrl"]]
    assert doc["approvalUrl"] in result.stderr  # shown to the person even with --json


def test_a_split_of_one_is_refused_before_anything_runs(cli: Cli) -> None:
    result = cli("demo", "--split", "1")
    assert result.exit_code == exitcodes.USAGE
    assert "--split 1 is not a split payment" in one_error_line(result)


def test_bad_amount(cli: Cli) -> None:
    result = cli("demo", "--amount", "twelve")
    assert result.exit_code == exitcodes.USAGE
    assert "--amount" in one_error_line(result)
