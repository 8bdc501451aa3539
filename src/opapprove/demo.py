"""The whole approval flow on the embedded sandbox, as one call (``opapprove demo``).

It starts the sandbox and the finish listener on free loopback ports, makes a seller
with a fresh key, starts a quote, approves it the way a browser would (fetch the
consent page, press Approve, follow the redirect to the listener), waits for the
payment to complete and reports the seed's eight steps with their timings. Nothing is
printed here: ``on_step`` and the returned ``DemoResult`` are for the CLI to show.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from opapprove.approvals.flow import Flow
from opapprove.approvals.quote_check import terms_or_none
from opapprove.approvals.records import Leg, Pending, Seller, State
from opapprove.approvals.split import Payee
from opapprove.approvals.store import Store
from opapprove.openpayments.client import Exchange
from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.keys import Jwk, generate_private_key, public_jwk, write_private_key
from opapprove.openpayments.money import from_minor_units, to_minor_units
from opapprove.openpayments.rates import Rates, parse_rate
from opapprove.openpayments.transport import system_tls
from opapprove.servers.listener import create_listener_app
from opapprove.servers.sandbox import AccountConfig, FeePolicy, SandboxConfig, create_app
from opapprove.servers.sandbox.fx import Asset, debit_for
from opapprove.servers.serving import LateApp, serve_in_thread
from opapprove.settings import load_settings

# The currencies and fee of a run (`demo --buyer-asset EUR --fee 1% --rate EUR/USD=1.1`): the
# seller holds USD; the buyer holds 1000.00 USD worth of its asset at the demo's rates, which
# are also the quote check's reference rates. Round figures of late 2026, for a demo only.
DEMO_RATES = ("EUR/USD=1.08", "GBP/USD=1.27", "USD/MXN=17.05", "USD/JPY=150")
KNOWN_SCALES = {"USD": 2, "EUR": 2, "GBP": 2, "MXN": 2, "JPY": 0}
SELLER_ASSET = Asset("USD", 2)
BUYER_WORTH = 100_000  # 1000.00 USD
_ASSET = re.compile(r"\A([A-Za-z0-9]{1,12})(?::([0-9]{1,3}))?\Z")


@dataclass(frozen=True)
class DemoMoney:
    buyer: Asset = SELLER_ASSET
    fee: FeePolicy = field(default_factory=FeePolicy)
    rate_texts: tuple[str, ...] = DEMO_RATES

    @classmethod
    def parse(
        cls, buyer_asset: str | None = None, fee: str | None = None, rates: Sequence[str] = ()
    ) -> DemoMoney:
        """From the demo's options; :class:`AmountError` (one line and a hint) when wrong."""
        buyer = SELLER_ASSET
        if buyer_asset is not None:
            m = _ASSET.match(buyer_asset.strip())
            code = m[1].upper() if m else ""
            if m is None or (m[2] is None and code not in KNOWN_SCALES):
                raise AmountError(
                    f"--buyer-asset {buyer_asset!r} is not an asset I know the scale of",
                    hint="give CODE:SCALE, e.g. EUR:2 or JPY:0 (known: "
                    + ", ".join(KNOWN_SCALES)
                    + ")",
                )
            buyer = Asset(code, int(m[2]) if m[2] is not None else KNOWN_SCALES[code])
        given = {tuple(sorted(parse_rate(text)[:2])) for text in rates}
        texts = tuple(rates) + tuple(
            t for t in DEMO_RATES if tuple(sorted(parse_rate(t)[:2])) not in given
        )
        money = cls(buyer, FeePolicy.parse(fee) if fee else FeePolicy(), texts)
        money.buyer_balance()  # refuses an asset the rates cannot price
        return money

    @property
    def rates(self) -> Rates:
        return Rates.parse(self.rate_texts)

    def buyer_balance(self) -> int:
        return debit_for(BUYER_WORTH, self.buyer, SELLER_ASSET, self.rates, FeePolicy())

    def sandbox_settings(self, split_keys: Sequence[Jwk] = ()) -> dict[str, Any]:
        """``SandboxConfig`` keywords: the accounts, the rates and the fee.

        ``split_keys``: one more seller wallet per key (``seller-1``, ``seller-2``, ...,
        USD), each publishing its key, for a split payment (``demo --split N``)."""
        buyer = AccountConfig(
            name="buyer",
            public_name="Buyer",
            asset_code=self.buyer.code,
            asset_scale=self.buyer.scale,
            balance=self.buyer_balance(),
        )
        seller = AccountConfig(name="seller", public_name="Seller")
        sellers = [
            AccountConfig(name=f"seller-{n}", public_name=f"Seller {n}", keys=[key])
            for n, key in enumerate(split_keys, start=1)
        ]
        return {"accounts": [buyer, seller, *sellers], "rates": self.rates, "fee": self.fee}


def shares(amount: str, count: int) -> list[str]:
    """``amount`` (USD) split into ``count`` shares in whole cents, the last taking the rest."""
    if count < 2:
        raise AmountError(
            f"--split {count} is not a split payment: one pays 2 or more sellers",
            hint="give --split 2 or more, or leave --split out to pay one seller",
        )
    cents = to_minor_units(amount, SELLER_ASSET.scale)
    if cents < count:
        raise AmountError(
            f"{amount} USD cannot be split {count} ways in whole cents",
            hint="give an --amount of at least a cent per seller",
        )
    each = cents // count
    parts = [each] * (count - 1) + [cents - each * (count - 1)]
    return [from_minor_units(part, SELLER_ASSET.scale) for part in parts]


def legs(pending: Pending, rates: Rates, split: Sequence[Leg] = ()) -> list[dict[str, Any]]:
    """Each leg's debit and receive, rate and fee: one per seller (the grant's own for one)."""
    if not split:
        return [_leg_row(pending, rates)]
    return [_leg_row(leg, rates) for leg in split]


def _leg_row(part: Pending | Leg, rates: Rates) -> dict[str, Any]:
    terms = terms_or_none(part.debit_amount, part.receive_amount, rates)
    row: dict[str, Any] = {
        "seller": part.seller_id,
        "sellerWallet": part.seller_wallet,
        "state": str(part.state),
        "sentAmount": (part.outgoing_payment or {}).get("sentAmount"),
    }
    return row | (terms.to_json() if terms else {"debitAmount": None, "receiveAmount": None})


STEPS = {
    1: "Fetch wallet addresses (buyer and seller)",
    2: "Request incoming payment grant (seller's wallet)",
    3: "Create incoming payment",
    4: "Request quote grant (buyer's wallet)",
    5: "Create quote",
    6: "Request interactive outgoing payment grant",
    7: "Buyer approves in the wallet; redirect to the listener",
    8: "Continue grant, create outgoing payment, payment completed",
}


@dataclass
class DemoStep:
    number: int
    title: str
    seconds: float = 0.0
    requests: int = 0
    detail: str = ""


@dataclass
class DemoResult:
    pending: Pending
    steps: list[DemoStep]
    balances_before: dict[str, str]
    balances_after: dict[str, str]
    sandbox_url: str
    listener_url: str
    approval_url: str
    store_path: Path
    seconds: float
    exchanges: int = 0
    listener_events: list[dict[str, Any]] = field(default_factory=list)
    money: DemoMoney = field(default_factory=DemoMoney)
    # Each leg's debit, receive, rate and fee (one per seller: demo.legs()).
    legs: list[dict[str, Any]] = field(default_factory=list)


def classify(exchange: Exchange) -> int | None:
    """Which of the seed's steps a request belongs to, from its method, URL and body."""
    url, method = exchange.url, exchange.method
    body = exchange.request_body or b""
    if method == "GET" and "/op/" not in url and "/auth" not in url:
        return 1
    if method == "POST" and url.endswith("/auth"):
        if b'"incoming-payment"' in body:
            return 2
        if b'"quote"' in body:
            return 4
        return 6
    if method == "POST" and url.endswith("/op/incoming-payments"):
        return 3
    if method == "POST" and url.endswith("/op/quotes"):
        return 5
    return 8


def _balances(sandbox: Any) -> dict[str, str]:
    from opapprove.openpayments.money import from_minor_units

    return {
        a["name"]: f"{from_minor_units(a['balance'], a['assetScale'])} {a['assetCode']}"
        for a in sandbox.accounts_summary()
    }


async def press_approve(http: httpx.AsyncClient, approval_url: str) -> str:
    """Open the approval URL as a browser, press Approve; the client's finish location.

    As on Rafiki, the URL sends the browser to the wallet's identity provider (a session
    cookie, which ``http`` keeps), the decision is posted there, and the wallet's own
    finish step redirects to the client.
    """
    from html import unescape

    from opapprove.openpayments.interaction import BROWSER_ACCEPT

    page = await http.get(approval_url, headers={"Accept": BROWSER_ACCEPT}, follow_redirects=True)
    page.raise_for_status()
    form = re.search(
        r'<form method="post" action="([^"]+)">((?:<input [^>]*>)*)<button id="approve"', page.text
    )
    if form is None:
        raise RuntimeError("the consent page has no Approve form")
    fields = {k: unescape(v) for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', form[2])}
    response = await http.post(unescape(form[1]), data=fields)
    wallet = httpx.URL(approval_url)
    for _ in range(5):
        location = response.headers.get("location")
        if response.status_code not in (302, 303) or not location:
            raise RuntimeError(f"approving answered {response.status_code}, not a redirect")
        target = response.url.join(location)
        if (target.scheme, target.host, target.port) != (wallet.scheme, wallet.host, wallet.port):
            return str(location)
        response = await http.get(target)  # the wallet's own finish step
    raise RuntimeError("approving redirected too often within the wallet")


async def run_demo(
    *,
    amount: str = "12.34",
    offer_id: str = "demo-offer-1",
    work_dir: Path | None = None,
    on_step: Callable[[DemoStep], None] | None = None,
    on_exchange: Callable[[Exchange], None] | None = None,
    wait_for_person: Callable[[str], None] | None = None,
    person_timeout: float = 600.0,
    latency: float = 0.0,
    wait_seconds: int = 1,
    money: DemoMoney | None = None,
    split: int = 0,
) -> DemoResult:
    """Run the flow; ``wait_for_person`` (``--browser``) gets the URL and a person approves.

    ``split``: pay that many sellers (``seller-1``...) their share of ``amount`` with one
    approval, instead of the one seller."""
    started = time.perf_counter()
    money = money or DemoMoney()
    split_shares = shares(amount, split) if split else []
    work = work_dir or Path(tempfile.mkdtemp(prefix="opapprove-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    key_id = f"demo-{uuid.uuid4()}"
    key_path = work / "seller.pem"
    if key_path.exists():
        key_path.unlink()
    write_private_key(key_path, key)

    jwk = public_jwk(key, key_id)
    sandbox_app = create_app(
        SandboxConfig(
            seller_keys=[jwk],
            latency=latency,
            wait_seconds=wait_seconds,
            **money.sandbox_settings([jwk] * split),
        )
    )
    store_path = work / "opapprove.db"
    steps = {n: DemoStep(n, title) for n, title in STEPS.items()}
    spans: dict[int, list[tuple[float, float]]] = {n: [] for n in STEPS}
    exchanges = 0
    # The listener's flow reports from the server thread, the seller's from this one.
    lock = threading.Lock()

    def record(exchange: Exchange) -> None:
        nonlocal exchanges
        end = time.perf_counter()
        number = classify(exchange)
        with lock:
            exchanges += 1
            if number is not None:
                steps[number].requests += 1
                spans[number].append((end - exchange.elapsed, end))
        if on_exchange is not None:
            on_exchange(exchange)

    listener_events: list[dict[str, Any]] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def heard(event: dict[str, Any]) -> None:
        listener_events.append(event)
        if event.get("event") in ("finished", "failed", "rejected", "expired", "callback_refused"):
            loop.call_soon_threadsafe(done.set)

    with serve_in_thread(sandbox_app) as sandbox_server:
        sandbox = sandbox_app.sandbox
        before = _balances(sandbox)
        store = Store(store_path)
        seller = Seller(
            id="demo-seller",
            wallet_address_url=f"{sandbox_server.url}/seller",
            key_id=key_id,
            private_key_path=str(key_path),
            created_at=time.time(),
        )
        store.add_seller(seller, replace=True)
        payees = []
        for n, share in enumerate(split_shares, start=1):
            store.add_seller(
                Seller(
                    id=f"demo-seller-{n}",
                    wallet_address_url=f"{sandbox_server.url}/seller-{n}",
                    key_id=key_id,
                    private_key_path=str(key_path),
                    created_at=time.time(),
                ),
                replace=True,
            )
            payees.append(Payee(f"demo-seller-{n}", share))
        # The listener's own flow, store connection and event loop, as `opapprove listen` has.
        listener_store = Store(store_path)
        late = LateApp()
        with serve_in_thread(late) as listener_server:
            settings = load_settings(
                base_url=listener_server.url,
                store=store_path,
                seller_id=seller.id,
                reference_rates=list(money.rate_texts),
            )
            listener_flow = Flow(listener_store, settings, on_exchange=record)
            late.inner = create_listener_app(listener_flow, on_event=heard)
            flow = Flow(store, settings, on_exchange=record)
            try:
                pending = await flow.start_quote(
                    offer_id=offer_id,
                    buyer_wallet=f"{sandbox_server.url}/buyer",
                    amount=amount,
                    payees=payees or None,
                )
                approval_url = pending.interact_redirect or ""
                for n in range(1, 7):
                    _settle(steps[n], spans[n])
                    _report(steps[n], on_step)
                t7 = time.perf_counter()
                if wait_for_person is not None:
                    wait_for_person(approval_url)
                    await asyncio.wait_for(done.wait(), timeout=person_timeout)
                    steps[7].seconds = time.perf_counter() - t7
                    steps[7].detail = "approved by a person in the browser"
                else:
                    async with httpx.AsyncClient(timeout=60, verify=system_tls()) as browser:
                        location = await press_approve(browser, approval_url)
                        steps[7].seconds = time.perf_counter() - t7
                        steps[7].detail = "consent page fetched, Approve pressed"
                        t8 = time.perf_counter()
                        page = await browser.get(location)
                    await asyncio.wait_for(done.wait(), timeout=60)
                pending = await flow.refresh(pending.id)
                deadline = time.perf_counter() + 30
                while pending.state == State.PAYMENT_CREATED and time.perf_counter() < deadline:
                    await asyncio.sleep(0.2)
                    pending = await flow.refresh(pending.id)
                detail = f"listener verified the hash; state {pending.state}"
                if wait_for_person is None:
                    # The listener's page answers at once and pays in the background: the
                    # step lasts from the redirect until the payment is done, wait included.
                    steps[8].seconds = time.perf_counter() - t8
                    if wait_seconds:
                        detail += f" (includes the wallet's continue.wait of {wait_seconds} s)"
                else:
                    _settle(steps[8], spans[8])
                if wait_for_person is None:
                    detail = f"listener page HTTP {page.status_code}; " + detail
                steps[8].detail = detail
                _report(steps[7], on_step)
                _report(steps[8], on_step)
            finally:
                await flow.aclose()
                # Its HTTP client belongs to the listener thread's event loop.
                late.run(listener_flow.aclose())
        after = _balances(sandbox)
        leg_rows = legs(pending, money.rates, store.legs(pending.id))
        listener_store.close()
        store.close()
    return DemoResult(
        pending=pending,
        steps=[steps[n] for n in sorted(steps)],
        balances_before=before,
        balances_after=after,
        sandbox_url=sandbox_server.url,
        listener_url=listener_server.url,
        approval_url=approval_url,
        store_path=store_path,
        seconds=time.perf_counter() - started,
        exchanges=exchanges,
        listener_events=listener_events,
        money=money,
        legs=leg_rows,
    )


def _report(step: DemoStep, on_step: Callable[[DemoStep], None] | None) -> None:
    if on_step is not None:
        on_step(step)


def _settle(step: DemoStep, spans: list[tuple[float, float]]) -> None:
    """A step's time: from its first request's start to its last one's end."""
    if spans:
        step.seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    if step.number in (2, 4):
        step.detail = "both grants at once; reused from the store when cached"
    if step.number == 1:
        step.detail = "both at once"
