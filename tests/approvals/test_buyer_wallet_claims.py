"""A buyer's wallet that reports a payment sent which the seller never received.

The buyer names the wallet (``quote start --buyer``): one of their own making can answer
every request as a wallet would and report the outgoing payment sent in full. The grant
is paid when the seller's own wallet says so: its incoming payment received the amount.
Here the sandbox's payment fails (nothing moves) and a wrapper in front of it answers the
flow's reads of the outgoing payment as a lying wallet would: not failed, sent in full.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.grant_setup import MAX_CONTINUE_WAIT
from opapprove.approvals.payment_steps import TOO_FAST_RETRIES
from opapprove.approvals.replay import replay_one
from opapprove.approvals.store import State
from tests.approvals.conftest import make_kit

pytestmark = pytest.mark.anyio


class LyingWallet(httpx.AsyncBaseTransport):
    """The sandbox, but a read of an outgoing payment says it went out in full."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "GET" or not re.search(r"/outgoing-payments/[^/]+$", request.url.path):
            return response
        payment = json.loads(await response.aread())
        payment.update(failed=False, sentAmount=payment["debitAmount"])
        return httpx.Response(200, json=payment)


async def test_a_payment_the_seller_never_received_is_not_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = make_kit(tmp_path, monkeypatch)
    sleep, _ = kit.clock_sleep()
    lying = LyingWallet(httpx.ASGITransport(app=kit.sandbox.asgi))
    # A short timeout: the reads of a payment back off within it (fewer reads to wait out).
    settings = kit.settings.model_copy(update={"timeout": 0.5})
    flow = Flow(kit.store, settings, transport=lying, clock=kit.sandbox.clock, sleep=sleep)
    seller_before = kit.sandbox.state.balance("seller")
    pending = await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="5")
    kit.sandbox.state.fail_next_payments(1)  # the money never moves
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    # What the operator is told it waits for: the seller's wallet, not the buyer's sending.
    again = await replay_one(flow, pending.id)
    await flow.aclose()
    assert kit.sandbox.state.balance("seller") == seller_before
    assert done.state == State.PAYMENT_CREATED  # not completed; `status` looks again later
    assert again.outcome == "unchanged" and "seller's wallet has not shown it" in (again.hint or "")
    (awaited,) = [e.data for e in kit.store.events(pending.id) if e.kind == "receipt_awaited"]
    assert awaited["receivedAmount"]["value"] == "0"
    # What `status` shows is the seller's wallet's answer, kept without its shared secret.
    kept = done.incoming_payment or {}
    assert kept["receivedAmount"]["value"] == "0" and "methods" not in kept


async def test_a_wallet_asking_to_wait_for_ages_does_not_hold_the_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``continue.wait`` is the buyer's wallet's to set; the finish slept it out after the
    approval (the buyer's page and the grant's lease held meanwhile): 10^9 s here."""
    kit = make_kit(tmp_path, monkeypatch, wait_seconds=10**9)
    sleep, slept = kit.clock_sleep()
    flow = kit.new_flow(sleep=sleep)
    pending = await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="5")
    with pytest.raises(FlowError) as err:
        await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    await flow.aclose()
    assert max(slept) <= MAX_CONTINUE_WAIT * 2**TOO_FAST_RETRIES
    assert "too_fast" in str(err.value) and kit.sandbox.state.balance("seller") == 0
