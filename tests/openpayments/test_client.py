"""Every client operation: what goes on the wire (method, URL, headers, body, signature)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from opapprove.openpayments import models as m
from opapprove.openpayments.client import OpenPaymentsClient, is_pending
from opapprove.openpayments.money import Amount
from opapprove.openpayments.signatures import content_digest
from tests.import_watch import imported_by_opapprove
from tests.openpayments.client_support import (
    ACCESS_TOKEN,
    ALICE,
    AUTH,
    CLIENT_WALLET,
    COMPLETED_DOC,
    CONTINUE_TOKEN,
    CONTINUE_URI,
    CREATED,
    GRANT_DOC,
    INCOMING_DOC,
    INCOMING_WITH_METHODS_DOC,
    IP_ID,
    JWKS_DOC,
    KEY,
    KID,
    MANAGE,
    OP_ID,
    OUTGOING_DOC,
    OUTGOING_WITH_SPENT_DOC,
    PENDING_DOC,
    POLL_PENDING_DOC,
    PUBLIC_INCOMING_DOC,
    QUOTE_DOC,
    QUOTE_ID,
    RS,
    SHARED_SECRET,
    SPENT_DOC,
    WALLET_DOC,
    body_of,
    make_client,
    page,
    run,
    run_with,
    usd,
    verify,
)
from tests.spec_check import check_request_body, check_response

# The spec puts `additionalProperties: false` next to a `$ref` for these two responses,
# which JSON Schema 2020-12 reads as "no properties at all": no real answer can pass.
SPEC_RESPONSE_QUIRKS = {"list-incoming-payments", "complete-incoming-payment"}

Call = Callable[[OpenPaymentsClient], Awaitable[Any]]


@dataclass(frozen=True)
class Op:
    name: str
    operation_id: str
    method: str
    url: str
    call: Call
    status: int
    response: Any
    token: str | None
    sent: Any = None
    result: type | tuple[type, ...] = object
    params: dict[str, str] | None = None


OUTGOING_FROM_QUOTE = m.CreateOutgoingPayment(
    wallet_address=ALICE, quote_id=QUOTE_ID, metadata={"order": "42"}
)
OUTGOING_FROM_INCOMING = m.CreateOutgoingPayment(
    wallet_address=ALICE,
    incoming_payment=IP_ID,
    debit_amount=Amount.parse("25.00", "USD", 2),
)
INCOMING_BODY = m.CreateIncomingPayment(
    wallet_address=ALICE, incoming_amount=Amount(2500, "USD", 2), metadata={"externalRef": "INV-1"}
)
QUOTE_BODY = m.CreateQuote(wallet_address=ALICE, receiver=IP_ID, debit_amount=usd(2600))
GRANT_BODY = m.outgoing_payment_grant(
    CLIENT_WALLET,
    ALICE,
    Amount(2600, "USD", 2),
    receiver=IP_ID,
    finish_uri="http://127.0.0.1:3999/finish?pendingId=42",
    nonce="client-nonce",
)

OPS = [
    Op(
        "get_wallet_address",
        "get-wallet-address",
        "GET",
        ALICE,
        lambda op: op.get_wallet_address(ALICE),
        200,
        WALLET_DOC,
        None,
        result=m.WalletAddress,
    ),
    Op(
        "get_keys",
        "get-wallet-address-keys",
        "GET",
        f"{ALICE}/jwks.json",
        lambda op: op.get_keys(ALICE + "/"),
        200,
        JWKS_DOC,
        None,
        result=m.JWKS,
    ),
    Op(
        "request_grant",
        "post-request",
        "POST",
        AUTH,
        lambda op: op.request_grant(AUTH, GRANT_BODY),
        200,
        PENDING_DOC,
        None,
        sent=GRANT_BODY.to_wire(),
        result=m.PendingGrant,
    ),
    Op(
        "continue_grant",
        "post-continue",
        "POST",
        CONTINUE_URI,
        lambda op: op.continue_grant(CONTINUE_URI, CONTINUE_TOKEN, "REF1"),
        200,
        GRANT_DOC,
        CONTINUE_TOKEN,
        sent={"interact_ref": "REF1"},
        result=m.Grant,
    ),
    Op(
        "continue_grant_poll",
        "post-continue",
        "POST",
        CONTINUE_URI,
        lambda op: op.continue_grant(CONTINUE_URI, CONTINUE_TOKEN),
        200,
        POLL_PENDING_DOC,
        CONTINUE_TOKEN,
        result=m.PendingGrant,
    ),
    Op(
        "cancel_grant",
        "delete-continue",
        "DELETE",
        CONTINUE_URI,
        lambda op: op.cancel_grant(CONTINUE_URI, CONTINUE_TOKEN),
        204,
        None,
        CONTINUE_TOKEN,
        result=type(None),
    ),
    Op(
        "rotate_token",
        "post-token",
        "POST",
        MANAGE,
        lambda op: op.rotate_token(MANAGE, ACCESS_TOKEN),
        200,
        {"access_token": {**GRANT_DOC["access_token"], "value": "NEW", "manage": MANAGE + "-2"}},
        ACCESS_TOKEN,
        result=m.AccessToken,
    ),
    Op(
        "revoke_token",
        "delete-token",
        "DELETE",
        MANAGE,
        lambda op: op.revoke_token(MANAGE, ACCESS_TOKEN),
        204,
        None,
        ACCESS_TOKEN,
        result=type(None),
    ),
    Op(
        "create_incoming_payment",
        "create-incoming-payment",
        "POST",
        f"{RS}/incoming-payments",
        lambda op: op.create_incoming_payment(RS + "/", ACCESS_TOKEN, INCOMING_BODY),
        201,
        INCOMING_WITH_METHODS_DOC,
        ACCESS_TOKEN,
        sent=INCOMING_BODY.to_wire(),
        result=m.IncomingPaymentWithMethods,
    ),
    Op(
        "get_incoming_payment",
        "get-incoming-payment",
        "GET",
        IP_ID,
        lambda op: op.get_incoming_payment(IP_ID, ACCESS_TOKEN),
        200,
        INCOMING_WITH_METHODS_DOC,
        ACCESS_TOKEN,
        result=m.IncomingPaymentWithMethods,
    ),
    Op(
        "get_public_incoming_payment",
        "get-incoming-payment",
        "GET",
        IP_ID,
        lambda op: op.get_public_incoming_payment(IP_ID),
        200,
        PUBLIC_INCOMING_DOC,
        None,
        result=m.PublicIncomingPayment,
    ),
    Op(
        "complete_incoming_payment",
        "complete-incoming-payment",
        "POST",
        f"{IP_ID}/complete",
        lambda op: op.complete_incoming_payment(IP_ID, ACCESS_TOKEN),
        200,
        COMPLETED_DOC,
        ACCESS_TOKEN,
        result=m.IncomingPayment,
    ),
    Op(
        "list_incoming_payments",
        "list-incoming-payments",
        "GET",
        f"{RS}/incoming-payments",
        lambda op: op.list_incoming_payments(RS, ACCESS_TOKEN, ALICE, first=10, cursor="c1"),
        200,
        page([INCOMING_DOC], end="c2"),
        ACCESS_TOKEN,
        result=m.Page,
        params={"wallet-address": ALICE, "first": "10", "cursor": "c1"},
    ),
    Op(
        "create_quote",
        "create-quote",
        "POST",
        f"{RS}/quotes",
        lambda op: op.create_quote(RS, ACCESS_TOKEN, QUOTE_BODY),
        201,
        QUOTE_DOC,
        ACCESS_TOKEN,
        sent=QUOTE_BODY.to_wire(),
        result=m.Quote,
    ),
    Op(
        "get_quote",
        "get-quote",
        "GET",
        QUOTE_ID,
        lambda op: op.get_quote(QUOTE_ID, ACCESS_TOKEN),
        200,
        QUOTE_DOC,
        ACCESS_TOKEN,
        result=m.Quote,
    ),
    Op(
        "create_outgoing_payment_from_quote",
        "create-outgoing-payment",
        "POST",
        f"{RS}/outgoing-payments",
        lambda op: op.create_outgoing_payment(RS, ACCESS_TOKEN, OUTGOING_FROM_QUOTE),
        201,
        OUTGOING_WITH_SPENT_DOC,
        ACCESS_TOKEN,
        sent=OUTGOING_FROM_QUOTE.to_wire(),
        result=m.OutgoingPaymentWithSpentAmounts,
    ),
    Op(
        "create_outgoing_payment_from_incoming",
        "create-outgoing-payment",
        "POST",
        f"{RS}/outgoing-payments",
        lambda op: op.create_outgoing_payment(RS, ACCESS_TOKEN, OUTGOING_FROM_INCOMING),
        201,
        OUTGOING_WITH_SPENT_DOC,
        ACCESS_TOKEN,
        sent=OUTGOING_FROM_INCOMING.to_wire(),
        result=m.OutgoingPaymentWithSpentAmounts,
    ),
    Op(
        "get_outgoing_payment",
        "get-outgoing-payment",
        "GET",
        OP_ID,
        lambda op: op.get_outgoing_payment(OP_ID, ACCESS_TOKEN),
        200,
        OUTGOING_DOC,
        ACCESS_TOKEN,
        result=m.OutgoingPayment,
    ),
    Op(
        "list_outgoing_payments",
        "list-outgoing-payments",
        "GET",
        f"{RS}/outgoing-payments",
        lambda op: op.list_outgoing_payments(RS, ACCESS_TOKEN, ALICE, last=5, cursor="c9"),
        200,
        page([OUTGOING_DOC], end="c8"),
        ACCESS_TOKEN,
        result=m.Page,
        params={"wallet-address": ALICE, "last": "5", "cursor": "c9"},
    ),
    Op(
        "get_grant_spent_amounts",
        "get-outgoing-payment-grant",
        "GET",
        f"{RS}/outgoing-payment-grant",
        lambda op: op.get_grant_spent_amounts(RS, ACCESS_TOKEN),
        200,
        SPENT_DOC,
        ACCESS_TOKEN,
        result=m.GrantSpentAmounts,
    ),
]


@pytest.mark.parametrize("op", OPS, ids=[o.name for o in OPS])
def test_operation_on_the_wire(op: Op) -> None:
    # The canned answer itself must be what the spec allows, or the test proves nothing.
    if op.operation_id not in SPEC_RESPONSE_QUIRKS:
        check_response(op.operation_id, op.status, op.response)
    with respx.mock(assert_all_mocked=True) as router:
        kwargs: dict[str, Any] = {"status_code": op.status}
        if op.response is not None:
            kwargs["json"] = op.response
        route = router.route(method=op.method, url__startswith=op.url).mock(
            return_value=httpx.Response(**kwargs)
        )
        result = run(op.call)

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == op.method
    assert request.url.copy_with(query=None) == httpx.URL(op.url)
    assert dict(request.url.params) == (op.params or {})
    assert request.headers["accept"] == "application/json"
    assert isinstance(result, op.result)

    if op.token is None:
        assert "authorization" not in request.headers
    else:
        assert request.headers["authorization"] == f"GNAP {op.token}"

    if op.sent is None:
        assert request.content == b""
        assert "content-digest" not in request.headers
    else:
        assert body_of(request) == op.sent
        # Compact JSON: what a Node verifier's JSON.stringify(JSON.parse(body)) gives back.
        assert b": " not in request.content and b", " not in request.content
        assert request.headers["content-type"] == "application/json"
        assert request.headers["content-digest"] == content_digest(request.content)
        assert request.headers["content-length"] == str(len(request.content))
        check_request_body(op.operation_id, op.sent)

    should_be_signed = op.method == "POST" or op.token is not None
    if not should_be_signed:
        assert "signature" not in request.headers
        assert "signature-input" not in request.headers
        return
    verified = verify(request)
    assert verified.key_id == KID
    assert verified.created == CREATED
    expected = ["@method", "@target-uri"]
    if op.token is not None:
        expected.append("authorization")
    if op.sent is not None:
        expected += ["content-digest", "content-length", "content-type"]
    assert verified.components == expected


def test_grant_request_matches_the_sdk_test_vector() -> None:
    # open-payments.md §2: the exact headers @interledger/http-signature-utils produces.
    body = m.incoming_payment_grant("https://wallet.example/alice", actions=("create", "read"))
    with respx.mock() as router:
        route = router.post("https://auth.wallet.example/").respond(200, json=GRANT_DOC)
        run(lambda op: op.request_grant("https://auth.wallet.example/", body))
    request = route.calls.last.request
    assert request.content == (
        b'{"access_token":{"access":[{"type":"incoming-payment","actions":["create","read"]}]},'
        b'"client":"https://wallet.example/alice"}'
    )
    assert request.headers["content-digest"] == (
        "sha-512=:7GKvf20Y8h4ZTpYojwRq6VMuuoAGYDAFlQSrSTseAFPoQ9bDIicLUC2wJXGJ+kw4NH9OR1dt/CH8dZjQEMKoIA==:"
    )
    assert request.headers["signature-input"] == (
        'sig1=("@method" "@target-uri" "content-digest" "content-length" "content-type")'
        ';keyid="test-key-1";created=1700000000'
    )
    assert request.headers["signature"] == (
        "sig1=:dsOJg+1bYd0FMUb1h8lK8YmKeMMjDeTKawFYZcUpOydzYf4RS7anAdPmNAvdFd8xUpy+7iVbi1vMGFGy0bKLAw==:"
    )


def test_auth_server_url_is_used_verbatim() -> None:
    # Rafiki's grant endpoint is {AUTH_SERVER_URL}/{tenant}: no slash may be added or removed.
    with respx.mock() as router:
        route = router.post(AUTH).respond(200, json=GRANT_DOC)
        run(lambda op: op.request_grant(AUTH, m.quote_grant(CLIENT_WALLET)))
    assert str(route.calls.last.request.url) == AUTH


def test_results_carry_the_documents() -> None:
    with respx.mock() as router:
        router.post(AUTH).respond(200, json=PENDING_DOC)
        router.post(CONTINUE_URI).respond(200, json=POLL_PENDING_DOC)
        router.get(f"{RS}/outgoing-payment-grant").respond(200, json=SPENT_DOC)

        async def flow(op: OpenPaymentsClient) -> Any:
            pending = await op.request_grant(AUTH, GRANT_BODY)
            polled = await op.continue_grant(CONTINUE_URI, CONTINUE_TOKEN)
            spent = await op.get_grant_spent_amounts(RS, ACCESS_TOKEN)
            return pending, polled, spent

        pending, polled, spent = run(flow)
    assert is_pending(pending)
    assert pending.redirect == PENDING_DOC["interact"]["redirect"]
    assert pending.finish_nonce == PENDING_DOC["interact"]["finish"]
    assert pending.continue_.token == CONTINUE_TOKEN
    assert is_pending(polled) and polled.interact is None
    assert spent.spent_debit_amount == m.AmountModel.of(Amount(2600, "USD", 2))
    assert spent.spent_receive_amount is None


def test_iter_incoming_payments_follows_every_page() -> None:
    docs = [{**INCOMING_DOC, "id": f"{RS}/incoming-payments/{n}"} for n in range(5)]
    pages = {
        None: page(docs[:2], end="c1", more=True),
        "c1": page(docs[2:4], end="c2", more=True),
        "c2": page(docs[4:], end="c3", more=False),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.params["wallet-address"] == ALICE
        assert request.url.params["first"] == "2"
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    with respx.mock() as router:
        route = router.get(f"{RS}/incoming-payments").mock(side_effect=answer)

        async def collect(op: OpenPaymentsClient) -> list[str]:
            found = op.iter_incoming_payments(RS, ACCESS_TOKEN, ALICE, page_size=2)
            return [p.id async for p in found]

        ids = run(collect)
    assert ids == [d["id"] for d in docs]
    assert route.call_count == 3
    for call in route.calls:
        verify(call.request)


def test_iter_outgoing_payments_follows_every_page() -> None:
    docs = [{**OUTGOING_DOC, "id": f"{RS}/outgoing-payments/{n}"} for n in range(3)]
    pages = {None: page(docs[:2], end="x", more=True), "x": page(docs[2:], end="y")}

    with respx.mock() as router:
        router.get(f"{RS}/outgoing-payments").mock(
            side_effect=lambda r: httpx.Response(200, json=pages[r.url.params.get("cursor")])
        )

        async def collect(op: OpenPaymentsClient) -> list[str]:
            return [p.id async for p in op.iter_outgoing_payments(RS, ACCESS_TOKEN, ALICE)]

        ids = run(collect)
    assert ids == [d["id"] for d in docs]


def test_query_is_signed_as_sent() -> None:
    # @target-uri covers the encoded query: a wallet address in it must be signed encoded.
    with respx.mock() as router:
        route = router.get(f"{RS}/incoming-payments").respond(200, json=page([]))
        run(lambda op: op.list_incoming_payments(RS, ACCESS_TOKEN, ALICE + "?x=1&y=2"))
    request = route.calls.last.request
    assert request.url.params["wallet-address"] == ALICE + "?x=1&y=2"
    assert "%3F" in str(request.url)
    assert "@target-uri" in verify(request).signature_base


def test_use_http_rewrites_every_url() -> None:
    with respx.mock() as router:
        route = router.get("http://localhost:3000/alice").respond(200, json=WALLET_DOC)
        run(lambda op: op.get_wallet_address("https://localhost:3000/alice"), use_http=True)
    assert str(route.calls.last.request.url) == "http://localhost:3000/alice"


def test_use_http_with_allow_http_reaches_non_loopback_hosts() -> None:
    with respx.mock() as router:
        route = router.post("http://auth.local/").respond(200, json=GRANT_DOC)
        run(
            lambda op: op.request_grant("https://auth.local/", m.quote_grant(CLIENT_WALLET)),
            use_http=True,
            allow_http=True,
        )
    request = route.calls.last.request
    assert str(request.url) == "http://auth.local/"
    verify(request)  # signed over the URL actually sent, http included


def test_loopback_http_is_allowed_by_default() -> None:
    with respx.mock() as router:
        router.get("http://127.0.0.1:8000/alice").respond(200, json=WALLET_DOC)
        wallet = run(lambda op: op.get_wallet_address("http://127.0.0.1:8000/alice"))
    assert wallet.auth_server == AUTH


def test_unauthenticated_calls_need_no_key() -> None:
    with respx.mock() as router:
        router.get(ALICE).respond(200, json=WALLET_DOC)
        router.get(f"{ALICE}/jwks.json").respond(200, json=JWKS_DOC)
        router.get(IP_ID).respond(200, json=PUBLIC_INCOMING_DOC)
        client = OpenPaymentsClient()

        async def calls(op: OpenPaymentsClient) -> Any:
            return (
                await op.get_wallet_address(ALICE),
                await op.get_keys(ALICE),
                await op.get_public_incoming_payment(IP_ID),
            )

        wallet, jwks, public = run_with(client, calls)
    assert wallet.resource_server == RS
    assert jwks.find(KID) is not None
    assert public.auth_server == AUTH


def test_signed_jwk_matches_the_published_key() -> None:
    with respx.mock() as router:
        router.get(f"{CLIENT_WALLET}/jwks.json").respond(200, json=JWKS_DOC)
        jwks = run(lambda op: op.get_keys(CLIENT_WALLET))
    published = jwks.find(KID)
    assert published is not None
    raw = base64.urlsafe_b64decode(published.x + "=")
    assert raw == KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_exchanges_record_every_attempt_with_its_signature() -> None:
    client, exchanges = make_client()
    with respx.mock() as router:
        router.post(CONTINUE_URI).respond(200, json=GRANT_DOC)
        run_with(client, lambda op: op.continue_grant(CONTINUE_URI, CONTINUE_TOKEN, "REF1"))
    (exchange,) = exchanges
    assert exchange.method == "POST"
    assert exchange.url == CONTINUE_URI
    assert exchange.status == 200
    assert exchange.operation == "post-continue"
    assert exchange.request_body == b'{"interact_ref":"REF1"}'
    assert exchange.signature is not None
    assert exchange.signature_base is not None
    assert exchange.signature_base.startswith('"@method": POST\n"@target-uri": ' + CONTINUE_URI)
    assert exchange.elapsed >= 0
    assert exchange.error is None


def test_redacted_exchange_hides_tokens_and_secrets() -> None:
    client, exchanges = make_client()
    with respx.mock() as router:
        router.post(CONTINUE_URI).respond(200, json=GRANT_DOC)
        router.post(f"{RS}/incoming-payments").respond(201, json=INCOMING_WITH_METHODS_DOC)

        async def calls(op: OpenPaymentsClient) -> None:
            await op.continue_grant(CONTINUE_URI, CONTINUE_TOKEN, "REF1")
            await op.create_incoming_payment(RS, ACCESS_TOKEN, INCOMING_BODY)

        run_with(client, calls)
    secrets = (CONTINUE_TOKEN, ACCESS_TOKEN, SHARED_SECRET)
    for exchange in exchanges:
        shown = exchange.redacted()
        text = repr(shown) + shown.request_body.decode() + shown.response_body.decode()
        for secret in secrets:
            assert secret not in text
        assert shown.request_headers["authorization"] == "GNAP ***"
        assert '"authorization": GNAP ***' in (shown.signature_base or "")
    assert b'"sharedSecret":"***"' in exchanges[1].redacted().response_body
    # The original keeps the real values: what to show is the caller's choice.
    assert CONTINUE_TOKEN.encode() in exchanges[0].response_body


def test_importing_the_client_does_not_import_the_cli_stack() -> None:
    bad = imported_by_opapprove(["opapprove.openpayments.client"], ("typer", "rich"))
    assert not bad, bad


def test_the_package_exports_the_sdk_face() -> None:
    import opapprove.openpayments as op

    assert set(op.__all__) == set(op._WHERE) | set(op._SUBMODULES)
    for name in op.__all__:
        assert getattr(op, name) is not None, name
    assert op.OpenPaymentsClient is OpenPaymentsClient and op.models is m
    assert issubclass(op.InsecureUrlError, op.OpenPaymentsError)
