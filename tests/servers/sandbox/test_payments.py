"""The resource server: incoming payments, quotes, outgoing payments, limits and settlement."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from opapprove.openpayments.keys import generate_private_key, public_jwk
from opapprove.servers.sandbox import FeePolicy
from tests.sandbox_fixtures import Api, FakeClock, Sandbox, finish_params, make_sandbox, reason_of

pytestmark = pytest.mark.anyio


def usd(value: int) -> dict[str, Any]:
    return {"value": str(value), "assetCode": "USD", "assetScale": 2}


def error_of(resp: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = resp.json()["error"]
    return error


async def outgoing_token(api: Api, sandbox: Sandbox, **limits: Any) -> str:
    pending = await api.pending_outgoing_grant(limits=limits or None)
    ref = finish_params(sandbox.state.approve(pending["interact"]["redirect"]))["interact_ref"]
    resp = await api.continue_grant(pending, ref)
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["access_token"]["value"]
    return token


async def pay_quote(
    api: Api, sandbox: Sandbox, quote: dict[str, Any], token: str
) -> httpx.Response:
    body = {"walletAddress": sandbox.buyer, "quoteId": quote["id"]}
    return await api.post(sandbox.url("/op/outgoing-payments"), body, token=token)


async def pay_direct(
    api: Api, sandbox: Sandbox, incoming: dict[str, Any], value: int, token: str
) -> httpx.Response:
    body = {
        "walletAddress": sandbox.buyer,
        "incomingPayment": incoming["id"],
        "debitAmount": usd(value),
    }
    return await api.post(sandbox.url("/op/outgoing-payments"), body, token=token)


async def test_debit_limit_is_enforced_across_payments(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        incoming = await api.incoming_payment("5000")
        token = await outgoing_token(api, sandbox, debitAmount=usd(2000))
        first = await pay_direct(api, sandbox, incoming, 1500, token)
        assert first.status_code == 201
        assert first.json()["grantSpentDebitAmount"] == usd(0)  # before this payment
        over = await pay_direct(api, sandbox, incoming, 600, token)
        assert over.status_code == 403
        assert error_of(over)["description"] == "unauthorized"
        assert "over the grant's limit of 2000" in reason_of(over)
        fits = await pay_direct(api, sandbox, incoming, 500, token)
        assert fits.status_code == 201
        assert fits.json()["grantSpentDebitAmount"] == usd(1500)
        spent = await api.get(sandbox.url("/op/outgoing-payment-grant"), token=token)
        assert spent.json() == {"spentDebitAmount": usd(2000), "spentReceiveAmount": usd(2000)}
    assert sandbox.state.balance("buyer") == 100_000 - 2000


async def test_interval_resets_the_limit() -> None:
    box = make_sandbox(token_lifetime=10 * 24 * 3600, clock=FakeClock(1_767_225_600.0))
    async with box.client() as api:
        incoming = await api.incoming_payment("5000")
        token = await outgoing_token(
            api, box, receiveAmount=usd(1000), interval="R3/2025-12-31T00:00:00Z/P1D"
        )
        assert (await pay_direct(api, box, incoming, 1000, token)).status_code == 201
        assert (await pay_direct(api, box, incoming, 1000, token)).status_code == 403
        box.clock.advance(24 * 3600)
        assert (await pay_direct(api, box, incoming, 1000, token)).status_code == 201
        box.clock.advance(5 * 24 * 3600)  # past the last repetition
        late = await pay_direct(api, box, incoming, 1, token)
        assert late.status_code == 403
        assert "outside every interval" in reason_of(late)
    box.recorder.assert_clean()


async def test_receiver_limit(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        allowed = await api.incoming_payment("1000")
        other = await api.incoming_payment("1000")
        token = await outgoing_token(api, sandbox, receiver=allowed["id"])
        refused = await pay_direct(api, sandbox, other, 1000, token)
        assert refused.status_code == 403
        assert allowed["id"] in reason_of(refused)
        assert (await pay_direct(api, sandbox, allowed, 1000, token)).status_code == 201


async def test_quote_expires(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        incoming = await api.incoming_payment("1000")
        quote = await api.quote(incoming["id"])
        token = await outgoing_token(api, sandbox)
        sandbox.clock.advance(301)
        resp = await pay_quote(api, sandbox, quote, token)
    assert resp.status_code == 400
    assert error_of(resp)["description"] == "invalid quote"
    assert "expired" in reason_of(resp)
    assert sandbox.state.outgoing_payments() == []


async def test_quote_is_single_use(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        incoming = await api.incoming_payment("1000")
        quote = await api.quote(incoming["id"], debitAmount=usd(400))
        token = await outgoing_token(api, sandbox)
        assert (await pay_quote(api, sandbox, quote, token)).status_code == 201
        again = await pay_quote(api, sandbox, quote, token)
        assert again.status_code == 400
        assert error_of(again)["description"] == "invalid quote"
        unknown = await pay_quote(api, sandbox, {"id": quote["id"][:-4] + "0000"}, token)
        assert unknown.status_code == 404
    assert sandbox.recorder.deviations[("create-outgoing-payment", 400, "400")] == 1


async def test_quote_of_another_wallet_is_invalid(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        incoming = await api.incoming_payment("1000", wallet="buyer")
        quote = await api.quote(incoming["id"], wallet="seller")
        token = await outgoing_token(api, sandbox)
        resp = await pay_quote(api, sandbox, quote, token)
    assert resp.status_code == 400
    assert "belongs to wallet seller" in reason_of(resp)


async def test_unaffordable_payment_fails_and_releases_the_grant(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        big = await api.incoming_payment("150000")
        token = await outgoing_token(api, sandbox, debitAmount=usd(150_000))
        resp = await pay_direct(api, sandbox, big, 150_000, token)
        assert resp.status_code == 201
        assert resp.json()["failed"] is False  # created; funding fails when it settles
        payment = (await api.get(resp.json()["id"], token=token)).json()
        assert payment["failed"] is True
        assert payment["sentAmount"] == usd(0)
        spent = await api.get(sandbox.url("/op/outgoing-payment-grant"), token=token)
        assert spent.json() == {"spentDebitAmount": None, "spentReceiveAmount": None}
        fits = await pay_direct(api, sandbox, big, 100_000, token)
        assert fits.json()["failed"] is False
        got = await api.get(payment["id"], token=token)
        assert got.json()["failed"] is True
    assert sandbox.state.balance("buyer") == 0
    assert sandbox.state.balance("seller") == 100_000


async def test_fees_are_added_to_the_debit_amount() -> None:
    box = make_sandbox(fee=FeePolicy(fixed=Decimal("0.10"), basis_points=100))
    async with box.client() as api:
        incoming = await api.incoming_payment("1000")
        by_receiver = await api.quote(incoming["id"])
        assert by_receiver["receiveAmount"] == usd(1000)
        assert by_receiver["debitAmount"] == usd(1020)
        fixed_send = await api.quote(incoming["id"], debitAmount=usd(1020))
        assert fixed_send["receiveAmount"] == usd(1000)
        token = await outgoing_token(api, box)
        created = (await pay_quote(api, box, by_receiver, token)).json()
        paid = (await api.get(created["id"], token=token)).json()
        assert paid["sentAmount"] == usd(1020) and paid["debitAmount"] == usd(1020)
    assert box.state.balance("buyer") == 100_000 - 1020
    assert box.state.balance("seller") == 1000
    box.recorder.assert_clean()


async def test_quote_request_problems(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        token = (await api.token([{"type": "quote", "actions": ["create"]}]))["value"]
        open_ended = await api.incoming_payment("1000")
        cases = [
            ({"receiver": "https://elsewhere.example/incoming-payments/1"}, "invalid receiver"),
            (
                {"receiver": open_ended["id"], "debitAmount": usd(1) | {"assetCode": "EUR"}},
                "invalid amount",
            ),
            ({"receiver": open_ended["id"], "receiveAmount": usd(5000)}, "invalid amount"),
        ]
        for extra, description in cases:
            body = {"walletAddress": sandbox.buyer, "method": "ilp", **extra}
            resp = await api.post(sandbox.url("/op/quotes"), body, token=token)
            assert resp.status_code == 400, extra
            assert error_of(resp)["description"] == description
        ip_token = (await api.token([{"type": "incoming-payment", "actions": ["create"]}]))["value"]
        no_amount = await api.post_incoming_payment(ip_token)
        body = {"walletAddress": sandbox.buyer, "receiver": no_amount.json()["id"], "method": "ilp"}
        resp = await api.post(sandbox.url("/op/quotes"), body, token=token)
        assert resp.status_code == 400
        assert "no incomingAmount" in reason_of(resp)
        get = await api.get(open_ended["id"].replace("incoming-payments", "quotes"), token=token)
        assert get.status_code == 404


async def test_incoming_payment_lifecycle(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        token = (
            await api.token([{"type": "incoming-payment", "actions": ["create", "complete"]}])
        )["value"]
        ip = await api.incoming_payment("500", token=token)
        done = await api.post(ip["id"] + "/complete", token=token)
        assert done.status_code == 200
        assert done.json()["completed"] is True
        again = await api.post(ip["id"] + "/complete", token=token)
        assert again.status_code == 409
        for body, needle in [
            ({"expiresAt": "2020-01-01T00:00:00Z"}, "past"),
            ({"incomingAmount": usd(5) | {"assetScale": 3}}, "USD/3"),
            ({"incomingAmount": usd(0)}, "greater than 0"),
            ({"colour": "red"}, "colour"),
        ]:
            resp = await api.post_incoming_payment(token, **body)
            assert resp.status_code == 400, body
            assert needle in reason_of(resp)
        unknown = await api.post(
            sandbox.url("/op/incoming-payments"),
            {"walletAddress": sandbox.url("/nobody")},
            token=token,
        )
        assert unknown.status_code == 404


async def test_list_pagination(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        token = (await api.token([{"type": "incoming-payment", "actions": ["create", "list"]}]))[
            "value"
        ]
        made = [await api.incoming_payment(str(v), token=token) for v in (100, 200, 300)]
        url = sandbox.url("/op/incoming-payments")

        async def page(**params: Any) -> dict[str, Any]:
            query = {"wallet-address": sandbox.seller, **params}
            found: dict[str, Any] = (await api.get(url, token=token, **query)).json()
            return found

        page1 = await page(first=2)
        assert [p["id"] for p in page1["result"]] == [made[2]["id"], made[1]["id"]]
        assert page1["pagination"]["hasNextPage"] is True
        assert page1["pagination"]["hasPreviousPage"] is False
        assert "methods" not in page1["result"][0]
        page2 = await page(first=2, cursor=page1["pagination"]["endCursor"])
        assert [p["id"] for p in page2["result"]] == [made[0]["id"]]
        cursor = made[0]["id"].rsplit("/", 1)[1]
        assert page2["pagination"] == {
            "hasNextPage": False,
            "hasPreviousPage": True,
            "startCursor": cursor,
            "endCursor": cursor,
        }
        back = await page(last=1, cursor=page2["pagination"]["startCursor"])
        assert [p["id"] for p in back["result"]] == [made[1]["id"]]
        bad = await api.get(url, token=token, **{"wallet-address": sandbox.seller, "first": 0})
        assert bad.status_code == 400


async def test_list_outgoing_payments(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        incoming = await api.incoming_payment("3000")
        token = await outgoing_token(api, sandbox)
        for value in (100, 200):
            assert (await pay_direct(api, sandbox, incoming, value, token)).status_code == 201
        listed = await api.get(
            sandbox.url("/op/outgoing-payments"), token=token, **{"wallet-address": sandbox.buyer}
        )
    assert listed.status_code == 200
    assert [p["debitAmount"]["value"] for p in listed.json()["result"]] == ["200", "100"]


async def test_read_only_sees_own_resources_read_all_sees_all(sandbox: Sandbox) -> None:
    other_key = generate_private_key()
    jwk = public_jwk(other_key, "other-client").to_dict()
    async with sandbox.client() as api:
        incoming = await api.incoming_payment("100")
    async with sandbox.client(other_key, "other-client") as other:

        async def token_for(actions: list[str]) -> str:
            body = {
                "access_token": {"access": [{"type": "incoming-payment", "actions": actions}]},
                "client": {"jwk": jwk},
            }
            resp = await other.post(sandbox.url("/auth"), body)
            value: str = resp.json()["access_token"]["value"]
            return value

        read = await other.get(incoming["id"], token=await token_for(["read"]))
        assert read.status_code == 404
        read_all = await other.get(incoming["id"], token=await token_for(["read-all"]))
        assert read_all.status_code == 200
        assert read_all.json()["id"] == incoming["id"]
