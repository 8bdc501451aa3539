"""A webhook receiver that answers slowly or at length, over real loopback HTTP.

The sender holds a delivery for ``timeout + HOLD_MARGIN`` seconds; an exchange that lasts
longer lets another sender (another process's ``pending replay``) take the same delivery
and send it again while the first is still on the wire. httpx's timeout is per read, so
a receiver trickling its answer a byte at a time never trips it: the whole exchange has to
end within the timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opapprove.approvals.store import Store
from opapprove.approvals.webhooks import WebhookSender
from opapprove.settings import load_settings
from tests.raw_http import raw_server

pytestmark = pytest.mark.anyio

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_a_receiver_trickling_its_answer_is_timed_out_within_the_hold(
    tmp_path: Path,
) -> None:
    # Each byte comes 0.05 s after the last, well within the 0.5 s timeout; the answer
    # takes ~2.3 s whole, past the timeout.
    async with raw_server(b"", OK, pause=0.05) as base:
        url = f"{base}/hooks"
        settings = load_settings(
            store=tmp_path / "store.db", allow_http=True, webhook_url=url, timeout=0.5
        )
        store = Store(tmp_path / "store.db")
        pending = store.create_pending(
            seller_id="s", offer_id="o", buyer_wallet="http://127.0.0.1:1/buyer", amount="1"
        )
        sender = WebhookSender(settings, store, backoff=0)
        sender.retries = 0
        result = await sender.notify("payment.completed", pending, {})
        await sender.aclose()
        store.close()
    assert result is not None
    assert (result.delivered, result.retryable) == (False, True)
    assert result.error and result.error.startswith("timed out")


async def test_a_redirect_is_recorded_without_its_credentials(tmp_path: Path) -> None:
    # The attempt's error goes into the grant's events, `pending show` and `--json`.
    answer = (
        b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n"
        b"Location: https://hook-user:hook-pass@other.example/in?token=tok-SECRET\r\n\r\n"
    )
    async with raw_server(answer) as base:
        url = f"{base}/hooks"
        settings = load_settings(store=tmp_path / "store.db", allow_http=True, webhook_url=url)
        store = Store(tmp_path / "store.db")
        pending = store.create_pending(
            seller_id="s", offer_id="o", buyer_wallet="http://127.0.0.1:1/buyer", amount="1"
        )
        sender = WebhookSender(settings, store)
        result = await sender.notify("payment.completed", pending, {})
        await sender.aclose()
        events = [e.data for e in store.events(pending.id) if e.kind == "webhook_attempt"]
        store.close()
    assert result is not None and not result.retryable
    assert result.error == "302 redirect to https://other.example/in (not followed)"
    assert "SECRET" not in str(events) and "hook-pass" not in str(events)
