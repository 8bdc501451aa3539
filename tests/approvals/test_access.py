"""Access: the tokens a seller's grants need, asked for once however many callers need them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from opapprove.approvals.access import Access, incoming_grant
from opapprove.approvals.records import Seller
from opapprove.openpayments.exchange import Exchange
from opapprove.openpayments.models import GrantRequest
from tests.approvals.conftest import FlowKit, make_kit

pytestmark = pytest.mark.anyio


async def _the_sellers_grant(kit: FlowKit, access: Access) -> tuple[Seller, Any, GrantRequest]:
    """The default seller, its wallet address (read through ``access``) and the body of the
    grant its incoming payments need."""
    seller = kit.store.get_seller("default-seller")
    assert seller is not None
    wallet = await access.wallet(seller, seller.wallet_address_url)
    return seller, wallet, incoming_grant(seller)


async def test_side_by_side_callers_share_one_grant_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without this, the sandbox refused all but one of the byte-identical grant requests a
    # cold bulk replay sends in one second ("invalid signature"), as a replay.
    kit = make_kit(tmp_path, monkeypatch)
    sent: list[Exchange] = []
    access = Access(
        kit.store,
        kit.settings,
        transport=httpx.ASGITransport(app=kit.sandbox.asgi),
        on_exchange=sent.append,
        clock=kit.sandbox.clock,
    )
    try:
        seller, wallet, body = await _the_sellers_grant(kit, access)

        tokens = await asyncio.gather(
            *(access.grant_token(seller, wallet.auth_server, body) for _ in range(8))
        )
        fresh = await asyncio.gather(
            *(access.grant_token(seller, wallet.auth_server, body, fresh=True) for _ in range(3))
        )
        again = await access.grant_token(seller, wallet.auth_server, body)
    finally:
        await access.aclose()
        kit.store.close()
        kit.sandbox.state.close()

    grant_requests = [x for x in sent if x.method == "POST" and x.url == wallet.auth_server]
    assert [x.status for x in grant_requests] == [200, 200]
    assert len(set(tokens)) == 1 and len(set(fresh)) == 1
    assert fresh[0] != tokens[0]
    assert again == fresh[0]  # the cache holds the newest


async def test_a_failed_grant_request_fails_every_waiter_and_the_next_call_asks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = make_kit(tmp_path, monkeypatch)
    calls = 0
    real = httpx.ASGITransport(app=kit.sandbox.asgi)

    class RefuseFirstGrant(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal calls
            if request.method == "POST" and request.url.path.rstrip("/") in ("", "/auth"):
                calls += 1
                if calls == 1:
                    await asyncio.sleep(0.01)  # the others join while it is in flight
                    return httpx.Response(400, json={"error": {"code": "invalid_request"}})
            return await real.handle_async_request(request)

    access = Access(kit.store, kit.settings, transport=RefuseFirstGrant(), clock=kit.sandbox.clock)
    try:
        seller, wallet, body = await _the_sellers_grant(kit, access)
        failed = await asyncio.gather(
            *(access.grant_token(seller, wallet.auth_server, body) for _ in range(4)),
            return_exceptions=True,
        )
        token = await access.grant_token(seller, wallet.auth_server, body)
    finally:
        await access.aclose()
        kit.store.close()
        kit.sandbox.state.close()
    assert all(isinstance(x, Exception) for x in failed)
    assert len({id(x) for x in failed}) == 1  # one request, one answer for all
    assert token and calls == 2
