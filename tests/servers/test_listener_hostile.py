"""``listen --api`` and ``/payments/finish`` against hostile input, over real loopback HTTP.

Ids with control characters, NUL (which PostgreSQL cannot store), lone surrogates or no
end; bodies too big, too deep, not UTF-8 or trickling in; a handler that breaks. Each is
answered with one JSON line saying what and what to do, with a documented status, on both
store backends, and nothing is stored.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote as quote_url

import httpx
import pytest

from opapprove.approvals.flow import Flow
from opapprove.approvals.records import Seller
from opapprove.approvals.store import Store
from opapprove.openpayments.keys import generate_private_key, write_private_key
from opapprove.servers.listener import MAX_BODY_BYTES, create_listener_app
from opapprove.servers.serving import LateApp, RunningServer, serve_in_thread
from opapprove.settings import load_settings
from tests.conftest import BACKENDS
from tests.postgres_server import PostgresServer

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY_TIMEOUT = 0.3  # seconds the listener waits for a body here (10 s when served by `listen`)
BUYER = "http://127.0.0.1:9/buyer"
# For what the store's backend cannot change (only ids reach the store): one run, on SQLite.
SQLITE_ONLY = pytest.mark.parametrize("api", ["sqlite"], indirect=True)


@dataclass
class Api:
    server: RunningServer
    store: Store
    key_path: Path
    flow: Flow
    events: list[dict[str, Any]]

    def snapshot(self) -> tuple[list[str], list[str]]:
        return (
            [s.id for s in self.store.list_sellers()],
            [p.id for p in self.store.list_pending()],
        )


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("hostile")
    key_path = tmp / "seller.pem"
    write_private_key(key_path, generate_private_key())
    location: Path | str = tmp / "store.db"
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        location = server.fresh_url()
    late = LateApp()
    with Store(location) as store, serve_in_thread(late) as served:
        store.add_seller(
            Seller("default-seller", "http://127.0.0.1:9/seller", "k1", str(key_path), time.time())
        )
        settings = load_settings(store=location, allow_http=True, base_url="http://127.0.0.1:3999")
        flow = Flow(store, settings)
        events: list[dict[str, Any]] = []
        late.inner = create_listener_app(
            flow, on_event=events.append, api=True, api_token=TOKEN, body_timeout=BODY_TIMEOUT
        )
        try:
            yield Api(served, store, key_path, flow, events)
        finally:
            late.run(flow.aclose())


def _one_json_refusal(answer: httpx.Response, status: int, case: str = "") -> dict[str, Any]:
    assert answer.status_code == status, (case, answer.text[:300])
    assert answer.headers["content-type"].startswith("application/json"), answer.text[:300]
    body: dict[str, Any] = answer.json()
    assert body["success"] is False and body["error"] and body["hint"]
    assert "\n" not in body["error"] and "Traceback" not in answer.text
    return body


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST ``body`` as ASCII JSON, so a lone surrogate travels as its ``\\ud800`` escape."""
    return http.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


BAD_IDS = {
    "NUL": "a\x00b",
    "escape sequence": "a\x1b]0;pwned\x07",
    "newline": "a\nb",
    "lone surrogate": "a\ud800",
    "no end": "x" * 300,
}


# A lone surrogate cannot travel in a URL path (it arrives as replacement characters).
ID_CASES = [
    (where, case)
    for where in ("offerId", "sellerId", "seller id")
    for case in BAD_IDS
    if (where, case) != ("offerId", "lone surrogate")
]


def test_hostile_ids_are_refused_as_bad_input_and_store_nothing(api: Api) -> None:
    before = api.snapshot()
    quote = {"buyerWalletAddressUrl": BUYER, "amount": "1"}
    with httpx.Client(base_url=api.server.url, headers=AUTH, timeout=10) as http:
        for where, case in ID_CASES:
            bad = BAD_IDS[case]
            if where == "offerId":
                answer = _post(http, f"/offers/{quote_url(bad, safe='')}/quotes/start", quote)
            elif where == "sellerId":
                answer = _post(http, "/offers/x/quotes/start", {**quote, "sellerId": bad})
            else:
                seller = {
                    "id": bad,
                    "walletAddressUrl": "http://127.0.0.1:9/seller",
                    "keyId": "k1",
                    "privateKeyPath": str(api.key_path),
                }
                answer = _post(http, "/sellers", seller)
            _one_json_refusal(answer, 400, f"{where} {case}")
            assert "\x1b" not in answer.text and "\\u001b" not in answer.text, (where, case)
    assert api.snapshot() == before


def test_hostile_pending_ids_are_unknown_not_a_busy_store(api: Api) -> None:
    with httpx.Client(base_url=api.server.url, headers=AUTH, timeout=10) as http:
        for case, bad in BAD_IDS.items():
            quoted = quote_url(bad, safe="", errors="surrogatepass")
            answer = http.get(f"/payments/{quoted}")
            assert answer.status_code == 404, (case, answer.text[:300])
            assert answer.json() == {"success": False, "error": "unknown pendingId"}
            finish = http.get(
                f"/payments/finish?pendingId={quoted}&interact_ref=x&hash=y",
                headers={"Accept": "application/json"},
            )
            assert finish.status_code == 400 and finish.json()["state"] == "refused", case


def _raw(api: Api, data: bytes) -> bytes:
    """Send bytes by hand and read the answer until the listener closes the connection."""
    answer = b""
    with socket.create_connection((api.server.host, api.server.port), timeout=10) as sock:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@SQLITE_ONLY
def test_bodies_that_are_too_big_too_deep_or_not_utf8_are_refused(api: Api) -> None:
    before = api.snapshot()
    big = b'{"amount": "' + b"1" * MAX_BODY_BYTES + b'"}'
    deep = b"[" * 30_000 + b"]" * 30_000  # under the size limit, far over any parser's depth
    with httpx.Client(base_url=api.server.url, headers=AUTH, timeout=10) as http:
        declared = http.post("/sellers", content=big, headers={"Content-Type": "application/json"})

        def pieces() -> Iterator[bytes]:  # no Content-Length: the size shows only as it comes
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        streamed = http.post(
            "/offers/x/quotes/start",
            content=pieces(),
            headers={"Content-Type": "application/json"},
        )
        nested = http.post(
            "/offers/x/quotes/start", content=deep, headers={"Content-Type": "application/json"}
        )
        latin1 = http.post(
            "/sellers",
            content='{"id": "caf\xe9"}'.encode("latin-1"),
            headers={"Content-Type": "application/json"},
        )
    assert "64 KiB" in _one_json_refusal(declared, 413)["error"]
    _one_json_refusal(streamed, 413)
    assert "nested" in _one_json_refusal(nested, 400)["error"]
    assert "UTF-8" in _one_json_refusal(latin1, 400)["error"]
    assert api.snapshot() == before


@SQLITE_ONLY
def test_a_body_that_trickles_in_is_cut_off(api: Api) -> None:
    """Slow-loris: a body that stops arriving does not hold the request open for ever."""
    started = time.monotonic()
    head = (
        "POST /offers/x/quotes/start HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\nConnection: close\r\n\r\n"
    )
    answer = _raw(api, head.encode() + b'{"amount": ')
    assert time.monotonic() - started < 8  # bounded: the listener gave up, not the test
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b"did not arrive" in body and b"hint" in body


@SQLITE_ONLY
def test_a_broken_api_handler_answers_json_and_shows_no_secret(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(pending_id: str) -> Any:
        raise RuntimeError("lost postgresql://shop:hunter2@db.internal/opapprove GNAP tok3n")

    monkeypatch.setattr(api.store, "get_pending", broken)
    with httpx.Client(base_url=api.server.url, headers=AUTH, timeout=10) as http:
        answer = http.get("/payments/01ANYTHING")
    body = _one_json_refusal(answer, 500)
    assert "hunter2" not in answer.text and "tok3n" not in answer.text
    assert body["error"].startswith("RuntimeError")


@SQLITE_ONLY
def test_a_forged_result_reaches_the_operator_as_one_printable_line(api: Api) -> None:
    """Anyone can send ``result=``: its words must not drive the operator's terminal."""
    pending = api.store.create_pending(
        seller_id="default-seller", offer_id="o-result", buyer_wallet=BUYER, amount="1"
    )
    forged = quote_url("grant_rejected\x1b]0;pwned\x07\x1b[2J\r\nFAKE line")
    with httpx.Client(base_url=api.server.url, timeout=10) as http:
        page = http.get(f"/payments/finish?pendingId={pending.id}&result={forged}")
    assert page.status_code < 500 and "\x1b" not in page.text
    (said,) = [e for e in api.events if e.get("pendingId") == pending.id]
    assert said["event"] == "wallet_result" and said["result"].isprintable()
    assert "FAKE line" in said["result"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_forged_callbacks_for_a_known_grant_grow_nothing_and_learn_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pending id is no secret (it is in the buyer's URL): a flood of wrong hashes for it
    is refused each time, but only the first few refusals are written to the store; and a
    redirect without a valid hash is not shown what the grant is for, even once expired."""
    from opapprove.approvals import results
    from opapprove.approvals.records import State
    from tests.approvals.conftest import make_kit

    recorded = 3  # results.MAX_RECORDED (20), made smaller so the flood is short
    monkeypatch.setattr(results, "MAX_RECORDED", recorded)
    kit = make_kit(tmp_path, monkeypatch)
    events: list[dict[str, Any]] = []
    app = create_listener_app(kit.flow, on_event=events.append)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:3999"
        ) as http:
            pending = await kit.flow.start_quote(
                offer_id="offer-4711", buyer_wallet=kit.sandbox.buyer, amount="98.76"
            )
            for n in range(recorded + 3):
                forged = await http.get(
                    f"/payments/finish?pendingId={pending.id}&interact_ref=r{n}&hash=AAAA"
                )
                assert forged.status_code == 400
            kit.sandbox.clock.advance(kit.settings.approval_timeout + 1)
            unverified = f"/payments/finish?pendingId={pending.id}&interact_ref=guess"
            for accept in ("application/json", "text/html"):
                late = await http.get(unverified, headers={"Accept": accept})
                assert late.status_code == 410 and "expired" in late.text
                assert "offer-4711" not in late.text and "98.76" not in late.text
        stored = [e for e in kit.store.events(pending.id) if e.kind == "callback_refused"]
        assert len(stored) == recorded
        assert len([e for e in events if e["event"] == "callback_refused"]) == recorded + 3
        assert kit.store.get_pending(pending.id).state in (State.AWAITING_APPROVAL, State.EXPIRED)
    finally:
        await kit.flow.aclose()
        kit.store.close()


@SQLITE_ONLY
def test_no_answer_may_be_cached_or_leak_its_url(api: Api) -> None:
    """A page that refreshes itself until the payment is done, or a grant's JSON state, kept by
    a cache between the listener and the browser (or the marketplace) would never change; and
    a finish URL carries interact_ref and hash, which no Referer may take elsewhere."""
    with httpx.Client(base_url=api.server.url, timeout=10) as http:
        answers = [
            http.get("/payments/finish?pendingId=01NOSUCH&interact_ref=x&hash=y"),
            http.get("/payments/finish?pendingId=01NOSUCH&result=grant_rejected"),
            http.get("/health"),
            http.get("/payments/01NOSUCH", headers=AUTH),
            http.get("/payments/01NOSUCH"),  # refused by the guard
            http.post(
                "/sellers", content=b"[", headers=AUTH | {"Content-Type": "application/json"}
            ),
        ]
        unknown = [
            http.get("/payments/../../etc/passwd"),
            http.get("/offers/1/quotes/start", headers=AUTH),
            http.request("OPTIONS", "/sellers", headers={"Origin": "https://evil.example"}),
            http.request("PROPFIND", "/payments/finish"),
            http.post("/payments/finish?pendingId=x"),
        ]
    for answer in unknown:
        _one_json_refusal(answer, 404 if "passwd" in str(answer.request.url) else 405)
        assert "access-control-allow-origin" not in answer.headers
    for answer in answers + unknown:
        assert answer.headers.get("cache-control") == "no-store", answer.request.url
        assert answer.headers.get("referrer-policy") == "no-referrer", answer.request.url


@SQLITE_ONLY
def test_proxy_headers_do_not_open_the_api(api: Api) -> None:
    """What a caller says about the proxy in front (X-Forwarded-*, Forwarded) is not the
    Host or Origin the guard checks: a foreign one stays refused."""
    evil = {"Host": "rebind.evil.example", "Origin": "https://evil.example"}
    says_local = {
        "X-Forwarded-Host": "127.0.0.1",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "127.0.0.1",
        "Forwarded": "for=127.0.0.1;host=127.0.0.1;proto=https",
    }
    with httpx.Client(base_url=api.server.url, headers=AUTH, timeout=10) as http:
        host = http.get("/payments/01NOSUCH", headers={"Host": evil["Host"], **says_local})
        origin = http.get("/payments/01NOSUCH", headers={"Origin": evil["Origin"], **says_local})
    assert host.status_code == origin.status_code == 403
