"""The finish-callback listener: real callbacks pay, forged and odd ones change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from opapprove.approvals.records import State
from opapprove.servers.listener import create_listener_app
from tests.approvals.conftest import FlowKit, make_kit
from tests.servers.page_support import afollow

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Harness:
    def __init__(self, kit: FlowKit, api: bool = False, api_token: str | None = None) -> None:
        self.kit = kit
        self.events: list[dict[str, Any]] = []
        self.app = create_listener_app(
            kit.flow, on_event=self.events.append, api=api, api_token=api_token
        )
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://127.0.0.1:3999"
        )

    async def callback(self, finish_url: str) -> httpx.Response:
        parts = urlsplit(finish_url)
        return await self.http.get(f"{parts.path}?{parts.query}")

    async def follow(self, finish_url: str) -> list[httpx.Response]:
        """The buyer's browser: the redirect, then each refresh until the page settles."""
        return await afollow(self.callback, finish_url)

    def snapshot(self) -> list[tuple[str, str, int]]:
        return [(p.id, str(p.state), p.version) for p in self.kit.store.list_pending()]


@pytest.fixture
async def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    kit = make_kit(tmp_path, monkeypatch)
    h = Harness(kit)
    yield h
    await h.http.aclose()
    await kit.flow.aclose()
    kit.sandbox.recorder.assert_clean()
    kit.store.close()


async def _start(h: Harness, offer: str = "o1") -> Any:
    return await h.kit.flow.start_quote(
        offer_id=offer, buyer_wallet=h.kit.sandbox.buyer, amount="5.00"
    )


async def test_callback_answers_at_once_then_shows_done_page(harness: Harness) -> None:
    pending = await _start(harness)
    pages = await harness.follow(harness.kit.finish_url(pending.interact_redirect))
    assert all(page.status_code == 200 for page in pages)
    assert 'data-state="approved"' in pages[0].text
    assert "Approved — completing the payment…" in pages[0].text
    assert '<meta http-equiv="refresh"' in pages[0].text
    assert 'data-state="completed"' in pages[-1].text and "Payment complete" in pages[-1].text
    assert harness.kit.store.get_pending(pending.id).state == State.COMPLETED
    assert [e["event"] for e in harness.events] == ["finished", "page_shown"]


async def test_rejected_page_keeps_the_grant_open(harness: Harness) -> None:
    pending = await _start(harness)
    resp = await harness.callback(harness.kit.finish_url(pending.interact_redirect, reject=True))
    assert resp.status_code == 200 and 'data-state="rejected"' in resp.text
    assert harness.kit.store.get_pending(pending.id).state == State.AWAITING_APPROVAL
    assert harness.events[-1] == {
        "event": "wallet_result",
        "pendingId": pending.id,
        "result": "grant_rejected",
        "verified": False,
        "state": "awaiting_approval",
    }


async def test_expired_page(harness: Harness) -> None:
    pending = await _start(harness)
    harness.kit.sandbox.clock.advance(601)
    resp = await harness.callback(harness.kit.finish_url(pending.interact_redirect))
    assert resp.status_code == 410 and "expired" in resp.text
    assert harness.kit.store.get_pending(pending.id).state == State.EXPIRED


FORGED = [
    "bad_hash",
    "hash_for_other_grant",
    "unknown_pending",
    "reused_interact_ref",
    "after_cancel",
    "after_expiry",
    "oversize_query",
    "malformed_query",
    "repeated_param",
    "no_pending_id",
    "no_ref_no_result",
    "missing_hash",
]


@pytest.mark.parametrize("case", FORGED)
async def test_forged_and_odd_callbacks_are_refused_without_state_change(
    harness: Harness, case: str
) -> None:
    kit = harness.kit
    a = await _start(harness, "a")
    b = await _start(harness, "b")
    url_a = kit.finish_url(a.interact_redirect)
    q = dict(httpx.URL(url_a).params)
    base = "/payments/finish"
    if case == "after_cancel":
        await kit.flow.cancel(a.id)
    if case == "after_expiry":
        kit.sandbox.clock.advance(kit.settings.approval_timeout + 1)
        with pytest.raises(Exception):  # noqa: B017 - marks it expired
            await kit.flow.replay(a.id)
    if case == "reused_interact_ref":
        assert (await harness.callback(url_a)).status_code == 200
    before = harness.snapshot()
    payments_before = len(kit.sandbox.state.outgoing_payments())
    target = {
        "bad_hash": f"{base}?pendingId={a.id}&interact_ref={q['interact_ref']}&hash=AAAA",
        "hash_for_other_grant": httpx.URL(
            base, params={"pendingId": b.id, "interact_ref": q["interact_ref"], "hash": q["hash"]}
        ),
        "unknown_pending": httpx.URL(base, params={**q, "pendingId": "01NOSUCHGRANT"}),
        "reused_interact_ref": httpx.URL(
            base, params={"pendingId": b.id, "interact_ref": q["interact_ref"], "hash": q["hash"]}
        ),
        "after_cancel": httpx.URL(base, params=q),
        "after_expiry": httpx.URL(base, params=q),
        "oversize_query": f"{base}?pendingId={a.id}&hash={'A' * 5000}",
        "malformed_query": f"{base}?pendingId=%ZZ%&interact_ref=%%%&hash=",
        "repeated_param": f"{base}?pendingId={a.id}&pendingId={b.id}&interact_ref=x&hash=y",
        "no_pending_id": f"{base}?interact_ref=x&hash=y",
        "no_ref_no_result": f"{base}?pendingId={a.id}",
        "missing_hash": f"{base}?pendingId={a.id}&interact_ref={q['interact_ref']}",
    }[case]
    resp = await harness.http.get(str(target))
    assert resp.status_code >= 400, resp.text
    assert "<main" in resp.text and "Traceback" not in resp.text
    assert harness.snapshot() == before
    assert len(kit.sandbox.state.outgoing_payments()) == payments_before
    assert harness.events[-1]["event"] in ("callback_refused", "expired", "rejected")


async def test_seed_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kit = make_kit(tmp_path, monkeypatch)
    h = Harness(kit, api=True, api_token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    start = {
        "sellerId": "default-seller",
        "buyerWalletAddressUrl": kit.sandbox.buyer,
        "amount": "100",
    }
    resp = await h.http.post("/offers/1/quotes/start", json=start)
    assert resp.status_code == 401
    resp = await h.http.post("/offers/1/quotes/start", json=start, headers=auth)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"success", "redirectUrl", "pendingId", "paymentUrl"}
    assert body["success"] is True and body["redirectUrl"] == body["paymentUrl"]
    seller_body = {
        "id": "s2",
        "walletAddressUrl": kit.sandbox.seller,
        "keyId": kit.sandbox.key_id,
        "privateKeyPath": str(tmp_path / "seller.pem"),
    }
    resp = await h.http.post("/sellers", json=seller_body, headers=auth)
    assert resp.status_code == 201 and resp.json()["success"] is True
    assert kit.store.get_seller("s2") is not None
    resp = await h.http.post("/sellers", json={"id": "x"}, headers=auth)
    assert resp.status_code == 400 and resp.json()["success"] is False
    resp = await h.http.post(
        "/offers/1/quotes/start", json={"buyerWalletAddressUrl": "", "amount": "1"}, headers=auth
    )
    assert resp.status_code == 400
    assert "Configure wallet address first" in resp.json()["error"]
    await h.http.aclose()
    await kit.flow.aclose()
    kit.store.close()


async def test_seed_route_refuses_a_quote_over_max_debit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from decimal import Decimal

    from opapprove.servers.sandbox import FeePolicy

    kit = make_kit(tmp_path, monkeypatch, fee=FeePolicy(0, Decimal("0.05")))
    h = Harness(kit, api=True, api_token="s3cret")
    h.http.headers["Authorization"] = "Bearer s3cret"
    body = {"buyerWalletAddressUrl": kit.sandbox.buyer, "amount": "10.00", "maxDebit": "10.04"}
    resp = await h.http.post("/offers/1/quotes/start", json=body)
    assert resp.status_code == 422
    answer = resp.json()
    assert answer["success"] is False and "over --max-debit 10.04 USD" in answer["error"]
    assert kit.store.get_pending(answer["pendingId"]).state == State.CANCELLED
    resp = await h.http.post("/offers/2/quotes/start", json=body | {"maxDebit": "10.05"})
    assert resp.status_code == 200 and resp.json()["success"] is True
    await h.http.aclose()
    await kit.flow.aclose()
    kit.store.close()


@pytest.mark.parametrize(
    ("query", "status", "state"),
    [
        ("pendingId={id}&interact_ref=x&hash=AAAA", 400, "refused"),
        ("pendingId=01NOSUCHGRANT&interact_ref=x&hash=y", 400, "refused"),
        ("interact_ref=x", 400, "refused"),
        ("pendingId={id}&hash=" + "A" * 5000, 414, "refused"),
        ("pendingId={id}&result=grant_rejected", 200, "rejected"),
        (
            "pendingId={id}&result=invalid_interaction&message=invalid+interaction",
            200,
            "link_closed",
        ),
    ],
)
async def test_answers_are_json_for_json_callers_and_html_for_browsers(
    harness: Harness, query: str, status: int, state: str
) -> None:
    pending = await _start(harness)
    url = "/payments/finish?" + query.format(id=pending.id)
    as_json = await harness.http.get(url, headers={"Accept": "application/json"})
    as_page = await harness.http.get(url, headers={"Accept": "text/html,*/*;q=0.8"})
    assert as_json.status_code == as_page.status_code == status
    assert as_json.headers["content-type"].startswith("application/json")
    assert as_json.json()["state"] == state and as_json.json()["success"] is (status < 400)
    assert as_page.headers["content-type"].startswith("text/html")
    assert f'data-state="{state}"' in as_page.text
    assert harness.kit.store.get_pending(pending.id).state == State.AWAITING_APPROVAL


async def test_no_exception_escapes_a_handler(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending = await _start(harness)
    url = harness.kit.finish_url(pending.interact_redirect)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(harness.kit.flow, "accept_approval", broken)
    page = await harness.callback(url)
    assert page.status_code == 500 and 'data-state="error"' in page.text
    assert "Traceback" not in page.text and "a bug" not in page.text
    monkeypatch.undo()

    async def crashing(pending_id: str) -> Any:
        raise RuntimeError("a bug in the background")

    monkeypatch.setattr(harness.kit.flow, "complete", crashing)
    pages = await harness.follow(url)
    assert pages[-1].status_code == 502 and "could not be finished" in pages[-1].text
    (failed,) = [e for e in harness.events if e["event"] == "failed"]
    assert "a bug in the background" in failed["error"] and failed["background"] is True
    assert harness.events[-1] == {"event": "page_shown", "pendingId": pending.id, "state": "error"}


def test_the_readme_says_what_each_result_value_does() -> None:
    from opapprove.approvals.results import KNOWN

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for value in KNOWN:
        assert f"| `{value}`" in readme, value
