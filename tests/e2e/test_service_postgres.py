"""Running as a service: three listeners and two `pending replay --all` on one PostgreSQL store.

Like several instances behind a load balancer: the wallet's redirects for 200 grants come
in round-robin (every fourth twice, to two different listeners, as a browser's retry or a
proxy's does), while two support staff run `pending replay --all` from their terminals.
Every grant completes with exactly one payment, and no process ever reports a deadlock.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from opapprove.approvals.flow import Flow
from opapprove.approvals.records import State
from opapprove.approvals.store import Store
from opapprove.servers.serving import serve_in_thread
from opapprove.settings import load_settings
from tests.approvals.crash_support import payments_by_pending
from tests.postgres_server import PostgresServer
from tests.sandbox_fixtures import make_sandbox

GRANTS = 200
LISTENERS = 3
WAIT = 120.0  # only guards against a hang, never asserted on
PUBLIC_URL = "http://127.0.0.1:9"  # the proxy's address wallets send browsers to (unused here)


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPAPPROVE_")}
    env.update(
        {
            "OPAPPROVE_STORE": url,
            "OPAPPROVE_ALLOW_HTTP": "true",
            "OPAPPROVE_BASE_URL": PUBLIC_URL,
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"),
        }
    )
    return env


async def _start_grants(url: str, buyer: str, app: Any) -> list[str]:
    """Quote and ask approval for every grant (in this process: on the sandbox's app itself)."""
    settings = load_settings(store=url, allow_http=True, base_url=PUBLIC_URL)
    gate = asyncio.Semaphore(16)
    with Store(url) as store:
        async with Flow(store, settings, transport=httpx.ASGITransport(app=app)) as flow:

            async def one(n: int) -> str:
                async with gate:
                    pending = await flow.start_quote(
                        offer_id=f"offer-{n}", buyer_wallet=buyer, amount="0.01"
                    )
                    assert pending.interact_redirect
                    return pending.interact_redirect

            return list(await asyncio.gather(*(one(n) for n in range(GRANTS))))


async def _deliver(
    finish_urls: list[str], listeners: list[str], replay: list[str], env: dict[str, str]
) -> list[subprocess.Popen[str]]:
    """Every redirect to one listener, round-robin; every fourth to the next one as well."""
    deliveries: list[str] = []
    for n, finish in enumerate(finish_urls):
        parts = urlsplit(finish)
        path = f"{parts.path}?{parts.query}"
        deliveries.append(listeners[n % LISTENERS] + path)
        if n % 4 == 0:
            deliveries.append(listeners[(n + 1) % LISTENERS] + path)
    replays: list[subprocess.Popen[str]] = []
    gate = asyncio.Semaphore(12)
    # A new connection per redirect, as browsers of different buyers make.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30.0, limits=fresh) as http:

        async def send(n: int, target: str) -> None:
            if n == len(deliveries) // 3:  # support staff start replaying a third of the way in
                replays.extend(_spawn(replay, env) for _ in range(2))
            async with gate:
                answer = await http.get(target)
                assert answer.status_code == 200, (answer.status_code, answer.text[:300])

        await asyncio.gather(*(send(n, t) for n, t in enumerate(deliveries)))
    return replays


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_three_listeners_and_two_replays_share_one_postgresql_store(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.fresh_url()
    env = _env(tmp_path, url)
    box = make_sandbox(clock=time.time, sleep=asyncio.sleep)
    opapprove = [sys.executable, "-m", "opapprove", "--json"]
    listeners: list[subprocess.Popen[str]] = []
    outputs: list[str] = []
    # The bare sandbox app: this is about the store, and spec checks cost CPU (tests/servers
    # hold the sandbox to the specs).
    with serve_in_thread(box.app) as server:
        with Store(url) as store:
            box.add_default_seller(store, tmp_path / "seller.pem", base=server.url)
        try:
            listeners = [
                _spawn([*opapprove, "listen", "--port", "0"], env) for _ in range(LISTENERS)
            ]
            redirects = asyncio.run(_start_grants(url, f"{server.url}/buyer", box.app))
            bases = []
            for proc in listeners:
                assert proc.stdout is not None
                first = json.loads(proc.stdout.readline())
                assert first["event"] == "listening", first
                bases.append(first["url"])
            finish_urls = [box.state.approve(r) for r in redirects]
            replay = [*opapprove, "pending", "replay", "--all", "--concurrency", "8"]
            replays = asyncio.run(_deliver(finish_urls, bases, replay, env))
            for proc in replays:
                out, err = proc.communicate(timeout=WAIT)
                outputs.append(out + err)
            # The listeners finish in the background: wait until every grant is final.
            deadline = time.monotonic() + WAIT
            with Store(url) as store:
                while time.monotonic() < deadline:
                    rows = store.list_pending()
                    if all(p.is_final for p in rows):
                        break
                    time.sleep(0.2)
        finally:
            for proc in listeners:
                proc.send_signal(signal.SIGINT)
            try:
                for proc in listeners:
                    out, err = proc.communicate(timeout=WAIT)
                    outputs.append(out + err)
            finally:
                for proc in listeners:  # Ctrl-C did not stop it: fail, leaving no listener
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
        payments = payments_by_pending(box.state)

    assert len(rows) == GRANTS
    assert all(p.state == State.COMPLETED for p in rows), [
        (p.id, p.state, p.last_error) for p in rows if p.state != State.COMPLETED
    ][:5]
    assert payments == {p.id: 1 for p in rows}  # one payment each, and no other
    words = "\n".join(outputs).lower()
    assert "deadlock" not in words and "traceback" not in words, words[-2000:]
