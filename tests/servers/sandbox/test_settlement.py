"""Outgoing payments are created unsent and settle a moment later (Rafiki 6b, 6f, 6l, 6n)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.sandbox_fixtures import Api, Sandbox, finish_params, make_sandbox

pytestmark = pytest.mark.anyio


def usd(value: int) -> dict[str, Any]:
    return {"value": str(value), "assetCode": "USD", "assetScale": 2}


async def outgoing_token(api: Api, box: Sandbox, **limits: Any) -> str:
    pending = await api.pending_outgoing_grant(limits=limits or None)
    ref = finish_params(box.state.approve(pending["interact"]["redirect"]))["interact_ref"]
    token: str = (await api.continue_grant(pending, ref)).json()["access_token"]["value"]
    return token


async def pay(api: Api, box: Sandbox, token: str, *, value: int = 100) -> httpx.Response:
    incoming = await api.incoming_payment(str(value))
    quote = await api.quote(incoming["id"])
    body = {"walletAddress": box.buyer, "quoteId": quote["id"]}
    return await api.post(box.url("/op/outgoing-payments"), body, token=token)


@pytest.mark.parametrize("row", ["6b", "6l"])
async def test_created_unsent_then_sent_at_the_next_request(sandbox: Sandbox, row: str) -> None:
    async with sandbox.client() as api:
        token = await outgoing_token(api, sandbox, debitAmount=usd(300))
        first = await pay(api, sandbox, token)
        if row == "6l":  # incomingPayment + debitAmount, no quote
            incoming = await api.incoming_payment("1")
            body = {
                "walletAddress": sandbox.buyer,
                "incomingPayment": incoming["id"],
                "debitAmount": usd(1),
            }
            created = await api.post(sandbox.url("/op/outgoing-payments"), body, token=token)
            spent_before = 100
        else:
            created, spent_before = first, 0
        assert created.status_code == 201, created.text
        payment = created.json()
        assert payment["sentAmount"]["value"] == "0" and payment["failed"] is False
        # grantSpent*: what the grant had spent before this payment.
        assert payment["grantSpentDebitAmount"] == usd(spent_before)
        assert payment["grantSpentReceiveAmount"] == usd(spent_before)
        got = (await api.get(payment["id"], token=token)).json()  # 6f/6n: one more GET
        assert got["sentAmount"] == got["debitAmount"] and got["failed"] is False


async def test_a_settle_delay_keeps_it_unsent_until_then() -> None:
    box = make_sandbox(settle_delay=2.0)
    async with box.client() as api:
        token = await outgoing_token(api, box)
        payment = (await pay(api, box, token)).json()
        balance = box.state.balance("buyer")
        assert (await api.get(payment["id"], token=token)).json()["sentAmount"] == usd(0)
        box.clock.advance(2)
        assert (await api.get(payment["id"], token=token)).json()["sentAmount"] == usd(100)
    assert box.state.balance("buyer") == balance - 100


async def test_the_fail_fault_fails_the_next_payment_and_moves_nothing(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        token = await outgoing_token(api, sandbox)
        admin = await api.http.post(sandbox.url("/_admin/settlement"), json={"fail": 1})
        assert admin.json() == {"delay": 0.0, "failNext": 1}
        balance = sandbox.state.balance("buyer")
        payment = (await pay(api, sandbox, token)).json()
        failed = (await api.get(payment["id"], token=token)).json()
        assert failed["failed"] is True and failed["sentAmount"] == usd(0)
        assert sandbox.state.balance("buyer") == balance
        # Only the next one: the one after that is sent.
        second = (await pay(api, sandbox, token)).json()
        assert (await api.get(second["id"], token=token)).json()["sentAmount"] == usd(100)
        bad = await api.http.post(sandbox.url("/_admin/settlement"), json={"delay": -1})
        assert bad.status_code == 400


async def test_an_unsent_payment_survives_a_restart(tmp_path: Path) -> None:
    from opapprove.servers.sandbox import create_app

    box = make_sandbox(tmp_path, settle_delay=60.0)
    async with box.client() as api:
        token = await outgoing_token(api, box)
        payment = (await pay(api, box, token)).json()
    box.state.close()
    again = create_app(box.state.config)
    box.clock.advance(60)
    [reloaded] = again.sandbox.outgoing_payments()
    assert payment["id"].endswith(reloaded.id)
    assert reloaded.sent == 100 and not reloaded.failed
    again.sandbox.close()
