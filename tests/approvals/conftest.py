from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opapprove.approvals.flow import Flow
from opapprove.approvals.records import Seller
from opapprove.approvals.store import Store
from opapprove.openpayments.keys import public_jwk
from opapprove.servers.sandbox.accounts import with_wallets
from opapprove.servers.sandbox.config import default_accounts
from opapprove.servers.serving import RunningServer
from opapprove.settings import Settings, load_settings
from tests.approvals.webhook_receiver import PATH, Receiver, serve_receiver
from tests.sandbox_fixtures import Sandbox, make_sandbox


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class FlowKit:
    sandbox: Sandbox
    store: Store
    settings: Settings
    flow: Flow
    tmp: Path

    def new_flow(self, **kwargs: Any) -> Flow:
        return Flow(
            self.store,
            self.settings,
            transport=httpx.ASGITransport(app=self.sandbox.asgi),
            clock=self.sandbox.clock,
            **kwargs,
        )

    def finish_url(self, redirect: str, *, reject: bool = False) -> str:
        url: str = self.sandbox.state.approve(redirect, reject=reject)
        return url

    def clock_sleep(self) -> tuple[Callable[[float], Awaitable[None]], list[float]]:
        """A flow's ``sleep`` that moves the sandbox's clock instead of waiting, and the list
        of the waits it was asked for (so a test proves the flow waited, without waiting)."""
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            self.sandbox.clock.advance(seconds)

        return sleep, slept


def make_kit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    store_at: Path | str | None = None,
    **sandbox_overrides: Any,
) -> FlowKit:
    """A sandbox, a seller and a flow on a new store: ``store_at`` (a PostgreSQL URL, say),
    else a SQLite file in ``tmp_path``."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    box = make_sandbox(**sandbox_overrides)
    location = tmp_path / "store.db" if store_at is None else store_at
    store = Store(location)
    box.add_default_seller(store, tmp_path / "seller.pem")
    settings = load_settings(
        store=store.location, allow_http=True, base_url="http://127.0.0.1:3999"
    )
    flow = Flow(store, settings, transport=httpx.ASGITransport(app=box.asgi), clock=box.clock)
    return FlowKit(box, store, settings, flow, tmp_path)


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlowKit]:
    k = make_kit(tmp_path, monkeypatch)
    yield k
    k.sandbox.recorder.assert_clean()
    k.store.close()
    k.sandbox.state.close()


@pytest.fixture
async def started(kit: FlowKit) -> AsyncIterator[tuple[FlowKit, Any]]:
    pending = await kit.flow.start_quote(
        offer_id="offer-1", buyer_wallet=kit.sandbox.buyer, amount="12.34"
    )
    yield kit, pending
    await kit.flow.aclose()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Receiver, RunningServer]]:
    """The marketplace's webhook endpoint, one per test module."""
    with serve_receiver() as served:
        yield served


@pytest.fixture
def receiver(served: tuple[Receiver, RunningServer]) -> Iterator[Receiver]:
    served[0].reset()
    yield served[0]
    served[0].reset()


@pytest.fixture
def url(served: tuple[Receiver, RunningServer]) -> str:
    """The webhook endpoint's URL."""
    return served[1].url + PATH


def make_split_kit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seller_wallets: list[str],
    *,
    wallets: list[str] | tuple[str, ...] = (),
    store_at: Path | str | None = None,
    **sandbox_overrides: Any,
) -> FlowKit:
    """:func:`make_kit` with more sellers for split payments: each ``--wallet`` spec of
    ``seller_wallets`` (``seller-a:USD:2:0``) is a sandbox wallet publishing the kit's key and
    a seller of the same id in the store; ``wallets`` redefine the sandbox's others."""
    accounts = with_wallets(default_accounts(), [*wallets, *seller_wallets])
    kit = make_kit(tmp_path, monkeypatch, store_at=store_at, accounts=accounts, **sandbox_overrides)
    jwk = public_jwk(kit.sandbox.key, kit.sandbox.key_id)
    for spec in seller_wallets:
        name = spec.split(":", 1)[0]
        kit.sandbox.state.add_key(name, jwk)
        kit.store.add_seller(
            Seller(
                id=name,
                wallet_address_url=kit.sandbox.url(f"/{name}"),
                key_id=kit.sandbox.key_id,
                private_key_path=str(tmp_path / "seller.pem"),
                created_at=0.0,
            )
        )
    return kit
