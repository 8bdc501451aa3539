"""How the client fails: error statuses and codes with hints, bad bodies, redirects, transport."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx

from opapprove.openpayments import errors
from opapprove.openpayments import models as m
from opapprove.openpayments.client import OpenPaymentsClient
from opapprove.openpayments.urls import InsecureUrlError
from tests.openpayments.client_support import (
    ACCESS_TOKEN,
    ALICE,
    AUTH,
    CLIENT_WALLET,
    COMPLETED_DOC,
    CONTINUE_TOKEN,
    CONTINUE_URI,
    INCOMING_DOC,
    INCOMING_WITH_METHODS_DOC,
    IP_ID,
    KEY,
    KID,
    MANAGE,
    OP_ID,
    OUTGOING_DOC,
    QUOTE_DOC,
    QUOTE_ID,
    RS,
    WALLET_DOC,
    gnap_error,
    make_client,
    rs_error,
    run,
    run_with,
    usd,
)
from tests.spec_check import check_response

Call = Callable[[OpenPaymentsClient], Awaitable[Any]]


def invalid_response(
    call: Call, method: str, url: str, status: int, body: Any
) -> errors.InvalidResponse:
    """What ``call`` raises when the server answers ``status`` with the JSON ``body``."""
    with respx.mock() as router:
        router.route(method=method, url=url).respond(status, json=body)
        with pytest.raises(errors.InvalidResponse) as caught:
            run(call)
    return caught.value


GRANT = m.quote_grant(CLIENT_WALLET)
OUTGOING = m.CreateOutgoingPayment(wallet_address=ALICE, quote_id=QUOTE_ID)
QUOTE = m.CreateQuote(wallet_address=ALICE, receiver=IP_ID)


def request_grant(op: OpenPaymentsClient) -> Awaitable[Any]:
    return op.request_grant(AUTH, GRANT)


def continue_grant(op: OpenPaymentsClient) -> Awaitable[Any]:
    return op.continue_grant(CONTINUE_URI, CONTINUE_TOKEN, "REF1")


def poll_once(op: OpenPaymentsClient) -> Awaitable[Any]:
    return op.continue_grant(CONTINUE_URI, CONTINUE_TOKEN)


def rotate(op: OpenPaymentsClient) -> Awaitable[Any]:
    return op.rotate_token(MANAGE, ACCESS_TOKEN)


def create_outgoing(op: OpenPaymentsClient) -> Awaitable[Any]:
    return op.create_outgoing_payment(RS, ACCESS_TOKEN, OUTGOING)


def create_quote(op: OpenPaymentsClient) -> Awaitable[Any]:
    return op.create_quote(RS, ACCESS_TOKEN, QUOTE)


def get_quote(op: OpenPaymentsClient) -> Awaitable[Any]:
    return op.get_quote(QUOTE_ID, ACCESS_TOKEN)


def get_outgoing(op: OpenPaymentsClient) -> Awaitable[Any]:
    return op.get_outgoing_payment(OP_ID, ACCESS_TOKEN)


def complete(op: OpenPaymentsClient) -> Awaitable[Any]:
    return op.complete_incoming_payment(IP_ID, ACCESS_TOKEN)


def wallet(op: OpenPaymentsClient) -> Awaitable[Any]:
    return op.get_wallet_address(ALICE)


# (id, method, url, call, operationId or None, status, body, error class, code, hint part)
ERROR_CASES: list[tuple[str, str, str, Call, str | None, int, Any, type, str | None, str]] = [
    (
        "unknown-key-id",
        "POST",
        AUTH,
        request_grant,
        "post-request",
        400,
        gnap_error("invalid_client", "could not determine client"),
        errors.GrantError,
        "invalid_client",
        f"key id {KID} is not in {CLIENT_WALLET}/jwks.json (upload the public JWK",
    ),
    (
        "bad-signature",
        "POST",
        AUTH,
        request_grant,
        "post-request",
        401,
        gnap_error("invalid_client", "invalid signature"),
        errors.GrantError,
        "invalid_client",
        "the server rejected our signature: check the key id and the private key match the JWK",
    ),
    (
        "missing-public-name",
        "POST",
        AUTH,
        request_grant,
        "post-request",
        400,
        gnap_error("invalid_client", "missing required request field 'client'"),
        errors.GrantError,
        "invalid_client",
        "public name",
    ),
    (
        "identifier-required",
        "POST",
        AUTH,
        request_grant,
        "post-request",
        400,
        gnap_error("invalid_request", "access identifier required"),
        errors.GrantError,
        "invalid_request",
        "identifier",
    ),
    (
        "too-fast",
        "POST",
        CONTINUE_URI,
        poll_once,
        "post-continue",
        400,
        gnap_error("too_fast", "continued too fast"),
        errors.GrantError,
        "too_fast",
        "continued too soon: wait continue.wait seconds",
    ),
    (
        "not-approved",
        "POST",
        CONTINUE_URI,
        continue_grant,
        "post-continue",
        401,
        gnap_error("request_denied", "grant interaction not approved"),
        errors.GrantError,
        "request_denied",
        "not approved yet, or this grant was already continued once (tokens are issued once)",
    ),
    (
        "cannot-poll",
        "POST",
        CONTINUE_URI,
        poll_once,
        "post-continue",
        401,
        gnap_error("request_denied", "grant cannot be polled"),
        errors.GrantError,
        "request_denied",
        "grants with a finish redirect cannot be polled: use the redirect's interact_ref",
    ),
    (
        "unknown-grant",
        "POST",
        CONTINUE_URI,
        continue_grant,
        "post-continue",
        404,
        gnap_error("invalid_continuation", "grant not found"),
        errors.GrantError,
        "invalid_continuation",
        "unknown, revoked or rejected grant",
    ),
    (
        "continue-without-token",
        "POST",
        CONTINUE_URI,
        continue_grant,
        "post-continue",
        401,
        gnap_error("invalid_continuation", "missing continuation information"),
        errors.GrantError,
        "invalid_continuation",
        "Authorization: GNAP <continue.access_token.value>",
    ),
    (
        "rotate-unknown",
        "POST",
        MANAGE,
        rotate,
        "post-token",
        404,
        gnap_error("invalid_rotation", "token not found"),
        errors.GrantError,
        "invalid_rotation",
        "already rotated or revoked",
    ),
    (
        "invalid-token",
        "GET",
        QUOTE_ID,
        get_quote,
        "get-quote",
        401,
        rs_error(401, "Invalid Token"),
        errors.ResourceError,
        "401",
        "does not know this access token",
    ),
    (
        "inactive-token",
        "GET",
        OP_ID,
        get_outgoing,
        "get-outgoing-payment",
        403,
        rs_error(403, "Inactive Token"),
        errors.ResourceError,
        "403",
        "expired or revoked: rotate via manage",
    ),
    (
        "insufficient-grant",
        "POST",
        f"{RS}/outgoing-payments",
        create_outgoing,
        "create-outgoing-payment",
        403,
        rs_error(403, "Insufficient Grant"),
        errors.ResourceError,
        "403",
        "limits (amount, receiver, interval)",
    ),
    (
        "over-the-limit",
        "POST",
        f"{RS}/outgoing-payments",
        create_outgoing,
        "create-outgoing-payment",
        403,
        rs_error(403, "unauthorized"),
        errors.ResourceError,
        "403",
        "identifier (wallet address)",
    ),
    (
        "signature-key-not-found",
        "GET",
        QUOTE_ID,
        get_quote,
        "get-quote",
        401,
        rs_error(
            401,
            "Signature validation error: could not find key in list of client keys",
            keyIdInSignature=KID,
            client=CLIENT_WALLET,
        ),
        errors.ResourceError,
        "401",
        f"key id {KID} is not in {CLIENT_WALLET}/jwks.json",
    ),
    (
        "signature-invalid",
        "GET",
        QUOTE_ID,
        get_quote,
        "get-quote",
        401,
        rs_error(401, "Signature validation error: provided signature is invalid"),
        errors.ResourceError,
        "401",
        "the server rejected our signature",
    ),
    (
        "quote-used",
        "POST",
        f"{RS}/outgoing-payments",
        create_outgoing,
        None,
        400,
        rs_error(400, "invalid quote"),
        errors.ResourceError,
        "400",
        "a quote backs one outgoing payment only",
    ),
    (
        "quote-expired",
        "POST",
        f"{RS}/outgoing-payments",
        create_outgoing,
        None,
        400,
        rs_error(400, "quote expired"),
        errors.ResourceError,
        "400",
        "the quote expired",
    ),
    (
        "quote-needs-amount",
        "POST",
        f"{RS}/quotes",
        create_quote,
        None,  # spec_check cannot read this response: a $ref with a sibling description
        400,
        rs_error(400, "invalid amount"),
        errors.ResourceError,
        "400",
        "give debitAmount or receiveAmount",
    ),
    (
        "quote-not-found",
        "GET",
        QUOTE_ID,
        get_quote,
        None,
        404,
        rs_error(404, "quote does not exist"),
        errors.ResourceError,
        "404",
        "not found: check the URL",
    ),
    (
        "wrong-state",
        "POST",
        f"{IP_ID}/complete",
        complete,
        None,
        409,
        rs_error(409, "Bad state"),
        errors.ResourceError,
        "409",
        "wrong state",
    ),
    (
        "no-wallet",
        "GET",
        ALICE,
        wallet,
        None,
        404,
        None,
        errors.ResourceError,
        None,
        "no wallet address at this URL",
    ),
    (
        "server-failed",
        "GET",
        ALICE,
        wallet,
        None,
        500,
        "<html>oops</html>",
        errors.ResourceError,
        None,
        "the server failed: try again later",
    ),
]


@pytest.mark.parametrize(
    ("method", "url", "call", "operation_id", "status", "body", "cls", "code", "hint"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_error_mapping(
    method: str,
    url: str,
    call: Call,
    operation_id: str | None,
    status: int,
    body: Any,
    cls: type,
    code: str | None,
    hint: str,
) -> None:
    if operation_id is not None:
        check_response(operation_id, status, body)  # the canned error is a spec shape
    if isinstance(body, str):
        response = httpx.Response(status, text=body, headers={"content-type": "text/html"})
    elif body is None:
        response = httpx.Response(status)
    else:
        response = httpx.Response(status, json=body)
    with respx.mock() as router:
        route = router.route(method=method, url=url).mock(return_value=response)
        with pytest.raises(cls) as caught:
            run(call, retries=0)
    assert route.call_count == 1
    err = caught.value
    assert isinstance(err, errors.ResponseError)
    assert err.status == status
    assert err.code == code
    assert err.hint is not None and hint in err.hint
    assert err.method == method
    assert "\n" not in str(err)
    assert str(status) in str(err)
    assert f"{status} {status}" not in str(err)  # Rafiki's code "400" is the status: once
    if isinstance(body, dict):
        assert err.description == body["error"]["description"]
        assert err.details == body["error"].get("details", {})
        assert body["error"]["description"] in str(err)


def test_error_body_that_is_not_json_is_kept_as_description() -> None:
    with respx.mock() as router:
        router.get(ALICE).respond(502, text="Bad gateway\n  upstream down")
        with pytest.raises(errors.ResourceError) as caught:
            run(wallet, retries=0)
    assert caught.value.description == "Bad gateway upstream down"
    assert caught.value.body == "Bad gateway\n  upstream down"


def test_redirects_are_not_followed() -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get(ALICE).respond(302, headers={"Location": "https://wallet.example/login"})
        login = router.get("https://wallet.example/login").respond(200, json=WALLET_DOC)
        with pytest.raises(errors.ResourceError) as caught:
            run(wallet)
    assert login.call_count == 0
    assert caught.value.status == 302
    assert "https://wallet.example/login" in str(caught.value)
    assert caught.value.hint == (
        "the server redirected; is the URL a wallet address / did you send Accept: "
        "application/json?"
    )


def test_redirect_from_the_auth_server_is_a_grant_error() -> None:
    with respx.mock() as router:
        router.post(AUTH).respond(307, headers={"Location": AUTH + "/"})
        with pytest.raises(errors.GrantError) as caught:
            run(request_grant)
    assert caught.value.status == 307


# --------------------------------------------------------------------------- bad 2xx bodies


@pytest.mark.parametrize(
    ("call", "method", "url", "status", "body", "problem"),
    [
        (wallet, "GET", ALICE, 200, {**WALLET_DOC, "authServer": None}, "authServer"),
        (wallet, "GET", ALICE, 200, {"id": ALICE}, "assetCode"),
        (
            lambda op: op.get_keys(ALICE),
            "GET",
            f"{ALICE}/jwks.json",
            200,
            {"keys": [], "extra": 1},
            "extra",
        ),
        (request_grant, "POST", AUTH, 200, {"continue": {"uri": CONTINUE_URI}}, "access_token"),
        (
            lambda op: op.get_incoming_payment(IP_ID, ACCESS_TOKEN),
            "GET",
            IP_ID,
            200,
            {
                **INCOMING_WITH_METHODS_DOC,
                "receivedAmount": {**INCOMING_DOC["receivedAmount"], "value": 5},
            },  # type: ignore[dict-item]
            "receivedAmount.value",
        ),
        (get_quote, "GET", QUOTE_ID, 200, [1, 2], "<root>"),
    ],
    ids=["null-field", "missing-fields", "jwks-extra", "grant-shape", "number-amount", "list"],
)
def test_spec_mismatch_is_invalid_response(
    call: Call, method: str, url: str, status: int, body: Any, problem: str
) -> None:
    err = invalid_response(call, method, url, status, body)
    assert err.status == status
    assert any(problem in e for e in err.details["errors"])
    assert err.hint is not None and "validate=False" in err.hint


def test_html_instead_of_json_is_invalid_response_with_the_redirect_hint() -> None:
    with respx.mock() as router:
        router.get(ALICE).respond(200, text="<html></html>", headers={"content-type": "text/html"})
        with pytest.raises(errors.InvalidResponse) as caught:
            run(wallet)
    assert "not JSON" in str(caught.value)
    assert caught.value.hint is not None and "Accept: application/json" in caught.value.hint


def test_unexpected_success_status_is_invalid_unless_validation_is_off() -> None:
    with respx.mock() as router:
        router.post(f"{RS}/outgoing-payments").respond(200, json=OUTGOING_DOC)
        with pytest.raises(errors.InvalidResponse) as caught:
            run(create_outgoing)
        assert "answers 201" in str(caught.value)
        payment = run(create_outgoing, validate=False)
    assert payment.id == OP_ID


CREATED_BAD = {**INCOMING_WITH_METHODS_DOC, "receivedAmount": usd(1)}
OTHER_ASSET = {**INCOMING_WITH_METHODS_DOC, "incomingAmount": {**usd(2500), "assetCode": "EUR"}}
OVERSENT = {**OUTGOING_DOC, "sentAmount": usd(2601)}
SENT_OTHER_ASSET = {**OUTGOING_DOC, "sentAmount": {**usd(0), "assetScale": 9}}
FAILED_BUT_DONE = {**OUTGOING_DOC, "sentAmount": usd(2600), "failed": True}


@pytest.mark.parametrize(
    ("call", "method", "url", "status", "body", "problem"),
    [
        (
            lambda op: op.create_incoming_payment(
                RS, ACCESS_TOKEN, m.CreateIncomingPayment(wallet_address=ALICE)
            ),
            "POST",
            f"{RS}/incoming-payments",
            201,
            CREATED_BAD,
            "received 0",
        ),
        (
            lambda op: op.get_incoming_payment(IP_ID, ACCESS_TOKEN),
            "GET",
            IP_ID,
            200,
            OTHER_ASSET,
            "differ in asset",
        ),
        (complete, "POST", f"{IP_ID}/complete", 200, INCOMING_DOC, "is not completed"),
        (get_outgoing, "GET", OP_ID, 200, OVERSENT, "sent more than"),
        (get_outgoing, "GET", OP_ID, 200, SENT_OTHER_ASSET, "differ in asset"),
        (get_outgoing, "GET", OP_ID, 200, FAILED_BUT_DONE, "marked failed"),
        (
            lambda op: op.list_outgoing_payments(RS, ACCESS_TOKEN, ALICE),
            "GET",
            f"{RS}/outgoing-payments",
            200,
            {"pagination": {"hasNextPage": False, "hasPreviousPage": False}, "result": [OVERSENT]},
            "sent more than",
        ),
    ],
    ids=[
        "created-not-zero",
        "asset-mismatch",
        "not-completed",
        "oversent",
        "sent-asset",
        "failed",
        "list-item",
    ],
)
def test_sdk_consistency_checks(
    call: Call, method: str, url: str, status: int, body: Any, problem: str
) -> None:
    err = invalid_response(call, method, url, status, body)
    assert problem in str(err)
    assert err.hint is not None and "contradicts itself" in err.hint
    with respx.mock() as router:
        router.route(method=method, url=url).respond(status, json=body)
        run(call, validate=False)  # off: the same answer is accepted


def test_completed_payment_passes_the_checks() -> None:
    with respx.mock() as router:
        router.post(f"{IP_ID}/complete").respond(200, json=COMPLETED_DOC)
        assert run(complete).completed is True


# --------------------------------------------------------------------------- transport, retries


def test_connection_error_is_a_transport_error() -> None:
    client, exchanges = make_client(retries=0)
    with respx.mock() as router:
        router.get(ALICE).mock(side_effect=httpx.ConnectError("connection refused"))
        with pytest.raises(errors.TransportError) as caught:
            run_with(client, wallet)
    err = caught.value
    assert err.method == "GET" and err.url == ALICE
    assert "connection refused" in str(err)
    assert err.hint is not None and "server is running" in err.hint
    (exchange,) = exchanges
    assert exchange.status is None and exchange.error is not None


def test_timeout_is_a_transport_error() -> None:
    with respx.mock() as router:
        router.post(AUTH).mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(errors.TransportError) as caught:
            run(request_grant, timeout=2.5)
    assert "timed out after 2.5s" in str(caught.value)


def test_get_is_retried_on_503_then_succeeds() -> None:
    client, exchanges = make_client(retries=2)
    with respx.mock() as router:
        route = router.get(ALICE).mock(
            side_effect=[httpx.Response(503), httpx.Response(200, json=WALLET_DOC)]
        )
        result = run_with(client, wallet)
    assert result.id == ALICE
    assert route.call_count == 2
    assert [e.attempt for e in exchanges] == [1, 2]
    assert [e.status for e in exchanges] == [503, 200]


def test_get_is_retried_on_connection_errors_with_backoff() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    with respx.mock() as router:
        route = router.get(QUOTE_ID).mock(
            side_effect=[
                httpx.ConnectError("refused"),
                httpx.ReadTimeout("slow"),
                httpx.Response(200, json=QUOTE_DOC),
            ]
        )
        quote = run(get_quote, retries=2, retry_backoff=0.5, sleep=fake_sleep)
    assert quote.id == QUOTE_ID
    assert route.call_count == 3
    assert slept == [0.5, 1.0]
    for call in route.calls:  # each attempt is signed afresh
        assert call.request.headers["authorization"] == f"GNAP {ACCESS_TOKEN}"


def test_get_gives_up_after_its_retries() -> None:
    with respx.mock() as router:
        route = router.get(ALICE).respond(503)
        with pytest.raises(errors.ResourceError) as caught:
            run(wallet, retries=2)
    assert route.call_count == 3
    assert caught.value.status == 503


@pytest.mark.parametrize(
    ("method", "url", "call"),
    [
        ("POST", f"{RS}/outgoing-payments", create_outgoing),
        ("POST", AUTH, request_grant),
        ("DELETE", CONTINUE_URI, lambda op: op.cancel_grant(CONTINUE_URI, CONTINUE_TOKEN)),
    ],
    ids=["create-outgoing", "grant", "cancel"],
)
@pytest.mark.parametrize(
    "failure",
    [httpx.Response(503), httpx.ConnectError("reset"), httpx.ReadTimeout("slow")],
    ids=["503", "connect", "timeout"],
)
def test_post_and_delete_are_never_retried(
    method: str, url: str, call: Call, failure: httpx.Response | Exception
) -> None:
    with respx.mock() as router:
        route = router.route(method=method, url=url)
        if isinstance(failure, httpx.Response):
            route.mock(return_value=failure)
        else:
            route.mock(side_effect=failure)
        with pytest.raises(errors.OpenPaymentsError):
            run(call, retries=5)
    assert route.call_count == 1


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        (lambda op: op.get_wallet_address("http://wallet.example/alice"), {}),
        (lambda op: op.request_grant("http://auth.example/", GRANT), {}),
        (lambda op: op.get_wallet_address("https://wallet.example/alice"), {"use_http": True}),
        (lambda op: op.get_wallet_address("ftp://wallet.example/alice"), {"allow_http": True}),
    ],
    ids=["plain-get", "plain-post", "use-http-non-loopback", "ftp"],
)
def test_insecure_urls_are_refused_before_any_request(call: Call, kwargs: dict[str, Any]) -> None:
    with respx.mock(assert_all_called=False) as router:
        route = router.route().respond(200, json=WALLET_DOC)
        with pytest.raises(InsecureUrlError) as caught:
            run(call, **kwargs)
    assert route.call_count == 0
    assert isinstance(caught.value, errors.OpenPaymentsError)
    assert caught.value.hint is not None


def test_allow_http_reaches_any_host() -> None:
    with respx.mock() as router:
        router.get("http://wallet.example/alice").respond(200, json=WALLET_DOC)
        result = run(
            lambda op: op.get_wallet_address("http://wallet.example/alice"), allow_http=True
        )
    assert result.id == ALICE


def test_signed_call_without_a_key_says_so() -> None:
    client = OpenPaymentsClient()
    with respx.mock(assert_all_called=False) as router:
        route = router.route().respond(200, json=WALLET_DOC)
        with pytest.raises(errors.KeyLoadError) as caught:
            run_with(client, get_quote)
    assert route.call_count == 0
    assert "no private key" in str(caught.value)


def test_key_and_key_id_go_together() -> None:
    with pytest.raises(errors.KeyLoadError):
        OpenPaymentsClient(key=KEY)
    with pytest.raises(errors.KeyLoadError):
        OpenPaymentsClient(key_id=KID)


@pytest.mark.parametrize(
    "kwargs",
    [{"first": 1, "last": 1}, {"first": 0}, {"last": 101}, {"cursor": ""}],
    ids=["both", "zero", "too-many", "empty-cursor"],
)
def test_bad_pagination_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        run(lambda op: op.list_incoming_payments(RS, ACCESS_TOKEN, ALICE, **kwargs))


def test_pagination_that_does_not_advance_is_refused() -> None:
    stuck = {
        "pagination": {"endCursor": "same", "hasNextPage": True, "hasPreviousPage": False},
        "result": [INCOMING_DOC],
    }
    with respx.mock() as router:
        route = router.get(f"{RS}/incoming-payments").respond(200, json=stuck)

        async def drain(op: OpenPaymentsClient) -> int:
            return len([p async for p in op.iter_incoming_payments(RS, ACCESS_TOKEN, ALICE)])

        with pytest.raises(errors.InvalidResponse) as caught:
            run(drain)
    assert route.call_count == 2
    assert "same endCursor" in str(caught.value)
