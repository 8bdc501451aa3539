"""``opapprove report --html``: one offline page whose plotly charts render in Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from typer.testing import CliRunner

from opapprove.cli.main import app
from tests.report_seed import seeded_store


def test_the_page_renders_its_charts_offline(
    browser: webdriver.Chrome,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    record_property: pytest.RecordProperty,
) -> None:
    store = tmp_path / "opapprove.db"
    shutil.copy(seeded_store(tmp_path_factory), store)
    page = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["--store", str(store), "report", "--html", str(page)], env={"NO_COLOR": "1"}
    )
    assert result.exit_code == 0, result.stderr
    assert f"Charts: {page}" in result.stdout
    text = page.read_text("utf-8")
    # Self-contained: no script or stylesheet is fetched from anywhere.
    assert "<script src=" not in text and "<link" not in text

    browser.get(page.as_uri())
    charts = ("chart-funnel", "chart-days", "chart-reasons", "chart-stuck")
    WebDriverWait(browser, 20).until(
        lambda d: all(d.find_elements(By.CSS_SELECTOR, f"#{c} svg.main-svg") for c in charts)
    )
    assert browser.find_element(By.ID, "report").get_attribute("data-charts") == "4"
    funnel = browser.find_element(By.ID, "chart-funnel").text
    assert "1000" in funnel and "500" in funnel
    assert "75.0% of 800 decided" in browser.find_element(By.TAG_NAME, "table").text
    shot = tmp_path / "report-page.png"
    assert browser.save_screenshot(str(shot))
    record_property("screenshot", str(shot))
