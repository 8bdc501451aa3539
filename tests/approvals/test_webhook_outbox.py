"""The webhook outbox, on both backends: a transition and the delivery announcing it are
written in one transaction, and senders only send rows already written, each once.

A crash right after a transition's commit (before any send) leaves the delivery for the
next sender run; a transition that rolls back leaves neither its event nor its delivery;
a transition retried (a lock, a dropped connection) writes its delivery once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opapprove.approvals import store_pending
from opapprove.approvals.backend import Tx
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import Pending, State
from opapprove.approvals.replay import replay_many
from opapprove.approvals.store import Outbound, StaleState, Store
from opapprove.approvals.webhooks import EVENT_ID_HEADER, WebhookSender, outbox
from opapprove.settings import Settings, load_settings
from tests.approvals.conftest import FlowKit, make_kit
from tests.approvals.crash_support import Killed
from tests.approvals.webhook_receiver import Receiver

pytestmark = pytest.mark.anyio

BODY = {"type": "payment.completed", "pendingId": "", "offerId": "offer-9", "status": "paid"}


def _settings(store: Store, url: str) -> Settings:
    return load_settings(store=store.location, webhook_url=url, webhook_secret="whsec-outbox")


def _new_grant(store: Store) -> Pending:
    return store.create_pending(
        seller_id="s", offer_id="offer-9", buyer_wallet="https://wallet.test/b", amount="1"
    )


def _complete(store: Store, pending: Pending) -> Pending:
    return store.transition(
        pending.id,
        State.COMPLETED,
        expect=State.STARTED,
        event="completed",
        outbox=outbox("payment.completed"),
    )


async def test_a_crash_after_the_commit_leaves_the_delivery_for_the_next_sender(
    store_location: Path | str, url: str, receiver: Receiver
) -> None:
    store = Store(store_location)
    done = _complete(store, _new_grant(store))
    store.close()  # the process dies here, before any send
    # Two new processes sweep at once: the delivery goes out once, with the seed's body.
    stores = [Store(store_location), Store(store_location)]
    senders = [WebhookSender(_settings(s, url), s) for s in stores]
    swept = await asyncio.gather(*(s.deliver_pending() for s in senders))
    assert sorted(len(r) for r in swept) == [0, 1]
    (request,) = receiver.requests
    assert request.body == (
        b'{"type":"payment.completed","pendingId":"' + done.id.encode() + b'",'
        b'"offerId":"offer-9","status":"paid"}'
    )
    # The flow's own (late) notice and the next sweeps send nothing more.
    assert await senders[0].notify("payment.completed", done, {}) is None
    assert [await s.deliver_pending() for s in senders] == [[], []]
    assert len(receiver.requests) == 1
    (delivery,) = stores[0].webhook_deliveries()
    assert delivery.delivered and delivery.attempts == 1
    assert request.headers[EVENT_ID_HEADER.lower()].endswith(f".{delivery.id}")
    for sender, s in zip(senders, stores, strict=True):
        await sender.aclose()
        s.close()


async def test_a_transition_that_rolls_back_leaves_neither_event_nor_delivery(
    store_location: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(store_location)
    pending = _new_grant(store)
    before = store.events(pending.id)
    written = _after_outbound(monkeypatch, lambda conn, calls: _raise(RuntimeError("died")))
    with pytest.raises(RuntimeError, match="died"):
        _complete(store, pending)
    assert written == [pending.id]  # it died after writing the delivery, before COMMIT
    assert store.get_pending(pending.id).state == State.STARTED  # type: ignore[union-attr]
    assert store.events(pending.id) == before
    assert store.webhook_deliveries() == []
    store.close()


async def test_a_retried_transition_writes_one_delivery(
    store_location: Path | str, store_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(store_location)
    pending = _new_grant(store)

    def transient(conn: Tx, calls: int) -> None:
        if calls > 1:
            return
        if store_backend == "postgresql":
            # The connection drops mid-transaction: the backend reconnects and runs it again.
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        raise sqlite3.OperationalError("database is locked")  # another writer: run again

    written = _after_outbound(monkeypatch, transient)
    done = _complete(store, pending)
    assert written == [pending.id, pending.id]  # the transaction ran twice
    assert done.state == State.COMPLETED
    kinds = [e.kind for e in store.events(pending.id)]
    assert kinds == ["created", "completed"]
    (delivery,) = store.webhook_deliveries()
    assert (delivery.event_type, delivery.attempts) == ("payment.completed", 0)
    # Run again by a caller who does not know it went through: refused, nothing written.
    with pytest.raises(StaleState):
        _complete(store, pending)
    # An event that may recur writes a new delivery only for a new body.
    for redirect in (
        "https://wallet.test/i/1",
        "https://wallet.test/i/1",
        "https://wallet.test/i/2",
    ):
        store.transition(
            pending.id,
            State.COMPLETED,
            expect=State.COMPLETED,
            outbox=lambda moved, r=redirect: Outbound("approval.needed", r, same_body=True),
        )
    assert [d.body for d in store.webhook_deliveries()][1:] == [
        "https://wallet.test/i/1",
        "https://wallet.test/i/2",
    ]
    assert len(store.webhook_deliveries()) == 3
    store.close()


def _after_outbound(monkeypatch: pytest.MonkeyPatch, then: Callable[[Tx, int], None]) -> list[str]:
    """Runs ``then(conn, nth call)`` inside the transaction, right after the delivery is
    written; the grant ids it was written for."""
    real = store_pending.write_outbound
    written: list[str] = []

    def write(conn: Tx, pending_id: str, out: Outbound, now: float) -> None:
        real(conn, pending_id, out, now)
        written.append(pending_id)
        then(conn, len(written))

    monkeypatch.setattr(store_pending, "write_outbound", write)
    return written


def _raise(exc: Exception) -> Any:
    raise exc


# ------------------------------------------------- through the flow, for each event we send


async def _to_approval(kit: FlowKit, flow: Flow) -> Pending:
    return await flow.start_quote(offer_id="offer-9", buyer_wallet=kit.sandbox.buyer, amount="1")


async def _to_completed(kit: FlowKit, flow: Flow) -> Pending:
    pending = await _to_approval(kit, kit.flow)
    return await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))


async def _to_cancelled(kit: FlowKit, flow: Flow) -> Pending:
    return await flow.cancel((await _to_approval(kit, kit.flow)).id)


# event type -> (how the flow gets there, the state it commits, the body's tail)
EVENTS = {
    "approval.needed": (_to_approval, State.AWAITING_APPROVAL, "awaiting_approval"),
    "payment.completed": (_to_completed, State.COMPLETED, "paid"),
    "payment.failed": (_to_cancelled, State.CANCELLED, "cancelled"),
}


@pytest.mark.parametrize("kind", list(EVENTS))
async def test_a_flow_killed_right_after_the_commit_still_tells_the_marketplace_once(
    kind: str,
    store_location: Path | str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    receiver: Receiver,
) -> None:
    kit = make_kit(tmp_path, monkeypatch, store_at=store_location)
    settings = _settings(kit.store, url).model_copy(
        update={"allow_http": True, "base_url": kit.settings.base_url}
    )
    drive, state, status = EVENTS[kind]
    sender = WebhookSender(settings, kit.store)
    dying = kit.new_flow(on_event=sender.handle)
    dying.settings = settings
    real = kit.store.transition

    def transition(pending_id: str, to: State, **kwargs: Any) -> Pending:
        moved = real(pending_id, to, **kwargs)
        if to == state:
            raise Killed(f"killed right after committing {to}")  # before any send
        return moved

    monkeypatch.setattr(kit.store, "transition", transition)
    with pytest.raises(Killed):
        await drive(kit, dying)
    monkeypatch.undo()
    (pending,) = kit.store.list_pending()
    assert pending.state == state
    assert receiver.of_type(kind) == []
    (written,) = [d for d in kit.store.webhook_deliveries() if d.event_type == kind]
    assert (written.delivered, written.attempts) == (False, 0)

    # The next sender run (a new process's `pending replay`) sends it, once.
    store = Store(kit.store.location)
    again = WebhookSender(settings, store)
    flow = Flow(store, settings, transport=dying.transport, clock=kit.sandbox.clock)
    await replay_many(flow, [pending.id], webhooks=again)
    await replay_many(flow, [pending.id], webhooks=again)
    assert await again.deliver_pending() == []
    (sent,) = receiver.of_type(kind)
    tail = {
        "approval.needed": f',"approvalUrl":"{pending.interact_redirect}"',
        "payment.failed": ',"reason":"cancelled"',
    }.get(kind, "")
    assert sent.body.decode() == (  # the seed's bodies, byte for byte
        f'{{"type":"{kind}","pendingId":"{pending.id}","offerId":"offer-9","status":"{status}"'
        f"{tail}}}"
    )
    assert store.webhook_deliveries(undelivered=True) == []
    for closing in (flow, again, dying, sender):
        await closing.aclose()
    store.close()
    kit.store.close()
