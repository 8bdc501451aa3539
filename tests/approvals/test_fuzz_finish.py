"""Fuzzing finish redirects: any string given to ``Flow.finish_url`` is a FlowError or an outcome.

Each example gets a fresh grant awaiting approval (written straight into the store), then
a URL: arbitrary text, a well-formed redirect with fuzzed parameters, or a raw query. The
wallet is never reached (no fuzzed hash can match), and the grant row stays readable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import FINAL_STATES, Pending, Seller, State
from opapprove.approvals.store import Store
from opapprove.openpayments.keys import generate_private_key, write_private_key
from opapprove.settings import load_settings

FUZZ = settings(max_examples=200, deadline=None)
FINISH = "http://127.0.0.1:3999/payments/finish"
PARAMS = ["pendingId", "interact_ref", "hash", "result", "message", "pendingid", "x"]
RESULTS = ["grant_rejected", "grant_invalid", "invalid_interaction", "unknown_interaction", ""]


@dataclass
class Bench:
    store: Store
    flow: Flow
    wallet_calls: list[str]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("finish-fuzz")
    key_path = tmp / "seller.pem"
    write_private_key(key_path, generate_private_key())
    store = Store(tmp / "store.db")
    store.add_seller(
        Seller(
            id="default-seller",
            wallet_address_url="https://wallet.example/shop",
            key_id="k1",
            private_key_path=str(key_path),
            created_at=0.0,
        )
    )
    calls: list[str] = []

    def wallet(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(503)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp / "config"))
        settings_ = load_settings(store=tmp / "store.db")
    flow = Flow(store, settings_, transport=httpx.MockTransport(wallet))
    yield Bench(store, flow, calls)
    asyncio.run(flow.aclose())
    store.close()


def awaiting(store: Store) -> Pending:
    """A grant in ``awaiting_approval`` with what a finish needs, without any network."""
    pending = store.create_pending(
        seller_id="default-seller",
        offer_id="offer-fuzz",
        buyer_wallet="https://wallet.example/buyer",
        amount="1.00",
    )
    store.transition(
        pending.id,
        State.INCOMING_CREATED,
        expect=State.STARTED,
        incoming_payment_url="https://wallet.example/op/incoming-payments/1",
    )
    store.transition(
        pending.id,
        State.QUOTE_CREATED,
        expect=State.INCOMING_CREATED,
        quote_url="https://wallet.example/op/quotes/1",
    )
    return store.transition(
        pending.id,
        State.AWAITING_APPROVAL,
        expect=State.QUOTE_CREATED,
        client_nonce="client-nonce",
        server_finish_nonce="server-nonce",
        grant_url="https://wallet.example/auth",
        interact_redirect="https://wallet.example/interact/1/2",
        continue_uri="https://wallet.example/auth/continue/1",
        continue_token="cont",
    )


texts = st.text(max_size=40)
query_values = texts | st.sampled_from(RESULTS) | st.sampled_from(["expired", "x" * 300])


@st.composite
def redirects(draw: st.DrawFn, pending_id: str) -> str:
    """A finish URL whose parameters are fuzzed (the real pendingId most of the time)."""
    params: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)) > 0:
        params.append(("pendingId", pending_id))
    for _ in range(draw(st.integers(0, 5))):
        params.append((draw(st.sampled_from(PARAMS)), draw(query_values)))
    query = urlencode(params)
    if draw(st.booleans()):
        query += "&" + draw(texts)  # raw, unencoded text in the query
    return draw(st.sampled_from([FINISH, "", "https://elsewhere.example/x", FINISH + "/"])) + (
        "?" + query if query else ""
    )


@FUZZ
@given(data=st.data())
@example(data=None)
def test_any_finish_url_is_a_flow_error_or_an_outcome(bench: Bench, data: Any) -> None:
    pending = awaiting(bench.store)
    if data is None:
        url = f"{FINISH}?pendingId={pending.id}&result=grant_rejected"
    else:
        url = data.draw(texts | redirects(pending.id) | st.just(f"{FINISH}?pendingId={pending.id}"))
    try:
        outcome = asyncio.run(bench.flow.finish_url(url))
    except FlowError as exc:
        # What a person sees: the CLI folds whitespace into one line (see the test below).
        assert exc.message.strip() and exc.hint is not None and exc.exit_code > 1
    else:
        assert outcome.id == pending.id
    after = bench.store.get_pending(pending.id)
    assert after is not None
    assert after.state == State.AWAITING_APPROVAL or after.state in FINAL_STATES
    assert bench.wallet_calls == [], "a fuzzed redirect must never reach the wallet"


def test_a_finish_url_with_undecodable_bytes_is_a_flow_error(bench: Bench) -> None:
    with pytest.raises(FlowError):
        asyncio.run(bench.flow.finish_url(f"{FINISH}?pendingId=\udcff"))


def test_the_fuzz_grant_is_what_finish_expects(bench: Bench) -> None:
    """A wrong hash on the fuzz grant is refused as forged: the set-up is realistic."""
    pending = awaiting(bench.store)
    with pytest.raises(FlowError) as err:
        asyncio.run(
            bench.flow.finish_url(f"{FINISH}?pendingId={pending.id}&interact_ref=r&hash=AAAA")
        )
    assert err.value.kind == "verification"
    assert "callback_refused" in [e.kind for e in bench.store.events(pending.id)]


def test_a_result_with_a_line_break_stays_one_line(bench: Bench) -> None:
    pending = awaiting(bench.store)
    url = f"{FINISH}?pendingId={pending.id}&result=grant_invalid%0Aforged&message=a%0Ab"
    with pytest.raises(FlowError) as err:
        asyncio.run(bench.flow.finish_url(url))
    (noted,) = [e.data for e in bench.store.events(pending.id) if e.kind == "wallet_result"]
    assert "\n" not in str(err.value)
    assert "\n" not in noted["result"] and "\n" not in noted["message"]
