"""A headless Chromium for the browser tests: Debian's chromium driven through its chromedriver.

The driver and the browser are named explicitly so Selenium Manager never tries to download
anything (there is no internet). Without them the tests skip, except in CI, where a skip
would hide that the browser tests never ran.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

from tests.missing_parts import skip_or_fail

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING = (
    "headless Chromium not found: apt-get install chromium chromium-driver (make test's CI does)"
)
# Root in a container needs --no-sandbox; the rest keeps Chromium off the network and quick.
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,900",
]
PAGE_LOAD_SECONDS = 30


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        skip_or_fail(f"{MISSING} (missing: {', '.join(missing)})", tests="the browser tests")
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except WebDriverException as exc:
        # Installed but broken is a real failure, not a reason to skip.
        why = (exc.msg or type(exc).__name__).strip().splitlines()[0]
        pytest.fail(
            f"headless Chromium did not start: {why}; check `chromium --version` and"
            " `chromedriver --version` report the same version",
            pytrace=False,
        )
    driver.set_page_load_timeout(PAGE_LOAD_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
