"""Marketplace webhooks against a real receiver on loopback: signed, retried, sent once."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import State
from opapprove.approvals.replay import replay_many
from opapprove.approvals.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    WebhookSender,
    WebhookSignatureError,
    sign,
    verify_signature,
)
from opapprove.settings import Settings, load_settings
from tests.approvals.conftest import FlowKit, make_kit
from tests.approvals.webhook_receiver import PATH, Receiver

pytestmark = pytest.mark.anyio

SECRET = "whsec-test-0123456789abcdef"


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _settings(kit: FlowKit, url: str | None, **extra: Any) -> Settings:
    return load_settings(
        store=kit.tmp / "store.db",
        allow_http=True,
        base_url="http://127.0.0.1:3999",
        webhook_url=url,
        webhook_secret=SECRET,
        **extra,
    )


@pytest.fixture
async def hooked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> Any:
    """A kit whose Flow sends webhooks to the receiver (3 retries, fake backoff sleeps)."""
    kit = make_kit(tmp_path, monkeypatch)
    sleeps = Sleeps()
    settings = _settings(kit, url, webhook_retries=3)
    sender = WebhookSender(settings, kit.store, sleep=sleeps)
    flow = Flow(
        kit.store,
        settings,
        transport=kit.flow.transport,
        clock=kit.sandbox.clock,
        on_event=sender.handle,
    )
    yield kit, flow, sender, sleeps
    await flow.aclose()
    await sender.aclose()
    kit.sandbox.recorder.assert_clean()
    kit.store.close()


def _attempts(kit: FlowKit, pending_id: str) -> list[dict[str, Any]]:
    return [e.data for e in kit.store.events(pending_id) if e.kind == "webhook_attempt"]


async def test_events_are_signed_sent_once_and_verifiable(hooked: Any, receiver: Receiver) -> None:
    kit, flow, sender, _ = hooked
    pending = await flow.start_quote(
        offer_id="offer-7", buyer_wallet=kit.sandbox.buyer, amount="12.34"
    )
    (needed,) = receiver.of_type("approval.needed")
    assert needed.json == {
        "type": "approval.needed",
        "pendingId": pending.id,
        "offerId": "offer-7",
        "status": "awaiting_approval",
        "approvalUrl": pending.interact_redirect,
    }
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect))
    assert done.state == State.COMPLETED
    (paid,) = receiver.of_type("payment.completed")
    # Exactly the seed's body.
    assert paid.json == {
        "type": "payment.completed",
        "pendingId": pending.id,
        "offerId": "offer-7",
        "status": "paid",
    }
    assert paid.headers["content-type"] == "application/json"
    header = paid.headers[SIGNATURE_HEADER.lower()]
    verify_signature(SECRET, header, paid.body)  # raises if it does not check out
    assert header.startswith("t=") and ",v1=" in header
    assert abs(int(header.split(",")[0][2:]) - time.time()) < 3600
    event_ids = {r.headers[EVENT_ID_HEADER.lower()] for r in receiver.requests}
    assert len(event_ids) == 2

    # The same event again, a replay, and a sweep of undelivered ones: nothing more is sent.
    assert await sender.notify("payment.completed", done, {}) is None
    await sender.handle("payment.completed", done, {})
    assert (await flow.replay(pending.id)).state == State.COMPLETED
    await replay_many(flow, [pending.id], webhooks=sender)
    assert await sender.deliver_pending() == []
    assert len(receiver.requests) == 2
    assert [d.event_type for d in kit.store.webhook_deliveries(pending_id=pending.id)] == [
        "approval.needed",
        "payment.completed",
    ]
    attempts = _attempts(kit, pending.id)
    assert [(a["type"], a["status"], a["outcome"]) for a in attempts] == [
        ("approval.needed", 200, "delivered"),
        ("payment.completed", 200, "delivered"),
    ]


async def test_500s_are_retried_with_backoff_then_delivered(
    hooked: Any, receiver: Receiver
) -> None:
    kit, flow, _sender, sleeps = hooked
    pending = await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1")
    receiver.reset()
    receiver.answer(500, 502, 503)
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect))
    assert done.state == State.COMPLETED
    sent = receiver.of_type("payment.completed")
    assert len(sent) == 4
    assert len({r.headers[EVENT_ID_HEADER.lower()] for r in sent}) == 1  # one event
    assert len({r.body for r in sent}) == 1
    for request in sent:
        verify_signature(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body)
    assert sleeps == [0.5, 1.0, 2.0]
    attempts = [a for a in _attempts(kit, pending.id) if a["type"] == "payment.completed"]
    assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [
        (1, 500, "retry"),
        (2, 502, "retry"),
        (3, 503, "retry"),
        (4, 200, "delivered"),
    ]
    assert attempts[0]["error"].startswith("500")
    (delivery,) = kit.store.webhook_deliveries(pending_id=pending.id)[1:]
    assert delivery.delivered and delivery.attempts == 4 and delivery.last_error is None
    # The secret is nowhere in the audit trail.
    trail = json.dumps([e.data for e in kit.store.events(pending.id)])
    assert SECRET not in trail


async def test_giving_up_leaves_it_for_deliver_pending(hooked: Any, receiver: Receiver) -> None:
    kit, flow, sender, _sleeps = hooked
    receiver.answer(*[500] * 4)
    pending = await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1")
    # The webhook failed every time; the flow did not notice.
    assert pending.state == State.AWAITING_APPROVAL
    assert len(receiver.requests) == 4
    (delivery,) = kit.store.webhook_deliveries(undelivered=True)
    assert delivery.attempts == 4 and delivery.last_error.startswith("500")
    assert _attempts(kit, pending.id)[-1]["outcome"] == "gave_up"
    results = await sender.deliver_pending()
    assert [(r.delivered, r.attempts) for r in results] == [(True, 1)]
    assert len(receiver.requests) == 5
    assert len({r.headers[EVENT_ID_HEADER.lower()] for r in receiver.requests}) == 1
    assert results[0].event_id == receiver.requests[-1].headers[EVENT_ID_HEADER.lower()]
    assert await sender.deliver_pending() == []
    assert len(receiver.requests) == 5


async def test_4xx_is_not_retried_but_408_and_429_are(hooked: Any, receiver: Receiver) -> None:
    kit, flow, _sender, sleeps = hooked
    receiver.answer(400)
    pending = await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1")
    assert len(receiver.requests) == 1 and sleeps == []
    (attempt,) = _attempts(kit, pending.id)
    assert (attempt["status"], attempt["outcome"]) == (400, "gave_up")

    receiver.reset()
    receiver.answer(408, 429, headers={"Retry-After": "7"})
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect))
    assert done.state == State.COMPLETED
    assert [r.json["type"] for r in receiver.requests] == ["payment.completed"] * 3
    assert sleeps == [7.0, 7.0]  # the receiver's Retry-After wins over the backoff


async def test_failure_events_and_their_status(hooked: Any, receiver: Receiver) -> None:
    kit, flow, _sender, _ = hooked
    rejected = await flow.start_quote(offer_id="r", buyer_wallet=kit.sandbox.buyer, amount="1")
    with pytest.raises(FlowError):
        await flow.finish_url(kit.finish_url(rejected.interact_redirect, reject=True))
    cancelled = await flow.start_quote(offer_id="c", buyer_wallet=kit.sandbox.buyer, amount="1")
    await flow.cancel(cancelled.id)
    await flow.cancel(cancelled.id)  # idempotent: no second event
    expired = await flow.start_quote(offer_id="e", buyer_wallet=kit.sandbox.buyer, amount="1")
    kit.sandbox.clock.advance(kit.settings.approval_timeout + 1)
    with pytest.raises(FlowError):
        await flow.replay(expired.id)
    failed = {r.json["offerId"]: r.json for r in receiver.of_type("payment.failed")}
    # An unverified rejection redirect tells the marketplace nothing (it may be forged).
    assert {k: (v["status"], v["reason"]) for k, v in failed.items()} == {
        "c": ("cancelled", "cancelled"),
        "e": ("expired", "expired"),
    }
    assert set(failed["c"]) == {"type", "pendingId", "offerId", "status", "reason"}
    assert len(receiver.of_type("payment.failed")) == 2


async def test_a_new_approval_url_is_a_new_event(hooked: Any, receiver: Receiver) -> None:
    kit, flow, sender, _ = hooked
    pending = await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1")
    again = kit.store.get_pending(pending.id)
    assert await sender.notify("approval.needed", again, {}) is None  # same URL: a repeat
    moved = kit.store.update(pending.id, interact_redirect=pending.interact_redirect + "x")
    result = await sender.notify("approval.needed", moved, {})
    assert result is not None and result.delivered
    urls = [r.json["approvalUrl"] for r in receiver.of_type("approval.needed")]
    assert urls == [pending.interact_redirect, pending.interact_redirect + "x"]


async def test_concurrent_handles_of_one_event_send_once(hooked: Any, receiver: Receiver) -> None:
    kit, _flow, sender, _ = hooked
    pending = kit.store.create_pending(
        seller_id="s", offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1"
    )
    other = WebhookSender(sender_settings(sender, kit), kit.store)
    results = await asyncio.gather(
        *(s.notify("payment.completed", pending, {}) for s in (sender, other, sender, other))
    )
    assert sum(r is not None for r in results) == 1
    assert len(receiver.requests) == 1
    await other.aclose()


def sender_settings(sender: WebhookSender, kit: FlowKit) -> Settings:
    return _settings(kit, sender.url)


async def test_unreachable_receiver_never_breaks_the_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = make_kit(tmp_path, monkeypatch)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = _settings(kit, f"http://127.0.0.1:{port}{PATH}?token=abc", webhook_retries=1)
    sleeps = Sleeps()
    sender = WebhookSender(settings, kit.store, sleep=sleeps)
    flow = kit.new_flow(on_event=sender.handle)
    pending = await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1")
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect))
    assert done.state == State.COMPLETED
    attempts = _attempts(kit, pending.id)
    # Once the receiver is known to be down, later events get one try each.
    assert [(a["type"], a["outcome"]) for a in attempts] == [
        ("approval.needed", "retry"),
        ("approval.needed", "gave_up"),
        ("payment.completed", "gave_up"),
    ]
    assert all(a["error"].startswith("could not connect") for a in attempts)
    assert all(a["url"] == f"http://127.0.0.1:{port}{PATH}" for a in attempts)  # no query
    assert len(kit.store.webhook_deliveries(undelivered=True)) == 2
    # A sweep stops at the first delivery the receiver cannot take; both stay for later.
    swept = await sender.deliver_pending()
    assert [(r.delivered, r.retryable, r.attempts) for r in swept] == [(False, True, 1)]
    assert len(kit.store.webhook_deliveries(undelivered=True)) == 2
    await flow.aclose()
    await sender.aclose()
    kit.store.close()


async def test_without_a_webhook_url_nothing_is_sent(kit: FlowKit, receiver: Receiver) -> None:
    settings = _settings(kit, None)
    sender = WebhookSender(settings, kit.store)
    flow = kit.new_flow(on_event=sender.handle)
    pending = await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1")
    assert (await flow.finish_url(kit.finish_url(pending.interact_redirect))).is_final
    assert await sender.notify("payment.completed", pending, {}) is None
    assert await sender.deliver_pending() == []
    assert kit.store.webhook_deliveries() == [] and receiver.requests == []
    assert SECRET not in repr(sender)
    await flow.aclose()


# ---------------------------------------------------------------------- verify_signature

BODY = b'{"type":"payment.completed","pendingId":"p","offerId":"o","status":"paid"}'
NOW = 1_767_225_600


def test_verify_accepts_a_genuine_signature() -> None:
    header = sign(SECRET, BODY, NOW)
    verify_signature(SECRET, header, BODY, now=NOW + 299)
    verify_signature(SECRET.encode(), header, BODY.decode(), now=NOW - 299)
    # A receiver rotating secrets may see several v1 values; one match is enough.
    rotated = f"{header},v1={'0' * 64}"
    verify_signature(SECRET, rotated, BODY, now=NOW)


@pytest.mark.parametrize(
    ("header", "body", "secret", "now", "reason"),
    [
        (None, BODY[:-1] + b" }", SECRET, NOW, "mismatch"),
        (None, BODY.replace(b"paid", b"PAID"), SECRET, NOW, "mismatch"),
        (None, BODY, "wrong-secret", NOW, "mismatch"),
        (None, BODY, SECRET, NOW + 301, "stale"),
        (None, BODY, SECRET, NOW - 400, "stale"),
        ("", BODY, SECRET, NOW, "format"),
        ("garbage", BODY, SECRET, NOW, "format"),
        (f"v1={'a' * 64}", BODY, SECRET, NOW, "format"),
        (f"t=abc,v1={'a' * 64}", BODY, SECRET, NOW, "format"),
        (f"t={NOW}", BODY, SECRET, NOW, "format"),
        (f"t={NOW},v1=zz", BODY, SECRET, NOW, "mismatch"),
    ],
)
def test_verify_refuses(
    header: str | None, body: bytes, secret: str, now: int, reason: str
) -> None:
    header = sign(SECRET, BODY, NOW) if header is None else header
    with pytest.raises(WebhookSignatureError) as err:
        verify_signature(secret, header, body, now=now)
    assert err.value.reason == reason
    assert err.value.kind == "verification" and err.value.exit_code == 7
    assert "\n" not in str(err.value) and err.value.hint
    assert SECRET not in str(err.value)


async def test_background_sends_do_not_hold_up_the_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, receiver: Receiver
) -> None:
    kit = make_kit(tmp_path, monkeypatch)
    gate = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await gate.wait()  # the backoff lasts until the test says so

    sender = WebhookSender(_settings(kit, url), kit.store, sleep=sleep, background=True)
    flow = kit.new_flow(on_event=sender.handle)
    receiver.answer(503)
    pending = await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1")
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect))
    assert done.state == State.COMPLETED  # while approval.needed still waits to be retried
    gate.set()
    await sender.drain()
    # Whichever event met the 503 was sent again after the backoff; the other went once.
    types = [r.json["type"] for r in receiver.requests]
    assert sorted(types) == sorted(["approval.needed", "payment.completed", types[0]])
    assert kit.store.webhook_deliveries(undelivered=True) == []
    await flow.aclose()
    await sender.aclose()
    kit.store.close()


async def test_a_broken_sender_never_breaks_the_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    kit = make_kit(tmp_path, monkeypatch)
    sender = WebhookSender(_settings(kit, url), kit.store)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in the sender")

    monkeypatch.setattr(sender, "_deliver", broken)
    flow = kit.new_flow(on_event=sender.handle)
    pending = await flow.start_quote(offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1")
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect))
    assert done.state == State.COMPLETED
    await flow.aclose()
    await sender.aclose()
    kit.store.close()
