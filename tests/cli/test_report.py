"""``opapprove report`` as support staff run it: tables with bars, JSON, and bad input."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys

import pytest

from opapprove.approvals.store import Store
from opapprove.cli import exitcodes
from tests.cli.conftest import Cli, one_error_line
from tests.report_seed import seeded_store


@pytest.fixture
def seeded(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli.store.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(seeded_store(tmp_path_factory), cli.store)
    return cli


def test_json_has_the_counts_in_camel_case(seeded: Cli) -> None:
    result = seeded("--json", "report")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["total"] == 1000
    assert doc["funnel"] == {"started": 1000, "awaitingApproval": 850, "approved": 600, "paid": 500}
    assert doc["approvalRate"] == 0.75 and doc["stuck"][0]["count"] == 50
    assert doc["generatedAt"].endswith("Z") and doc["since"] is None
    since = json.loads(seeded("--json", "report", "--since", "2026-01-06T00:00:00Z").stdout)
    assert since["total"] == 500 and since["since"] == "2026-01-06T00:00:00Z"
    shop_b = json.loads(seeded("--json", "report", "--seller", "shop-b").stdout)
    assert shop_b["total"] == 100 and shop_b["funnel"]["paid"] == 50


def test_tables_with_bars(seeded: Cli) -> None:
    result = seeded("report")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Approval report: 1000 grants" in out
    assert "Approval rate: 75.0% (600 of 800 decided)" in out
    funnel = [line for line in out.splitlines() if line.startswith("paid")]
    assert funnel and "50%" in funnel[0] and "█" * 12 in funnel[0]  # half of 24
    for text in ("awaiting approval", "cannot reach wallet <url> (timed out)", "2026-01-10"):
        assert text in out
    assert "Stuck (no change for 15m or more)" in out


def test_no_store_is_one_line_and_creates_nothing(cli: Cli) -> None:
    result = cli("report")
    assert result.exit_code == 0
    assert result.stdout.strip().startswith("No grants to report (store ")
    assert len(result.stdout.strip().splitlines()) == 1
    assert not cli.store.exists()
    with Store(cli.store):
        pass
    seller = cli("report", "--seller", "nobody", "--since", "1d")
    assert "seller 'nobody', since " in seller.stdout and seller.exit_code == 0


def test_a_newer_schema_is_one_line(cli: Cli) -> None:
    with Store(cli.store):
        pass
    with sqlite3.connect(cli.store) as conn:
        conn.execute("PRAGMA user_version = 99")
    result = cli("report")
    assert result.exit_code == exitcodes.CONFIG
    assert "schema version 99, newer than this opapprove knows" in one_error_line(result)


@pytest.mark.parametrize("where", ["missing/page.html", "."])
def test_an_unwritable_html_path_is_one_line_before_anything(seeded: Cli, where: str) -> None:
    target = seeded.tmp / where
    result = seeded("report", "--html", str(target))
    assert result.exit_code == exitcodes.USAGE
    line = one_error_line(result)
    assert line.startswith(f"error: cannot write the report page {target}: ")
    assert result.stdout == ""


def test_html_without_plotly_says_which_extra(seeded: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)  # import raises ImportError
    page = seeded.tmp / "page.html"
    result = seeded("report", "--html", str(page))
    assert result.exit_code == exitcodes.CONFIG
    assert "pip install 'opapprove[report]'" in one_error_line(result)
    assert not page.exists()
