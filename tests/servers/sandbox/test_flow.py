"""The whole approval flow, in-process (httpx.ASGITransport) and over real loopback HTTP."""

from __future__ import annotations

import httpx
import pytest

from opapprove.openpayments.interaction import verify_finish_hash
from tests.sandbox_fixtures import Api, Sandbox, finish_params

pytestmark = pytest.mark.anyio


async def run_full_flow(api: Api, sandbox: Sandbox) -> None:
    state = sandbox.state
    buyer_before, seller_before = state.balance("buyer"), state.balance("seller")

    # Wallet documents and keys, unsigned.
    buyer = (await api.get(api.wallet_url("buyer"))).json()
    seller = (await api.get(api.wallet_url("seller"))).json()
    assert buyer["authServer"] == f"{api.base}/auth"
    assert buyer["resourceServer"] == f"{api.base}/op"
    assert (buyer["assetCode"], buyer["assetScale"], seller["publicName"]) == ("USD", 2, "Seller")
    jwks = (await api.get(f"{seller['id']}/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [sandbox.key_id]

    # Non-interactive grants: incoming payment on the seller, quote on the buyer.
    ip_token = await api.token([{"type": "incoming-payment", "actions": ["create", "read"]}])
    assert ip_token["manage"].startswith(f"{api.base}/auth/token/")
    incoming = await api.incoming_payment("1234", token=ip_token["value"])
    assert incoming["completed"] is False and incoming["receivedAmount"]["value"] == "0"
    assert incoming["methods"][0]["ilpAddress"] == "test.opapprove.seller"
    quote_token = await api.token([{"type": "quote", "actions": ["create", "read"]}])
    quote = await api.quote(incoming["id"], token=quote_token["value"])
    assert quote["debitAmount"] == {"value": "1234", "assetCode": "USD", "assetScale": 2}
    assert quote["receiver"] == incoming["id"]

    # Interactive outgoing-payment grant, approved through the admin route.
    nonce = "nonce-for-the-hash"
    pending = await api.pending_outgoing_grant(
        limits={"debitAmount": quote["debitAmount"], "receiver": incoming["id"]}, nonce=nonce
    )
    assert pending["interact"]["redirect"].startswith(f"{api.base}/interact/")
    approved = await api.post(
        f"{api.base}/_admin/approve", {"redirect": pending["interact"]["redirect"]}
    )
    finish_url = approved.json()["finish_url"]
    assert finish_url.startswith("http://127.0.0.1:3999/finish?pendingId=42&hash=")
    params = finish_params(finish_url)
    verify_finish_hash(
        params["hash"],
        nonce,
        pending["interact"]["finish"],
        params["interact_ref"],
        buyer["authServer"],
    )

    # Continue with interact_ref: the access token, once.
    cont = await api.continue_grant(pending, params["interact_ref"])
    assert cont.status_code == 200, cont.text
    op_token = cont.json()["access_token"]
    assert op_token["access"][0]["type"] == "outgoing-payment"

    # The payment moves exactly the debit amount and completes the incoming payment.
    resp = await api.post(
        f"{api.base}/op/outgoing-payments",
        {"walletAddress": buyer["id"], "quoteId": quote["id"], "metadata": {"order": "42"}},
        token=op_token["value"],
    )
    assert resp.status_code == 201, resp.text
    payment = resp.json()
    # As on Rafiki (6b): created unsent, nothing spent before it; sent a moment later.
    assert payment["failed"] is False
    assert payment["sentAmount"]["value"] == "0"
    assert payment["grantSpentDebitAmount"]["value"] == "0"
    sent = (await api.get(payment["id"], token=op_token["value"])).json()
    assert sent["sentAmount"]["value"] == "1234" and sent["failed"] is False
    assert state.balance("buyer") == buyer_before - 1234
    assert state.balance("seller") == seller_before + 1234

    got = (await api.get(incoming["id"], token=ip_token["value"])).json()
    assert got["completed"] is True and got["receivedAmount"]["value"] == "1234"
    public = (await api.get(incoming["id"])).json()
    assert public == {"authServer": buyer["authServer"], "receivedAmount": got["receivedAmount"]}
    fetched = await api.get(payment["id"], token=op_token["value"])
    assert fetched.json()["id"] == payment["id"]
    spent = await api.get(f"{api.base}/op/outgoing-payment-grant", token=op_token["value"])
    assert spent.json()["spentDebitAmount"]["value"] == "1234"


async def test_full_flow_in_process(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        await run_full_flow(api, sandbox)
    seen = {op for op, _ in sandbox.recorder.seen}
    assert {
        "get-wallet-address",
        "get-wallet-address-keys",
        "post-request",
        "post-continue",
        "create-incoming-payment",
        "get-incoming-payment",
        "create-quote",
        "create-outgoing-payment",
        "get-outgoing-payment",
        "get-outgoing-payment-grant",
    } <= seen


async def test_full_flow_over_loopback(sandbox: Sandbox) -> None:
    with sandbox.served() as server:
        async with sandbox.client(base=server.url, transport=httpx.AsyncHTTPTransport()) as api:
            await run_full_flow(api, sandbox)
    assert sandbox.recorder.seen[("create-outgoing-payment", 201)] == 1


async def test_consent_page_click_through(sandbox: Sandbox) -> None:
    """The front channel as Rafiki's (1b-1d, 3e): interact URL -> IdP page with a session
    cookie -> the decision posted there -> /interact/{id}/{nonce}/finish -> the client."""
    async with sandbox.client() as api:
        incoming = await api.incoming_payment("1234")
        pending = await api.pending_outgoing_grant(
            limits={
                "debitAmount": {"value": "1234", "assetCode": "USD", "assetScale": 2},
                "receiver": incoming["id"],
            }
        )
        redirect = pending["interact"]["redirect"]
        interact_id, nonce = redirect.rsplit("/", 2)[-2:]
        start = await api.http.get(redirect, headers={"Accept": "*/*"})
        assert start.status_code == 302
        idp = httpx.URL(start.headers["location"])
        assert str(idp).startswith(sandbox.url("/idp/?"))
        assert dict(idp.params) == {
            "interactId": interact_id,
            "nonce": nonce,
            "clientName": "Seller",
            "clientUri": sandbox.seller,
        }
        assert start.cookies  # the session the finish step needs
        page = await api.http.get(str(idp))
        assert page.status_code == 200
        html = page.text
        for needle in (
            'id="approve"',
            'id="reject"',
            "12.34 USD",
            "Seller",
            sandbox.seller,
            sandbox.buyer,
            incoming["id"],
        ):
            assert needle in html
        click = await api.http.post(
            sandbox.url("/idp/decide"),
            content=f"interactId={interact_id}&nonce={nonce}&decision=accept",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert click.status_code == 303
        assert click.headers["location"] == f"{redirect}/finish"
        done = await api.http.get(click.headers["location"])
        assert done.status_code == 302
        params = finish_params(done.headers["location"])
        assert set(params) == {"pendingId", "hash", "interact_ref"}
        cont = await api.continue_grant(pending, params["interact_ref"])
        assert cont.status_code == 200
        # Without the browser's session the finish step is refused, as on Rafiki.
        api.http.cookies.clear()
        stranger = await api.http.get(f"{redirect}/finish")
        assert stranger.status_code == 401
        assert stranger.json()["error"] == {
            "code": "invalid_request",
            "description": "invalid session",
        }
        # The decided interaction, opened again, sends the browser back (1f).
        again = await api.http.get(redirect)
        assert again.status_code == 302
        assert finish_params(again.headers["location"])["result"] == "invalid_interaction"
