"""``listen --api``'s quote start with an ``Idempotency-Key``, over real loopback HTTP.

A marketplace retrying after a timeout gets the first answer and no second grant; a key
reused for another request, two requests with one key at once, a hostile key, and a crash
at each instant of the first request, on both store backends where the store decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from opapprove.approvals.flow import Flow
from opapprove.approvals.store import State, Store
from opapprove.approvals.store_idempotency import KEEP_SECONDS, Claim, KeyTaken
from opapprove.servers.idempotency import request_hash
from opapprove.servers.listener import create_listener_app
from opapprove.servers.sandbox import FeePolicy
from opapprove.servers.serving import LateApp, serve_in_thread
from tests.approvals.conftest import FlowKit, make_kit

TOKEN = "t0ken-for-idempotency"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Served:
    kit: FlowKit
    http: httpx.Client
    late: LateApp
    body: dict[str, Any]

    def post(self, key: str | None, offer: str = "o1", **changes: Any) -> httpx.Response:
        extra = {} if key is None else {"Idempotency-Key": key}
        body = {**self.body, **changes}
        return self.http.post(f"/offers/{offer}/quotes/start", json=body, headers=extra)

    def wallet_calls(self) -> int:
        return sum(self.kit.sandbox.recorder.seen.values())

    def grants(self) -> list[str]:
        return [p.id for p in self.kit.store.list_pending()]


@contextmanager
def listening(flow: Flow) -> Iterator[tuple[httpx.Client, LateApp]]:
    """``flow`` behind a real ``listen --api`` on loopback, and a client that calls it."""
    late = LateApp()
    late.inner = create_listener_app(flow, api=True, api_token=TOKEN)
    with (
        serve_in_thread(late) as server,
        httpx.Client(base_url=server.url, headers=HEADERS, timeout=20) as http,
    ):
        yield http, late
        late.run(flow.aclose())


@contextmanager
def serving(kit: FlowKit) -> Iterator[Served]:
    body = {"buyerWalletAddressUrl": kit.sandbox.buyer, "amount": "5.00"}
    with listening(kit.flow) as (http, late):
        yield Served(kit, http, late, body)
    kit.sandbox.recorder.assert_clean()
    kit.store.close()


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_location: Path | str
) -> Iterator[Served]:
    # The wallet charges a fee, so a quote can be over a maxDebit.
    fee = FeePolicy(0, Decimal("0.05"))
    with serving(make_kit(tmp_path, monkeypatch, store_at=store_location, fee=fee)) as served:
        yield served


# What no other store would decide otherwise: one run, on SQLite.
SQLITE_ONLY = pytest.mark.parametrize("store_backend", ["sqlite"], indirect=True)


def test_a_retry_gets_the_first_answer_and_no_second_grant(served: Served) -> None:
    first = served.post("order-7")
    assert first.status_code == 200, first.text
    calls, grants = served.wallet_calls(), served.grants()
    # The same JSON with its keys in another order is the same request.
    again = served.http.post(
        "/offers/o1/quotes/start",
        json=dict(reversed(list(served.body.items()))),
        headers={"Idempotency-Key": "order-7"},
    )
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (served.wallet_calls(), served.grants()) == (calls, grants)
    for changed in (served.post("order-7", amount="6.00"), served.post("order-7", offer="o2")):
        assert changed.status_code == 422, changed.text
        assert "used for another request" in changed.json()["error"]
    assert (served.wallet_calls(), served.grants()) == (calls, grants)
    # Without the header, as before: each POST is a grant of its own.
    assert served.post(None).json()["pendingId"] not in grants
    assert len(served.grants()) == 2


def _slowed(flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    """``flow`` waits a moment before starting a quote: two requests that arrive together
    have both looked their key up before either stores a grant."""
    real = flow.start_quote

    async def start_quote(**kwargs: Any) -> Any:
        await asyncio.sleep(0.1)
        return await real(**kwargs)

    monkeypatch.setattr(flow, "start_quote", start_quote)


def _together(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def _one_grant_each(served: Served, answers: list[httpx.Response], grants: int) -> int:
    """Every answer names the one grant stored, or is 409 "retry"; how many were 409."""
    assert len(served.grants()) == grants
    ids = {a.json()["pendingId"] for a in answers if a.status_code == 200}
    assert len(ids) == 1 and ids <= set(served.grants()), [a.text for a in answers]
    busy = [a for a in answers if a.status_code != 200]
    for other in busy:
        assert other.status_code == 409 and other.headers["Retry-After"] == "1", other.text
        assert "right now" in other.json()["error"]  # this key's request, or its grant's
    return len(busy)


def test_one_key_twice_at_once_makes_one_grant(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = served.kit
    # Two listeners on one store (another process, another machine on PostgreSQL): the
    # store's key, written with the grant, lets one of them store it.
    other = Flow(
        Store(kit.store.location),
        kit.settings,
        transport=httpx.ASGITransport(app=kit.sandbox.asgi),
        clock=kit.sandbox.clock,
    )
    for flow in (kit.flow, other):
        _slowed(flow, monkeypatch)
    with listening(other) as (http, _):
        posts = [
            lambda client=client: client.post(
                "/offers/o1/quotes/start", json=served.body, headers={"Idempotency-Key": "k1"}
            )
            for client in (served.http, http)
        ]
        _one_grant_each(served, _together(*posts), grants=1)
    other.store.close()
    # One listener: the second request is told at once that the first is being answered.
    twice = _together(lambda: served.post("k2"), lambda: served.post("k2"))
    assert _one_grant_each(served, twice, grants=2) == 1


@SQLITE_ONLY
def test_a_retry_after_a_crash_a_wallet_failure_or_a_refusal(served: Served) -> None:
    """The key is written with its grant. A crash before set-up, or before the answer was
    kept, leaves a key naming its grant: the retry answers for that grant. A wallet failure
    half-way keeps no answer: the retry carries the grant on. A refused quote is replayed."""
    kit = served.kit
    # Crash 1: the grant and its key stored, nothing else done.
    stored = kit.store.create_pending(
        seller_id="default-seller",
        offer_id="o1",
        buyer_wallet=kit.sandbox.buyer,
        amount="5.00",
        seller_wallet=kit.sandbox.seller,
        claim=Claim(_scope(), "crash-1", request_hash("o1", served.body)),
    )
    answer = served.post("crash-1")
    assert answer.status_code == 200, answer.text
    assert answer.json()["pendingId"] == stored.id and served.grants() == [stored.id]
    assert kit.store.get_pending(stored.id).state == State.AWAITING_APPROVAL
    # Crash 2: set up to the end, the answer never kept.
    claim = Claim(_scope(), "crash-2", request_hash("o2", served.body))
    started = served.late.run(
        kit.flow.start_quote(
            offer_id="o2", buyer_wallet=kit.sandbox.buyer, amount="5.00", claim=claim
        )
    )
    calls = served.wallet_calls()
    answer = served.post("crash-2", offer="o2")
    assert answer.json() == {
        "success": True,
        "redirectUrl": started.interact_redirect,
        "pendingId": started.id,
        "paymentUrl": started.interact_redirect,
    }
    assert served.wallet_calls() == calls and len(served.grants()) == 2
    # The wallet fails half-way: no answer kept; the retry carries the same grant on.
    incoming = len(kit.sandbox.state.incoming_payments())
    kit.sandbox.state.set_fault("create-quote", status=500, times=10)
    failed = served.post("flaky", offer="o3")
    assert failed.status_code == 502, failed.text
    kit.sandbox.state.clear_faults()
    answer = served.post("flaky", offer="o3")
    assert answer.status_code == 200 and answer.json()["pendingId"] == failed.json()["pendingId"]
    assert len(served.grants()) == 3
    assert len(kit.sandbox.state.incoming_payments()) == incoming + 1
    # A quote the check refused (over maxDebit, with the wallet's fee): the same 422 again.
    refused = served.post("capped", offer="o4", maxDebit="5.01")
    assert refused.status_code == 422, refused.text
    calls, grants = served.wallet_calls(), served.grants()
    again = served.post("capped", offer="o4", maxDebit="5.01")
    assert again.status_code == 422 and again.json() == refused.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (served.wallet_calls(), served.grants()) == (calls, grants)
    assert kit.store.get_pending(refused.json()["pendingId"]).state == State.CANCELLED


def _scope() -> str:
    return hashlib.sha256(TOKEN.encode()).hexdigest()[:32]


BAD_KEYS = {
    "too long": b"k" * 256,
    "control character": b"a\x01b",
    "DEL": b"a\x7fb",
    "not ASCII": "caf\u00e9".encode("latin-1"),
    "repeated": b"a\r\nIdempotency-Key: b",
}


@SQLITE_ONLY
def test_a_hostile_key_is_refused_and_nothing_stored(served: Served) -> None:
    host, port = served.http.base_url.host, served.http.base_url.port
    body = httpx.Request("POST", "http://x", json=served.body).content
    for case, key in BAD_KEYS.items():
        raw = (
            b"POST /offers/o1/quotes/start HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n".encode()
            + b"Idempotency-Key: "
            + key
            + f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, text = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), (case, answer[:300])
        assert b"Idempotency-Key header" in text, (case, text)
    assert served.grants() == [] and served.wallet_calls() == 0


def test_keys_are_taken_once_and_kept_24_hours(store_location: Path | str) -> None:
    now = [1_000_000.0]
    with Store(store_location, clock=lambda: now[0]) as store:
        claim = Claim("scope", "k", "hash")

        def create() -> str:
            return store.create_pending(
                seller_id="s", offer_id="o", buyer_wallet="b", amount="1", claim=claim
            ).id

        first = create()
        with pytest.raises(KeyTaken):
            create()
        assert [p.id for p in store.list_pending()] == [first]  # rolled back with its key
        found = store.get_idempotency_key("scope", "k")
        assert found is not None and found.pending_id == first and found.answer is None
        assert store.keep_answer("scope", "k", 200, {"a": 1})
        assert not store.keep_answer("scope", "k", 502, {"b": 2})  # the first answer stays
        assert store.get_idempotency_key("scope", "k").answer == {"a": 1}  # type: ignore[union-attr]
        assert store.get_idempotency_key("other scope", "k") is None
        now[0] += KEEP_SECONDS + 1
        assert store.get_idempotency_key("scope", "k") is None
        second = create()  # the old key is removed as the new one is taken
        assert store.get_idempotency_key("scope", "k").pending_id == second  # type: ignore[union-attr]
