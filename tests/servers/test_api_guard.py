"""``listen --api`` against a hostile web page, over real loopback HTTP.

A page the user visits can POST ``text/plain`` without a preflight, send its own
``Origin``, or reach loopback under its own host name (DNS rebinding). Each is refused
and nothing is created or replaced; the marketplace's own JSON calls still work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opapprove.approvals.flow import Flow
from opapprove.approvals.records import Seller
from opapprove.approvals.store import Store
from opapprove.openpayments.keys import generate_private_key, write_private_key
from opapprove.servers.listener import create_listener_app
from opapprove.servers.serving import LateApp, RunningServer, serve_in_thread
from opapprove.settings import load_settings

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    server: RunningServer
    store: Store
    key_path: Path

    def snapshot(self) -> tuple[list[Any], list[Any]]:
        return (
            [(s.id, s.wallet_address_url, s.key_id) for s in self.store.list_sellers()],
            [p.id for p in self.store.list_pending()],
        )

    def seller_body(self, **changes: str) -> dict[str, str]:
        return {
            "id": "default-seller",
            "walletAddressUrl": "http://127.0.0.1:9/seller",
            "keyId": "k1",
            "privateKeyPath": str(self.key_path),
            **changes,
        }


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("api")
    key_path = tmp / "seller.pem"
    write_private_key(key_path, generate_private_key())
    store_path = tmp / "store.db"
    late = LateApp()
    with Store(store_path) as store, serve_in_thread(late) as server:
        store.add_seller(
            Seller("default-seller", "http://127.0.0.1:9/seller", "k1", str(key_path), time.time())
        )
        settings = load_settings(
            store=store_path, allow_http=True, base_url="https://shop.example/pay"
        )
        flow = Flow(store, settings)
        late.inner = create_listener_app(flow, api=True, api_token=TOKEN)
        try:
            yield Api(server, store, key_path)
        finally:
            late.run(flow.aclose())


QUOTE = {"buyerWalletAddressUrl": "http://127.0.0.1:9/buyer", "amount": "1"}


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("text/plain quote", 415),
        ("text/plain seller", 415),
        ("form-encoded quote", 415),
        ("foreign Origin", 403),
        ("null Origin", 403),
        ("foreign Host", 403),
        ("rebinding Host read", 403),
        ("no token", 401),
        ("wrong token", 401),
    ],
)
def test_cross_site_requests_are_refused_and_change_nothing(
    api: Api, case: str, status: int
) -> None:
    base = api.server.url
    before = api.snapshot()
    evil = api.seller_body(walletAddressUrl="http://127.0.0.1:9/evil")
    with httpx.Client(base_url=base, timeout=10) as http:
        plain = {**AUTH, "Content-Type": "text/plain"}
        answer = {
            "text/plain quote": lambda: http.post(
                "/offers/X/quotes/start", content=str(QUOTE), headers=plain
            ),
            "text/plain seller": lambda: http.post("/sellers", content=str(evil), headers=plain),
            "form-encoded quote": lambda: http.post(
                "/offers/X/quotes/start", data=QUOTE, headers=AUTH
            ),
            "foreign Origin": lambda: http.post(
                "/sellers", json=evil, headers={**AUTH, "Origin": "https://evil.example"}
            ),
            "null Origin": lambda: http.post(
                "/offers/X/quotes/start", json=QUOTE, headers={**AUTH, "Origin": "null"}
            ),
            "foreign Host": lambda: http.post(
                "/sellers", json=evil, headers={**AUTH, "Host": "rebind.evil.example"}
            ),
            "rebinding Host read": lambda: http.get(
                "/payments/01ANY",
                headers={**AUTH, "Host": f"rebind.evil.example:{api.server.port}"},
            ),
            "no token": lambda: http.post("/sellers", json=evil),
            "wrong token": lambda: http.post(
                "/sellers", json=evil, headers={"Authorization": "Bearer nope"}
            ),
        }[case]()
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False and body["error"] and body["hint"]
    assert api.snapshot() == before


def test_own_origin_and_base_url_host_are_allowed(api: Api) -> None:
    with httpx.Client(base_url=api.server.url, timeout=10) as http:
        own = http.get("/payments/01NOSUCH", headers={**AUTH, "Origin": api.server.url})
        proxied = http.get(
            "/payments/01NOSUCH",
            headers={**AUTH, "Host": "shop.example", "Origin": "https://shop.example"},
        )
    assert own.status_code == proxied.status_code == 404  # past the guard: no such grant


def test_post_sellers_never_silently_replaces_a_seller(api: Api) -> None:
    with httpx.Client(base_url=api.server.url, timeout=10) as http:
        same = http.post("/sellers", json=api.seller_body(), headers=AUTH)
        assert same.status_code == 200 and same.json()["success"] is True
        for change in ({"walletAddressUrl": "http://127.0.0.1:9/evil"}, {"keyId": "k2"}):
            conflict = http.post("/sellers", json=api.seller_body(**change), headers=AUTH)
            assert conflict.status_code == 409
            assert "already exists" in conflict.json()["error"] and conflict.json()["hint"]
        fresh = http.post("/sellers", json=api.seller_body(id="s2"), headers=AUTH)
        assert fresh.status_code == 201
        again = http.post("/sellers", json=api.seller_body(id="s2"), headers=AUTH)
        assert again.status_code == 200
    seller = api.store.get_seller("default-seller")
    assert seller is not None and seller.wallet_address_url == "http://127.0.0.1:9/seller"
    assert seller.key_id == "k1"


def test_the_api_needs_a_token(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store, pytest.raises(ValueError, match="api_token"):
        create_listener_app(Flow(store, load_settings(store=tmp_path / "s.db")), api=True)
