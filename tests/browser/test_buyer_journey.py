"""The buyer's whole journey in a real browser: quote, consent page, listener page.

Everything talks real HTTP on loopback: the seller's Flow starts the quote against the
served sandbox, Chromium approves on the sandbox's consent page, the wallet redirects it to
the served listener, and the listener's own Flow (on its own Store connection, in its
server thread's loop, as `opapprove listen` runs) finishes the payment.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from opapprove.approvals.flow import Flow
from opapprove.approvals.records import Pending, State
from opapprove.approvals.store import Store
from opapprove.servers.listener import create_listener_app
from opapprove.servers.serving import RunningServer, serve_in_thread
from opapprove.settings import Settings, load_settings
from tests.browser.loopback import LateApp
from tests.sandbox_fixtures import Sandbox, make_sandbox

pytestmark = [pytest.mark.browser, pytest.mark.anyio]

NAVIGATION_SECONDS = 20
WAIT_SECONDS = 3  # the wallet's continue.wait: the first page must show well before
REFRESH_SECONDS = 1


@dataclass
class Journey:
    box: Sandbox
    sandbox: RunningServer
    listener: RunningServer
    store: Store
    settings: Settings
    events: list[dict[str, Any]] = field(default_factory=list)

    async def start_quote(self, offer_id: str) -> Pending:
        # The seller's side, as `opapprove quote start` runs it: real HTTP, real time.
        async with Flow(self.store, self.settings) as flow:
            return await flow.start_quote(
                offer_id=offer_id, buyer_wallet=f"{self.sandbox.url}/buyer", amount="12.34"
            )


@pytest.fixture
async def journey(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Journey]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("OPAPPROVE_CONFIG", raising=False)
    # Real time and a real continue.wait: the buyer's page must not wait for it.
    box = make_sandbox(clock=time.time, wait_seconds=WAIT_SECONDS)
    store_path = tmp_path / "store.db"
    late = LateApp()
    with (
        box.served() as sandbox,
        Store(store_path) as store,
        Store(store_path) as listener_store,
        serve_in_thread(late) as listener,
    ):
        box.add_default_seller(
            store, tmp_path / "seller.pem", base=sandbox.url, created_at=time.time()
        )
        settings = load_settings(store=store_path, allow_http=True, base_url=listener.url)
        kit = Journey(box, sandbox, listener, store, settings)
        listener_flow = Flow(listener_store, settings)
        late.inner = create_listener_app(
            listener_flow, on_event=kit.events.append, refresh_seconds=REFRESH_SECONDS
        )
        try:
            yield kit
        finally:
            late.run(listener_flow.aclose())
    box.recorder.assert_clean()
    box.state.close()


def _decide_in_browser(browser: webdriver.Chrome, pending: Pending, button_id: str) -> Any:
    """Open the approval URL, press a button, return the listener page's ``#result``."""
    assert pending.interact_redirect
    browser.get(pending.interact_redirect)
    assert browser.find_element(By.ID, "amount").text == "12.34 USD"
    browser.find_element(By.ID, button_id).click()
    return WebDriverWait(browser, NAVIGATION_SECONDS, poll_frequency=0.05).until(
        ec.presence_of_element_located((By.ID, "result"))
    )


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
async def test_approve_shows_a_page_at_once_that_turns_into_payment_complete(
    browser: webdriver.Chrome, journey: Journey, tmp_path: Path, javascript: bool
) -> None:
    pending = await journey.start_quote(f"offer-approve-{javascript}")
    assert pending.state == State.AWAITING_APPROVAL
    assert pending.finish_uri and pending.finish_uri.startswith(journey.listener.url)
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": not javascript})
    try:
        _decide_in_browser(browser, pending, "approve")
        # The listener answered before the wallet's continue.wait was over, so before paying.
        # (Read from the source: the page may already have reloaded itself once.)
        first = browser.page_source
        assert 'data-state="approved"' in first
        assert "Approved — completing the payment…" in first
        assert journey.box.state.outgoing_payments() == []
        assert browser.save_screenshot(str(tmp_path / "listener-completing.png"))

        WebDriverWait(browser, NAVIGATION_SECONDS, poll_frequency=0.1).until(
            lambda b: 'data-state="completed"' in b.page_source
        )
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
    assert browser.current_url.startswith(f"{journey.listener.url}/payments/finish?")
    assert browser.find_element(By.CSS_SELECTOR, "#result h1").text == "Payment complete"
    result = browser.find_element(By.ID, "result")
    assert "12.34 USD" in result.text and pending.id in result.text
    assert browser.save_screenshot(str(tmp_path / "listener-completed.png"))

    done = journey.store.get_pending(pending.id)
    assert done is not None and done.state == State.COMPLETED
    [payment] = journey.box.state.outgoing_payments()
    assert done.outgoing_payment_url and done.outgoing_payment_url.endswith(payment.id)
    assert [e["event"] for e in journey.events] == ["finished", "page_shown"]
    assert journey.events[0]["state"] == "completed"


async def test_reject_in_the_browser_shows_rejected_and_pays_nothing(
    browser: webdriver.Chrome, journey: Journey, tmp_path: Path
) -> None:
    pending = await journey.start_quote("offer-reject")

    result = _decide_in_browser(browser, pending, "reject")

    assert result.get_attribute("data-state") == "rejected"
    assert browser.find_element(By.CSS_SELECTOR, "#result h1").text == "Payment not approved"
    assert browser.save_screenshot(str(tmp_path / "listener-rejected.png"))
    # The redirect carries no hash: noted, but only the wallet (expiry, cancel) ends the grant.
    after = journey.store.get_pending(pending.id)
    assert after is not None and after.state == State.AWAITING_APPROVAL
    assert journey.box.state.outgoing_payments() == []
    assert [(e["event"], e["result"]) for e in journey.events] == [
        ("wallet_result", "grant_rejected")
    ]
