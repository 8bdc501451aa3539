"""The sandbox's consent page in a real browser: what it shows, and where each button leads.

The sandbox and a client's finish endpoint both listen on loopback; Chromium opens the
grant's ``interact.redirect`` and clicks, as a buyer would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from opapprove.openpayments.interaction import new_nonce, verify_finish_hash
from opapprove.servers.serving import RunningServer, serve_in_thread
from tests.browser.loopback import FinishReceiver
from tests.sandbox_fixtures import Api, Sandbox, make_sandbox

pytestmark = [pytest.mark.browser, pytest.mark.anyio]

NAVIGATION_SECONDS = 15


@dataclass
class Consent:
    box: Sandbox
    sandbox: RunningServer
    receiver: FinishReceiver
    receiver_server: RunningServer
    api: Api

    async def ask(self, case: str) -> tuple[dict[str, Any], dict[str, Any], str]:
        """A 12.34 USD incoming payment and an interactive grant to pay it: (grant, ip, nonce)."""
        incoming = await self.api.incoming_payment("1234")
        nonce = new_nonce()
        grant = await self.api.pending_outgoing_grant(
            limits={
                "debitAmount": {"value": "1234", "assetCode": "USD", "assetScale": 2},
                "receiver": incoming["id"],
            },
            finish_uri=f"{self.receiver_server.url}/finish?case={case}",
            nonce=nonce,
        )
        return grant, incoming, nonce


@pytest.fixture
def sandbox_on_loopback() -> Iterator[tuple[Sandbox, RunningServer]]:
    box = make_sandbox()
    with box.served() as server:
        yield box, server
    box.recorder.assert_clean()
    box.state.close()


@pytest.fixture
async def consent(sandbox_on_loopback: tuple[Sandbox, RunningServer]) -> AsyncIterator[Consent]:
    box, server = sandbox_on_loopback
    receiver = FinishReceiver()
    async with AsyncExitStack() as stack:
        receiver_server = stack.enter_context(serve_in_thread(receiver.app))
        api = await stack.enter_async_context(
            box.client(base=server.url, transport=httpx.AsyncHTTPTransport())
        )
        yield Consent(box, server, receiver, receiver_server, api)


def _text(browser: webdriver.Chrome, element_id: str) -> str:
    text: str = browser.find_element(By.ID, element_id).text
    return text


def _click_and_land(browser: webdriver.Chrome, button_id: str) -> None:
    browser.find_element(By.ID, button_id).click()
    WebDriverWait(browser, NAVIGATION_SECONDS).until(
        ec.presence_of_element_located((By.ID, "received"))
    )


async def test_consent_page_shows_the_request_and_approve_returns_a_valid_hash(
    browser: webdriver.Chrome, consent: Consent, tmp_path: Path
) -> None:
    grant, incoming, nonce = await consent.ask("approve")
    browser.get(grant["interact"]["redirect"])

    assert _text(browser, "client-name") == "Seller"
    assert _text(browser, "client-url") == f"{consent.sandbox.url}/seller"
    assert _text(browser, "amount") == "12.34 USD"
    assert _text(browser, "receiver") == incoming["id"]
    assert _text(browser, "sender") == f"{consent.sandbox.url}/buyer"
    assert browser.find_element(By.ID, "approve").is_displayed()
    assert browser.find_element(By.ID, "reject").is_displayed()
    assert browser.save_screenshot(str(tmp_path / "consent-page.png"))

    _click_and_land(browser, "approve")

    assert browser.current_url.startswith(f"{consent.receiver_server.url}/finish?")
    [query] = consent.receiver.calls
    assert query["case"] == "approve"
    assert "result" not in query
    verify_finish_hash(
        query["hash"],
        nonce,
        grant["interact"]["finish"],
        query["interact_ref"],
        f"{consent.sandbox.url}/auth",
    )
    # The interact_ref the browser carried is the one that unlocks the grant.
    issued = await consent.api.continue_grant(grant, query["interact_ref"])
    assert issued.status_code == 200, issued.text
    assert issued.json()["access_token"]["access"][0]["type"] == "outgoing-payment"


async def test_reject_returns_grant_rejected_without_a_hash(
    browser: webdriver.Chrome, consent: Consent
) -> None:
    grant, _, _ = await consent.ask("reject")
    browser.get(grant["interact"]["redirect"])

    _click_and_land(browser, "reject")

    [query] = consent.receiver.calls
    assert query == {"case": "reject", "result": "grant_rejected"}
    # Polling a rejected finish grant answers as Rafiki does (3c).
    refused = await consent.api.continue_grant(grant)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == {
        "code": "request_denied",
        "description": "grant cannot be polled",
    }
