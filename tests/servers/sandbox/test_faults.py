"""Operator knobs: per-route faults (status, delay, dropped connection) and latency."""

from __future__ import annotations

import httpx
import pytest

from opapprove.servers.sandbox import SandboxError
from tests.sandbox_fixtures import Api, Sandbox

pytestmark = pytest.mark.anyio


async def quote_body(api: Api) -> tuple[dict[str, str], str]:
    incoming = await api.incoming_payment("100")
    token = (await api.token([{"type": "quote", "actions": ["create"]}]))["value"]
    return {
        "walletAddress": api.wallet_url("buyer"),
        "receiver": incoming["id"],
        "method": "ilp",
    }, token


async def test_status_fault_for_a_number_of_times(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        body, token = await quote_body(api)
        sandbox.state.set_fault("create-quote", status=503, times=2)
        for _ in range(2):
            resp = await api.post(sandbox.url("/op/quotes"), body, token=token)
            assert resp.status_code == 503
            assert resp.headers["x-sandbox-fault"] == "status"
        assert (await api.post(sandbox.url("/op/quotes"), body, token=token)).status_code == 201
    assert sandbox.state.quotes and len(sandbox.state.quotes) == 1


async def test_faults_by_path_pattern_over_the_admin_api(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        set_ = await api.post(sandbox.url("/_admin/faults"), {"GET /buyer*": {"status": 500}})
        assert set_.json()["faults"] == {"GET /buyer*": {"status": 500}}
        assert (await api.get(sandbox.buyer)).status_code == 500
        assert (await api.get(sandbox.seller)).status_code == 200
        assert (await api.http.delete(sandbox.url("/_admin/faults"))).status_code == 204
        assert (await api.get(sandbox.buyer)).status_code == 200
        bad = await api.post(
            sandbox.url("/_admin/faults"), {"x": {"status": 500, "drop": "after_commit"}}
        )
        assert bad.status_code == 400
        assert "exactly one" in bad.json()["error"]["description"]


async def test_delay_and_latency_use_the_configured_sleep(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        sandbox.state.set_fault("get-wallet-address", delay=2.0, times=1)
        assert (await api.get(sandbox.buyer)).status_code == 200
        assert sandbox.sleeps == [2.0]
        latency = await api.post(sandbox.url("/_admin/latency"), {"seconds": 0.25})
        assert latency.json() == {"latency": 0.25}
        await api.get(sandbox.buyer)
        await api.get(sandbox.seller + "/jwks.json")
        assert sandbox.sleeps == [2.0, 0.25, 0.25]


# A fault names its route either way: "METHOD /path" or the operationId.
@pytest.mark.parametrize(
    ("route", "mode", "quotes_kept"),
    [("POST /op/quotes", "before_commit", 0), ("create-quote", "after_commit", 1)],
    ids=["before-commit-changes-nothing", "after-commit-keeps-the-quote"],
)
async def test_a_dropped_connection(
    sandbox: Sandbox, route: str, mode: str, quotes_kept: int
) -> None:
    async with sandbox.client() as api:
        body, token = await quote_body(api)
        sandbox.state.set_fault(route, drop=mode, times=1)
        with pytest.raises(httpx.RemoteProtocolError):
            await api.post(sandbox.url("/op/quotes"), body, token=token)
    assert len(sandbox.state.quotes) == quotes_kept


async def test_drop_after_commit_over_loopback_closes_the_socket(sandbox: Sandbox) -> None:
    """uvicorn would answer 500; the served sandbox closes the connection with no answer."""
    with sandbox.served() as server:
        async with sandbox.client(base=server.url, transport=httpx.AsyncHTTPTransport()) as api:
            incoming = await api.incoming_payment("100")
            pending = await api.pending_outgoing_grant()
            ref = sandbox.state.approve(pending["interact"]["redirect"]).split("interact_ref=")[1]
            token = (await api.continue_grant(pending, ref)).json()["access_token"]["value"]
            sandbox.state.set_fault("create-outgoing-payment", drop="after_commit", times=1)
            body = {
                "walletAddress": api.wallet_url("buyer"),
                "incomingPayment": incoming["id"],
                "debitAmount": {"value": "100", "assetCode": "USD", "assetScale": 2},
            }
            with pytest.raises(httpx.TransportError):
                await api.post(f"{server.url}/op/outgoing-payments", body, token=token)
            # The payment exists and the money moved: the client must look before retrying.
            payments = sandbox.state.outgoing_payments()
            assert len(payments) == 1 and not payments[0].failed
            listed = await api.get(
                f"{server.url}/op/outgoing-payments",
                token=token,
                **{"wallet-address": api.wallet_url("buyer")},
            )
            assert [p["id"].rsplit("/", 1)[1] for p in listed.json()["result"]] == [payments[0].id]
    assert sandbox.state.balance("buyer") == 100_000 - 100


def test_bad_fault_specs_are_refused(sandbox: Sandbox) -> None:
    for kwargs in (
        {"status": 99},
        {"delay": -1},
        {"drop": "sometimes"},
        {},
        {"status": 500, "times": 0},
    ):
        with pytest.raises(SandboxError):
            sandbox.state.set_fault("create-quote", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(SandboxError):
        sandbox.state.set_latency(-1)
