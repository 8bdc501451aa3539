"""The blocking client, against the embedded sandbox on real loopback HTTP."""

from __future__ import annotations

import asyncio
import gc
import inspect
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from opapprove.openpayments import errors
from opapprove.openpayments import models as m
from opapprove.openpayments.client import OpenPaymentsClient
from opapprove.openpayments.exchange import Exchange
from opapprove.openpayments.keys import generate_private_key
from opapprove.openpayments.sync_client import CLOSED, IN_RUNNING_LOOP, SyncOpenPaymentsClient
from tests.sandbox_fixtures import Sandbox, make_sandbox

ALL_INCOMING: tuple[m.IncomingPaymentAction, ...] = ("create", "read", "list", "complete")


def usd(value: str) -> m.AmountModel:
    return m.AmountModel(value=value, asset_code="USD", asset_scale=2)


@pytest.fixture
def served() -> Iterator[tuple[Sandbox, str]]:
    """A fresh sandbox on loopback, its clock on real time; spec-checked when it closes."""
    box = make_sandbox()
    box.clock.now = time.time()
    with box.served() as server:
        yield box, server.url
    box.recorder.assert_clean()
    box.state.close()


def sync_client(box: Sandbox, url: str, **kwargs: Any) -> SyncOpenPaymentsClient:
    return SyncOpenPaymentsClient(
        wallet_address_url=f"{url}/seller", key=box.key, key_id=box.key_id, **kwargs
    )


class StreamRecorder(httpx.BaseTransport):
    """httpx's own transport, noting which connection (network stream) each answer came on."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.streams: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.streams.append(id(response.extensions["network_stream"]))
        return response

    def close(self) -> None:
        self.inner.close()


def approve(url: str, redirect: str) -> None:
    answer = httpx.post(f"{url}/_admin/approve", json={"redirect": redirect})
    assert answer.status_code == 200, answer.text


# --------------------------------------------------------------------------- flows


def test_incoming_quote_and_interactive_grant(served: tuple[Sandbox, str]) -> None:
    box, url = served
    seller, buyer = f"{url}/seller", f"{url}/buyer"
    exchanges: list[Exchange] = []
    streams = StreamRecorder()
    with sync_client(box, url, transport=streams, on_exchange=exchanges.append) as op:
        wallet = op.get_wallet_address(seller)
        assert (wallet.id, wallet.asset_code, wallet.asset_scale) == (seller, "USD", 2)
        assert (wallet.auth_server, wallet.resource_server) == (f"{url}/auth", f"{url}/op")
        assert [k.kid for k in op.get_keys(seller).keys] == [box.key_id]

        grant = op.request_grant(
            wallet.auth_server, m.incoming_payment_grant(seller, actions=ALL_INCOMING)
        )
        assert isinstance(grant, m.Grant) and grant.access_token is not None
        ip_token = grant.access_token.value
        rs = wallet.resource_server
        created = [
            op.create_incoming_payment(
                rs,
                ip_token,
                m.CreateIncomingPayment(
                    wallet_address=seller, incoming_amount=usd(value), metadata={"n": value}
                ),
            )
            for value in ("100", "250", "1234")
        ]
        assert all(p.received_amount == usd("0") and not p.completed for p in created)
        assert created[0].methods[0].ilp_address == "test.opapprove.seller"
        got = op.get_incoming_payment(created[2].id, ip_token)
        assert (got.id, got.incoming_amount, got.metadata) == (
            created[2].id,
            usd("1234"),
            {"n": "1234"},
        )
        public = op.get_public_incoming_payment(created[2].id)
        assert public.auth_server == wallet.auth_server

        # Newest first, two to a page.
        newest_first = [p.id for p in reversed(created)]
        first = op.list_incoming_payments(rs, ip_token, seller, first=2)
        assert [p.id for p in first.result] == newest_first[:2]
        assert first.pagination.has_next_page
        second = op.list_incoming_payments(
            rs, ip_token, seller, first=2, cursor=first.pagination.end_cursor
        )
        assert [p.id for p in second.result] == newest_first[2:]
        assert not second.pagination.has_next_page

        def lists() -> int:
            return sum(e.operation == "list-incoming-payments" for e in exchanges)

        before = lists()
        walk = op.iter_incoming_payments(rs, ip_token, seller, page_size=2)
        assert lists() == before  # nothing fetched until asked
        assert next(walk).id == newest_first[0]
        assert lists() == before + 1
        assert [p.id for p in walk] == newest_first[1:]
        assert lists() == before + 2

        quote_grant = op.request_grant(wallet.auth_server, m.quote_grant(seller))
        assert isinstance(quote_grant, m.Grant) and quote_grant.access_token is not None
        quote_token = quote_grant.access_token.value
        quote = op.create_quote(
            rs, quote_token, m.CreateQuote(wallet_address=buyer, receiver=created[2].id)
        )
        assert (quote.receiver, quote.wallet_address) == (created[2].id, buyer)
        assert quote.debit_amount == quote.receive_amount == usd("1234")
        assert op.get_quote(quote.id, quote_token) == quote

        request = m.outgoing_payment_grant(
            seller,
            buyer,
            quote.debit_amount,
            receiver=created[2].id,
            finish_uri="http://127.0.0.1:3999/finish",
            nonce="sync-nonce",
        )
        pending = op.request_grant(wallet.auth_server, request)
        assert isinstance(pending, m.PendingGrant)
        assert pending.interact is not None
        assert pending.interact.redirect.startswith(f"{url}/interact/")
        cont = pending.continue_
        op.cancel_grant(cont.uri, cont.access_token.value)
        with pytest.raises(errors.GrantError) as cancelled:
            op.continue_grant(cont.uri, cont.access_token.value, "any-ref")
        assert (cancelled.value.status, cancelled.value.code) == (401, "invalid_continuation")

    # Every call went over one kept-alive connection.
    assert len(streams.streams) == len(exchanges) > 10
    assert len(set(streams.streams)) == 1


def test_polled_grant_and_outgoing_payments(served: tuple[Sandbox, str]) -> None:
    box, url = served
    seller, buyer = f"{url}/seller", f"{url}/buyer"
    auth, rs = f"{url}/auth", f"{url}/op"
    buyer_before = box.state.balance("buyer")
    with sync_client(box, url) as op:
        ip_grant = op.request_grant(auth, m.incoming_payment_grant(seller, actions=ALL_INCOMING))
        assert isinstance(ip_grant, m.Grant) and ip_grant.access_token is not None
        ip_token = ip_grant.access_token.value
        incoming = [
            op.create_incoming_payment(rs, ip_token, m.CreateIncomingPayment(wallet_address=seller))
            for _ in range(3)
        ]

        pending = op.request_grant(
            auth,
            m.outgoing_payment_grant(seller, buyer, usd("600"), actions=("create", "read", "list")),
        )
        assert isinstance(pending, m.PendingGrant) and pending.interact is not None
        approve(url, pending.interact.redirect)
        grant = op.poll_grant(
            pending.continue_.uri, pending.continue_.access_token.value, wait=0, timeout=10
        )
        assert grant.access_token is not None
        token = grant.access_token.value

        payments = [
            op.create_outgoing_payment(
                rs,
                token,
                m.CreateOutgoingPayment(
                    wallet_address=buyer, incoming_payment=ip.id, debit_amount=usd("200")
                ),
            )
            for ip in incoming
        ]
        # Created unsent; grantSpent* is what was spent before each (Rafiki 6b).
        assert [p.sent_amount for p in payments] == [usd("0")] * 3
        assert payments[-1].grant_spent_debit_amount == usd("400")
        assert box.state.balance("buyer") == buyer_before - 600
        assert op.get_outgoing_payment(payments[0].id, token).sent_amount == usd("200")
        page = op.list_outgoing_payments(rs, token, buyer, first=1)
        assert [p.id for p in page.result] == [payments[-1].id]
        walked = [p.id for p in op.iter_outgoing_payments(rs, token, buyer, page_size=1)]
        assert walked == [p.id for p in reversed(payments)]
        spent = op.get_grant_spent_amounts(rs, token)
        assert spent.spent_debit_amount == usd("600")

        done = op.complete_incoming_payment(incoming[0].id, ip_token)
        assert done.completed and done.received_amount == usd("200")

        rotated = op.rotate_token(grant.access_token.manage, token)
        assert rotated.value != token
        op.revoke_token(rotated.manage, rotated.value)
        with pytest.raises(errors.ResourceError) as revoked:
            op.get_outgoing_payment(payments[0].id, rotated.value)
        assert (revoked.value.status, revoked.value.description) == (403, "Inactive Token")


# --------------------------------------------------------------------------- errors


def _error_of(call: Callable[[], object]) -> errors.OpenPaymentsError:
    with pytest.raises(errors.OpenPaymentsError) as info:
        call()
    return info.value


def test_errors_are_the_async_clients_own(served: tuple[Sandbox, str]) -> None:
    box, url = served
    wallet = f"{url}/seller"
    with sync_client(box, url) as op:
        grant = op.request_grant(f"{url}/auth", m.incoming_payment_grant(wallet))
        assert isinstance(grant, m.Grant) and grant.access_token is not None
        ip_url = op.create_incoming_payment(
            f"{url}/op", grant.access_token.value, m.CreateIncomingPayment(wallet_address=wallet)
        ).id
    refused = "http://127.0.0.1:9/seller"

    async def async_errors() -> list[errors.OpenPaymentsError]:
        found = []
        async with OpenPaymentsClient(
            wallet_address_url=wallet, key=box.key, key_id=box.key_id, retries=0
        ) as op:
            for call in (
                lambda: op.get_incoming_payment(ip_url, "not-a-token"),
                lambda: op.continue_grant(f"{url}/auth/continue/nope", "not-a-token"),
                lambda: op.get_wallet_address(refused),
            ):
                with pytest.raises(errors.OpenPaymentsError) as info:
                    await call()
                found.append(info.value)
        return found

    expected = asyncio.run(async_errors())
    with sync_client(box, url, retries=0) as op:
        got = [
            _error_of(lambda: op.get_incoming_payment(ip_url, "not-a-token")),
            _error_of(lambda: op.continue_grant(f"{url}/auth/continue/nope", "not-a-token")),
            _error_of(lambda: op.get_wallet_address(refused)),
        ]
        # The client is still fine after errors.
        assert op.get_wallet_address(wallet).id == wallet

    assert [type(e) for e in got] == [
        errors.ResourceError,
        errors.GrantError,
        errors.TransportError,
    ]
    assert [type(e) for e in got] == [type(e) for e in expected]
    for sync_error, async_error in zip(got, expected, strict=True):
        assert str(sync_error) == str(async_error)
        assert vars(sync_error) == vars(async_error)
        # Nothing of asyncio or httpx is chained onto it, as nothing is onto the async one.
        assert sync_error.__cause__ is sync_error.__context__ is async_error.__context__ is None
    assert [getattr(e, "status", None) for e in got] == [401, 404, None]


def test_constructor_refuses_like_the_async_one() -> None:
    key = generate_private_key()
    with pytest.raises(errors.KeyLoadError):
        SyncOpenPaymentsClient(key=key)
    with pytest.raises(ValueError, match="retries"):
        SyncOpenPaymentsClient(retries=-1)


# --------------------------------------------------------------------------- misuse


@contextmanager
def no_coroutine_left_unawaited() -> Iterator[None]:
    """Fails if a coroutine made in the block is dropped without being run or closed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    unawaited = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert not unawaited


def refusal(call: Callable[[], object]) -> tuple[str, bool]:
    """The RuntimeError's message, and whether anything is chained onto it.

    Only these are kept: the exception's traceback would keep a dropped coroutine alive
    past the warning check.
    """
    with pytest.raises(RuntimeError) as info:
        call()
    error = info.value
    return str(error), error.__cause__ is not None or error.__context__ is not None


def test_inside_a_running_loop_it_fails_at_once(served: tuple[Sandbox, str]) -> None:
    box, url = served
    op = sync_client(box, url)

    async def misuse() -> list[tuple[str, bool]]:
        return [
            refusal(lambda: op.get_wallet_address(f"{url}/seller")),
            refusal(lambda: op.iter_incoming_payments(f"{url}/op", "token", f"{url}/seller")),
            refusal(op.close),
        ]

    with no_coroutine_left_unawaited():
        found = asyncio.run(misuse())
    assert found == [(IN_RUNNING_LOOP, False)] * 3
    assert "use OpenPaymentsClient there, with await" in IN_RUNNING_LOOP

    # Outside the loop the same client works, and close() (refused above) still closes.
    assert op.get_wallet_address(f"{url}/seller").id == f"{url}/seller"
    op.close()
    assert op._client._http.is_closed


def test_close_is_idempotent_and_calls_after_it_fail(served: tuple[Sandbox, str]) -> None:
    box, url = served
    with sync_client(box, url) as op:
        assert op.get_wallet_address(f"{url}/buyer").asset_code == "USD"
    assert op._client._http.is_closed
    op.close()
    op.close()
    with no_coroutine_left_unawaited():
        assert refusal(lambda: op.get_wallet_address(f"{url}/buyer")) == (CLOSED, False)
        walk = refusal(lambda: op.iter_outgoing_payments(f"{url}/op", "token", f"{url}/buyer"))
        assert walk == (CLOSED, False)

    never_used = SyncOpenPaymentsClient()
    never_used.close()
    never_used.close()


def test_a_walk_left_half_way_does_not_stop_close(served: tuple[Sandbox, str]) -> None:
    box, url = served
    seller = f"{url}/seller"
    with sync_client(box, url) as op:
        grant = op.request_grant(
            f"{url}/auth", m.incoming_payment_grant(seller, actions=ALL_INCOMING)
        )
        assert isinstance(grant, m.Grant) and grant.access_token is not None
        for _ in range(3):
            op.create_incoming_payment(
                f"{url}/op",
                grant.access_token.value,
                m.CreateIncomingPayment(wallet_address=seller),
            )
        walk = op.iter_incoming_payments(f"{url}/op", grant.access_token.value, seller, page_size=1)
        assert next(walk).wallet_address == seller
    with no_coroutine_left_unawaited():
        assert refusal(lambda: next(walk)) == (CLOSED, False)


def test_repr() -> None:
    op = SyncOpenPaymentsClient(wallet_address_url="https://w.example/shop")
    try:
        assert repr(op) == (
            "SyncOpenPaymentsClient(wallet_address_url='https://w.example/shop', "
            "key_id=None, signing=False)"
        )
    finally:
        op.close()


# --------------------------------------------------------------------------- drift guard

# What the sync client leaves out on purpose: an awaited sleep means nothing to its callers.
LEFT_OUT = {"poll_grant": {"sleep"}}


def _public_methods(cls: type) -> list[str]:
    return sorted(
        name
        for name, value in vars(cls).items()
        if not name.startswith("_") and callable(value) and name != "aclose"
    )


def _shape(signature: inspect.Signature, drop: set[str]) -> list[tuple[Any, ...]]:
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in signature.parameters.values()
        if p.name not in drop
    ]


def test_every_async_method_has_a_sync_twin() -> None:
    names = _public_methods(OpenPaymentsClient)
    assert "iter_incoming_payments" in names and "get_grant_spent_amounts" in names
    assert set(_public_methods(SyncOpenPaymentsClient)) == {*names, "close"}
    for name in names:
        async_sig = inspect.signature(getattr(OpenPaymentsClient, name))
        sync_method = getattr(SyncOpenPaymentsClient, name)
        sync_sig = inspect.signature(sync_method)
        drop = LEFT_OUT.get(name, set())
        assert drop <= set(async_sig.parameters), f"{name}: LEFT_OUT names a missing parameter"
        assert _shape(sync_sig, set()) == _shape(async_sig, drop), name
        # Annotations are strings (postponed); the async iterators become plain ones.
        assert sync_sig.return_annotation == async_sig.return_annotation.replace(
            "AsyncIterator", "Iterator"
        ), name
        assert not inspect.iscoroutinefunction(sync_method), name


# The blocking twins of the async client's async-typed arguments (issue 14: no async types
# in the sync client's signature): same name and place, a blocking type.
BLOCKING_TWINS = {"transport", "sleep"}


def test_constructor_arguments_match() -> None:
    sync_sig = inspect.signature(SyncOpenPaymentsClient)
    async_sig = inspect.signature(OpenPaymentsClient)
    assert _shape(sync_sig, BLOCKING_TWINS) == _shape(async_sig, BLOCKING_TWINS)
    assert [(p.name, p.kind) for p in sync_sig.parameters.values()] == [
        (p.name, p.kind) for p in async_sig.parameters.values()
    ]
    for name in BLOCKING_TWINS:
        assert "Async" not in str(sync_sig.parameters[name].annotation)
        assert "Awaitable" not in str(sync_sig.parameters[name].annotation)


def test_a_blocking_transport_and_sleep_serve_the_sync_client() -> None:
    slept: list[float] = []
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"})
        return httpx.Response(
            200,
            json={
                "id": str(request.url),
                "publicName": "Shop",
                "assetCode": "USD",
                "assetScale": 2,
                "authServer": "https://auth.example",
                "resourceServer": "https://rs.example",
            },
        )

    with SyncOpenPaymentsClient(
        transport=httpx.MockTransport(answer), sleep=slept.append, retry_backoff=0.5
    ) as op:
        wallet = op.get_wallet_address("https://w.example/shop")
    assert (wallet.public_name, calls) == ("Shop", ["/shop", "/shop"])
    assert slept == [0.5]


def test_poll_grant_waits_with_the_clients_own_sleep() -> None:
    continuing = {"access_token": {"value": "t"}, "uri": "https://as.example/continue/1"}
    answers = [
        {"continue": {**continuing, "wait": 1}},
        {
            "access_token": {
                "value": "granted",
                "manage": "https://as.example/token/1",
                "access": [{"type": "quote", "actions": ["create"]}],
            },
            "continue": continuing,
        },
    ]
    slept: list[float] = []
    with SyncOpenPaymentsClient(
        key=generate_private_key(),
        key_id="k",
        transport=httpx.MockTransport(lambda _: httpx.Response(200, json=answers.pop(0))),
        sleep=slept.append,
    ) as op:
        grant = op.poll_grant("https://as.example/continue/1", "t", wait=0.5, timeout=60)
    assert grant.access_token is not None and grant.access_token.value == "granted"
    assert slept == [0.5, 1.0]
