"""One redirect delivered many times at once, to one listener or split over two on one store.

Everything is real: the sandbox and two listeners on loopback HTTP, each listener with its
own Store connection and Flow in its own server thread (as two `opapprove listen`
processes on one store would be), real time and a 1 s ``continue.wait``, so the first
attempt is still waiting to continue while every other delivery arrives. Exactly one
continue request may reach the wallet, one payment be made, ``payment.completed`` be
emitted once, and every delivery be answered 200, never 409, 500 or 502.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from opapprove.approvals.flow import Flow
from opapprove.approvals.records import State
from opapprove.approvals.store import Store
from opapprove.demo import press_approve
from opapprove.servers.listener import create_listener_app
from opapprove.servers.serving import LateApp, RunningServer, serve_in_thread
from opapprove.settings import Settings, load_settings
from tests.sandbox_fixtures import Sandbox, make_sandbox
from tests.servers.page_support import afollow

pytestmark = pytest.mark.anyio

CONTINUE = re.compile(r"/auth/continue/[^/]+")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ContinueCounter:
    """The sandbox, counting the continue requests that reach it, per grant."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.by_path: dict[str, int] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            if CONTINUE.fullmatch(scope["path"]):
                self.by_path[scope["path"]] = self.by_path.get(scope["path"], 0) + 1
        await self.app(scope, receive, send)


class Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Rig:
    box: Sandbox
    counter: ContinueCounter
    sandbox: RunningServer
    listeners: list[RunningServer]
    store: Store
    settings: Settings
    emitted: list[tuple[str, str]] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("concurrent")
    box = make_sandbox(clock=time.time, wait_seconds=1)
    counter = ContinueCounter(box.asgi)
    store_path = tmp / "store.db"
    logs = Logs()
    lates = [LateApp(), LateApp()]
    with (
        serve_in_thread(counter, log_handler=logs) as sandbox,
        Store(store_path) as store,
        serve_in_thread(lates[0], log_handler=logs) as first,
        serve_in_thread(lates[1], log_handler=logs) as second,
    ):
        box.add_default_seller(
            store, tmp / "seller.pem", base=sandbox.url, created_at=time.time(), replace=True
        )
        settings = load_settings(store=store_path, allow_http=True, base_url=first.url)
        rig = Rig(box, counter, sandbox, [first, second], store, settings, logs=logs)
        flows: list[tuple[LateApp, Flow, Store]] = []
        for late in lates:
            own = Store(store_path)  # each listener its own connection, as a process would

            def heard(kind: str, pending: Any, data: dict[str, Any]) -> None:
                rig.emitted.append((kind, pending.id))

            flow = Flow(own, settings, on_event=heard)
            late.inner = create_listener_app(flow)
            flows.append((late, flow, own))
        try:
            yield rig
        finally:
            for late, flow, own in flows:
                late.run(flow.aclose())
                own.close()
    box.recorder.assert_clean()
    box.state.close()


@pytest.mark.parametrize("listeners", [1, 2])
# 2 (a browser's retry) and 20 (a storm); 5 took the same path as both, one more second.
@pytest.mark.parametrize("deliveries", [2, 20])
async def test_simultaneous_deliveries_continue_once_and_pay_once(
    rig: Rig, deliveries: int, listeners: int
) -> None:
    async with Flow(rig.store, rig.settings) as seller:
        pending = await seller.start_quote(
            offer_id=f"o-{deliveries}-{listeners}",
            buyer_wallet=f"{rig.sandbox.url}/buyer",
            amount="3.00",
        )
    assert pending.interact_redirect and pending.continue_uri
    limits = httpx.Limits(max_connections=deliveries + 5)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        finish_url = await press_approve(http, pending.interact_redirect)
        query = httpx.URL(finish_url).query.decode()
        urls = [
            f"{rig.listeners[n % listeners].url}/payments/finish?{query}" for n in range(deliveries)
        ]
        answers = await asyncio.gather(*(http.get(url) for url in urls))
        assert [a.status_code for a in answers] == [200] * deliveries, [
            a.text[:200] for a in answers if a.status_code != 200
        ]
        assert all("completing the payment" in a.text for a in answers)
        # Every listener's page turns into the outcome by itself.
        for url in urls[:listeners]:
            pages = await afollow(http.get, url)
            assert all(p.status_code == 200 for p in pages)
            assert 'data-state="completed"' in pages[-1].text

    done = rig.store.get_pending(pending.id)
    assert done is not None and done.state == State.COMPLETED
    continue_path = httpx.URL(pending.continue_uri).path
    assert rig.counter.by_path.get(continue_path) == 1
    paid = [
        p
        for p in rig.box.state.outgoing_payments()
        if (p.metadata or {}).get("pendingId") == pending.id
    ]
    assert len(paid) == 1
    assert rig.emitted.count(("payment.completed", pending.id)) == 1
    kinds = [e.kind for e in rig.store.events(pending.id)]
    assert kinds.count("continue_sent") == 1 and "approval_restarted" not in kinds
    assert not [line for line in rig.logs.lines if "Traceback" in line or "ERROR" in line]
