"""examples/marketplace: the seed's Django app against `opapprove listen --api` and the sandbox.

The funder's journey in Chromium, from "Pre-Approve Payment" to the job marked complete by
the payment.completed webhook, with exactly one payment at the sandbox; and a forged
webhook refused. Django and the listener run as their own processes, the way a marketplace
runs them; the sandbox runs in this process (opapprove.testing).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from opapprove.testing import OpSandbox, make_seller, running_sandbox
from tests.ports import free_port

pytestmark = pytest.mark.browser

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "marketplace"
START_SECONDS = 30
STEP_SECONDS = 30


@dataclass
class Marketplace:
    sandbox: OpSandbox
    url: str
    webhook_secret: str
    password: str
    logs: list[Path]

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self.logs)


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited {proc.returncode}:\n{log.read_text()}", pytrace=False)
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer in {START_SECONDS} s:\n{log.read_text()}", pytrace=False)


def _spawn(
    stack: ExitStack, argv: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    out = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen(argv, env=env, cwd=EXAMPLE, stdout=out, stderr=subprocess.STDOUT)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    stack.callback(stop)
    return proc


@pytest.fixture
def marketplace(tmp_path: Path) -> Iterator[Marketplace]:
    django_port, listener_port = free_port(), free_port()
    django_url = f"http://127.0.0.1:{django_port}"
    listener_url = f"http://127.0.0.1:{listener_port}"
    secret, token, password = (secrets.token_hex(16) for _ in range(3))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPAPPROVE_", "DJANGO_"))}
    config = tmp_path / "opapprove.toml"
    config.write_text("")
    with ExitStack() as stack:
        sandbox = stack.enter_context(running_sandbox())
        seller = make_seller(sandbox, tmp_path / "keys")
        listener_env = {
            **base,
            **seller.env(),
            "OPAPPROVE_CONFIG": str(config),
            "OPAPPROVE_STORE": str(tmp_path / "opapprove.db"),
            # The wallet sends the browser to the marketplace, which hands it on (the seed).
            "OPAPPROVE_BASE_URL": django_url,
            "OPAPPROVE_WEBHOOK_URL": f"{django_url}/api/webhooks/payments",
            "OPAPPROVE_WEBHOOK_SECRET": secret,
            "OPAPPROVE_API_TOKEN": token,
        }
        django_env = {
            **base,
            "PYTHONPATH": str(EXAMPLE),
            "MARKETPLACE_DB": str(tmp_path / "marketplace.sqlite3"),
            "PAYMENTS_SERVICE_URL": listener_url,
            "PAYMENTS_SERVICE_TOKEN": token,
            "PAYMENTS_WEBHOOK_SECRET": secret,
        }
        opapprove = str(Path(sys.executable).with_name("opapprove"))
        logs = [tmp_path / "listener.log", tmp_path / "setup.log", tmp_path / "django.log"]
        listener = _spawn(
            stack,
            [opapprove, "listen", "--api", "--port", str(listener_port)],
            listener_env,
            logs[0],
        )
        manage = [sys.executable, "manage.py"]
        setup = _spawn(
            stack,
            [*manage, "setup_demo", "--password", password, "--wallet", sandbox.buyer_url],
            django_env,
            logs[1],
        )
        assert setup.wait(START_SECONDS) == 0, logs[1].read_text()
        django = _spawn(
            stack,
            [*manage, "runserver", "--noreload", f"127.0.0.1:{django_port}"],
            django_env,
            logs[2],
        )
        _wait_until_up(f"{listener_url}/health", listener, logs[0])
        _wait_until_up(f"{django_url}/accounts/login/", django, logs[2])
        yield Marketplace(sandbox, django_url, secret, password, logs)


def test_the_funders_journey_ends_with_the_job_complete(
    marketplace: Marketplace, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    wait = WebDriverWait(browser, STEP_SECONDS)
    shop = marketplace.url
    seller_before = marketplace.sandbox.balance("seller")
    try:
        browser.get(f"{shop}/jobs/1/")  # not logged in: the login page, then back here
        browser.find_element(By.NAME, "username").send_keys("funder")
        browser.find_element(By.NAME, "password").send_keys(marketplace.password)
        browser.find_element(By.ID, "login").click()
        wait.until(ec.element_to_be_clickable((By.ID, "pre-approve"))).click()
        approve_link = wait.until(ec.element_to_be_clickable((By.ID, "approve-in-wallet")))
        assert "Ready to approve payment!" in browser.page_source
        approve_link.click()
        # The wallet's consent page (whatever pages lead to it), then its Approve button.
        wait.until(ec.element_to_be_clickable((By.ID, "approve"))).click()
        wait.until(ec.url_contains(f"{shop}/jobs/1/"))
        assert "Payment completed!" in browser.page_source
        # The webhook may land a moment after the redirect: look again, a bounded few times.
        for _ in range(50):
            if browser.find_element(By.ID, "job-status").text == "complete":
                break
            time.sleep(0.2)
            browser.refresh()
        assert browser.find_element(By.ID, "job-status").text == "complete"
        assert browser.find_element(By.ID, "contract-completed").text == "yes"
    finally:
        browser.save_screenshot(str(tmp_path / "marketplace-job.png"))
    payments = marketplace.sandbox.state.outgoing_payments() if marketplace.sandbox.state else []
    assert len(payments) == 1, marketplace.log_text()
    assert marketplace.sandbox.balance("seller") == seller_before + 1234

    # A forged payment.completed: wrong secret, no signature, a replay from an hour ago.
    hook = f"{shop}/api/webhooks/payments"
    body = b'{"type":"payment.completed","pendingId":"x","offerId":"1","status":"paid"}'
    now = int(time.time())

    def signed(secret: str, t: int) -> str:
        mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}"

    for headers in (
        {"Opapprove-Signature": signed("not-the-secret", now)},
        {},
        {"Opapprove-Signature": signed(marketplace.webhook_secret, now - 3600)},
    ):
        resp = httpx.post(
            hook, content=body, headers={"Content-Type": "application/json", **headers}
        )
        assert resp.status_code == 401, resp.text
    good = httpx.post(
        hook,
        content=body,
        headers={
            "Content-Type": "application/json",
            "Opapprove-Signature": signed(marketplace.webhook_secret, now),
        },
    )
    assert good.status_code == 200
