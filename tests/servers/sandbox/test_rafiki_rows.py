"""The sandbox answers as Rafiki did, case by case (``rafiki_observed.md`` in this folder).

One test per class of case that differed, parametrised over the rows of that class; the
row ids (``2l``, ``4b``...) are the page's. Where the sandbox stays stricter on purpose the
test says so and the README's sandbox section lists it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.sandbox_fixtures import Api, Sandbox, finish_params, make_sandbox, reason_of

pytestmark = pytest.mark.anyio

OPENAPI = "Received error validating OpenAPI request: "


def usd(value: int) -> dict[str, Any]:
    return {"value": str(value), "assetCode": "USD", "assetScale": 2}


def error_of(resp: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = resp.json()["error"]
    return error


@dataclass
class Answer:
    status: int
    code: str | None
    description: str
    details: dict[str, Any] | None = None


def assert_answers(resp: httpx.Response, want: Answer) -> None:
    assert resp.status_code == want.status, resp.text
    error = error_of(resp)
    expected: dict[str, Any] = {"description": want.description}
    if want.code is not None:
        expected["code"] = want.code
    if want.details is not None:
        expected["details"] = want.details
    assert error == expected
    # Whatever the sandbox adds goes to a header, never into Rafiki's body.
    assert "reason" not in (error.get("details") or {})


async def approved(api: Api, box: Sandbox, **kwargs: Any) -> tuple[dict[str, Any], str]:
    pending = await api.pending_outgoing_grant(**kwargs)
    ref = finish_params(box.state.approve(pending["interact"]["redirect"]))["interact_ref"]
    return pending, ref


async def outgoing_token(api: Api, box: Sandbox, **limits: Any) -> str:
    pending, ref = await approved(api, box, limits=limits or None)
    resp = await api.continue_grant(pending, ref)
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["access_token"]["value"]
    return token


# ------------------------------------------------------------- 2, 3, 4: continuation


Case = Callable[[Api, Sandbox], Awaitable[httpx.Response]]


async def poll_rejected_no_finish(api: Api, box: Sandbox) -> httpx.Response:  # 2l
    pending = await api.pending_outgoing_grant(finish_uri=None)
    box.state.approve(pending["interact"]["redirect"], reject=True)
    return await api.continue_grant(pending)


async def poll_rejected_with_finish(api: Api, box: Sandbox) -> httpx.Response:  # 3c
    pending = await api.pending_outgoing_grant()
    box.state.approve(pending["interact"]["redirect"], reject=True)
    return await api.continue_grant(pending)


async def poll_finish_grant(api: Api, box: Sandbox) -> httpx.Response:  # 2e/2f
    pending = await api.pending_outgoing_grant()
    return await api.continue_grant(pending)


async def cancel_twice(api: Api, box: Sandbox) -> httpx.Response:  # 4b
    cont = (await api.pending_outgoing_grant())["continue"]
    assert (await api.delete(cont["uri"], token=cont["access_token"]["value"])).status_code == 204
    return await api.delete(cont["uri"], token=cont["access_token"]["value"])


async def poll_after_cancel(api: Api, box: Sandbox) -> httpx.Response:  # 4c
    pending = await api.pending_outgoing_grant(finish_uri=None)
    cont = pending["continue"]
    assert (await api.delete(cont["uri"], token=cont["access_token"]["value"])).status_code == 204
    return await api.continue_grant(pending)


async def continue_after_cancel(api: Api, box: Sandbox) -> httpx.Response:  # 4f
    pending, ref = await approved(api, box)
    cont = pending["continue"]
    assert (await api.delete(cont["uri"], token=cont["access_token"]["value"])).status_code == 204
    return await api.continue_grant(pending, ref)


async def cancel_finalized_twice(api: Api, box: Sandbox) -> httpx.Response:  # 4i
    pending, ref = await approved(api, box)
    issued = (await api.continue_grant(pending, ref)).json()
    cont = issued["continue"]
    assert (await api.delete(cont["uri"], token=cont["access_token"]["value"])).status_code == 204
    return await api.delete(cont["uri"], token=cont["access_token"]["value"])


async def continue_too_fast(api: Api, box: Sandbox) -> httpx.Response:  # 2a
    pending, ref = await approved(api, box)
    return await api.continue_grant(pending, ref)


async def poll_too_fast(api: Api, box: Sandbox) -> httpx.Response:  # 2g
    return await api.continue_grant(await api.pending_outgoing_grant(finish_uri=None))


INVALID_GRANT = Answer(401, "invalid_continuation", "invalid grant")


@pytest.mark.parametrize(
    ("row", "case", "want", "wait"),
    [
        (
            "2l",
            poll_rejected_no_finish,
            Answer(401, "request_denied", "grant cannot be continued"),
            0,
        ),
        (
            "3c",
            poll_rejected_with_finish,
            Answer(401, "request_denied", "grant cannot be polled"),
            0,
        ),
        ("2e", poll_finish_grant, Answer(401, "request_denied", "grant cannot be polled"), 0),
        ("4b", cancel_twice, INVALID_GRANT, 0),
        ("4c", poll_after_cancel, INVALID_GRANT, 0),
        ("4f", continue_after_cancel, INVALID_GRANT, 0),
        ("4i", cancel_finalized_twice, INVALID_GRANT, 0),
        (
            "2a",
            continue_too_fast,
            Answer(400, "too_fast", 'continued grant faster than "wait" period'),
            5,
        ),
        ("2g", poll_too_fast, Answer(400, "too_fast", 'polled grant faster than "wait" period'), 5),
    ],
)
async def test_continuation_answers(row: str, case: Case, want: Answer, wait: int) -> None:
    # Replays refused as in `opapprove sandbox`: each repeat here is signed a second later.
    box = make_sandbox(wait_seconds=wait, refuse_replays=True)
    async with box.client() as api:

        async def tick(request: httpx.Request) -> None:
            if wait == 0:
                box.clock.advance(1)

        api.http.event_hooks["request"].append(tick)
        resp = await case(api, box)
    assert_answers(resp, want)
    box.recorder.assert_clean()


# ------------------------------------------------------------- 1: the interaction front channel

BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
)


@pytest.mark.parametrize(
    ("row", "accept"),
    [("1b", "*/*"), ("1c", BROWSER_ACCEPT), ("1d", "application/json"), ("1d", "")],
)
async def test_the_interact_url_sends_the_browser_to_the_identity_provider(
    sandbox: Sandbox, row: str, accept: str
) -> None:
    async with sandbox.client() as api:
        pending = await api.pending_outgoing_grant()
        redirect = pending["interact"]["redirect"]
        resp = await api.http.get(redirect, headers={"Accept": accept})
    assert resp.status_code == 302
    location = httpx.URL(resp.headers["location"])
    interact_id, nonce = redirect.rsplit("/", 2)[-2:]
    assert location.path == "/idp/"
    assert (location.params["interactId"], location.params["nonce"]) == (interact_id, nonce)
    assert location.params["clientName"] == "Seller"
    assert resp.text.startswith("Redirecting to ")
    assert "set-cookie" in resp.headers


async def test_the_interact_url_refuses_an_html_only_accept_and_a_wrong_nonce(
    sandbox: Sandbox,
) -> None:
    async with sandbox.client() as api:
        pending = await api.pending_outgoing_grant()
        redirect = pending["interact"]["redirect"]
        html_only = await api.http.get(redirect, headers={"Accept": "text/html"})  # 1a
        wrong = await api.http.get(redirect[:-4] + "0000", headers={"Accept": "*/*"})  # 1e
    assert_answers(html_only, Answer(406, None, OPENAPI + "Must accept application/json"))
    assert_answers(wrong, Answer(400, "unknown_interaction", "unknown interaction"))


# ------------------------------------------------------------- 1f, 4d: reopened interactions


@pytest.mark.parametrize("row", ["1f", "4d"])
async def test_a_decided_or_cancelled_interaction_sends_the_browser_back_invalid(
    sandbox: Sandbox, row: str
) -> None:
    async with sandbox.client() as api:
        pending = await api.pending_outgoing_grant(
            finish_uri="http://127.0.0.1:9/finish?pendingId=cat-1"
        )
        if row == "1f":
            sandbox.state.approve(pending["interact"]["redirect"])
        else:
            cont = pending["continue"]
            await api.delete(cont["uri"], token=cont["access_token"]["value"])
        again = sandbox.state.approve(pending["interact"]["redirect"])
        opened = await api.http.get(pending["interact"]["redirect"], headers={"Accept": "*/*"})
    assert again == (
        "http://127.0.0.1:9/finish?pendingId=cat-1&result=invalid_interaction"
        "&message=invalid+interaction"
    )
    assert opened.status_code == 302 and opened.headers["location"] == again


# ------------------------------------------------------------- 5: tokens


async def test_old_revoked_and_cancelled_tokens_are_all_inactive(sandbox: Sandbox) -> None:
    """5b, 5f, 4h: one answer, 403 Inactive Token, with no details."""
    access = [{"type": "incoming-payment", "actions": ["create", "read", "list"]}]
    async with sandbox.client() as api:
        rotated = await api.token(access)
        resp = await api.post(rotated["manage"], token=rotated["value"])
        assert resp.status_code == 200
        revoked = await api.token(access)
        assert (await api.delete(revoked["manage"], token=revoked["value"])).status_code == 204
        grant = (await api.grant(access)).json()
        cont = grant["continue"]
        assert (
            await api.delete(cont["uri"], token=cont["access_token"]["value"])
        ).status_code == 204
        for row, value in (
            ("5b", rotated["value"]),
            ("5f", revoked["value"]),
            ("4h", grant["access_token"]["value"]),
        ):
            used = await api.get(
                sandbox.url("/op/incoming-payments"),
                token=value,
                **{"wallet-address": sandbox.seller},
            )
            assert_answers(used, Answer(403, "403", "Inactive Token"))
            assert used.headers["www-authenticate"].startswith("GNAP as_uri="), row
            assert reason_of(used), row


async def test_stricter_token_management(sandbox: Sandbox) -> None:
    """5i, 5j: stricter on purpose. Rafiki rotates a manage URL with another grant's token or
    none at all; the sandbox wants that token's own value (README, "stricter")."""
    access = [{"type": "incoming-payment", "actions": ["create"]}]
    async with sandbox.client() as api:
        mine = await api.token(access)
        other = await api.token(access)
        with_other = await api.post(mine["manage"], token=other["value"])
        assert_answers(with_other, Answer(401, "invalid_client", "invalid access token"))
        without = await api.post(mine["manage"])
        assert_answers(without, Answer(401, "invalid_client", "invalid access token"))
        # 5k: revoking without a token is refused by both, in these words.
        revoke = await api.http.delete(mine["manage"], headers={"Accept": "application/json"})
        assert_answers(revoke, Answer(401, "invalid_client", "invalid access token"))


# ------------------------------------------------------------- 6, 7: resource server


async def test_unknown_outgoing_payment_is_unauthorized(sandbox: Sandbox) -> None:
    """6j: 401 "Unauthorized" (not 404): Rafiki cannot find the payment's wallet."""
    async with sandbox.client() as api:
        token = await outgoing_token(api, sandbox)
        url = sandbox.url("/op/outgoing-payments/00000000-0000-4000-8000-000000000000")
        resp = await api.get(url, token=token)
    assert_answers(
        resp,
        Answer(
            401,
            "401",
            "Unauthorized",
            {
                "description": "Failed to get wallet address from outgoing payment",
                "id": "00000000-0000-4000-8000-000000000000",
            },
        ),
    )


async def _refusals(api: Api, box: Sandbox) -> dict[str, httpx.Response]:
    """One refusal per row where Rafiki sends code + description and no details."""
    out: dict[str, httpx.Response] = {}
    incoming = await api.incoming_payment("5000")
    quote_token = (await api.token([{"type": "quote", "actions": ["create", "read"]}]))["value"]
    ip_token = (await api.token([{"type": "incoming-payment", "actions": ["create", "complete"]}]))[
        "value"
    ]
    op_token = await outgoing_token(api, box, debitAmount=usd(100))
    ops = box.url("/op/outgoing-payments")
    big = await api.quote(incoming["id"], token=quote_token, debitAmount=usd(500))
    out["6a"] = await api.post(
        ops, {"walletAddress": box.buyer, "quoteId": big["id"]}, token=op_token
    )
    seller_quote_receiver = await api.incoming_payment("100")
    their = await api.quote(seller_quote_receiver["id"], wallet="seller", token=quote_token)
    out["6d"] = await api.post(
        ops, {"walletAddress": box.buyer, "quoteId": their["id"]}, token=op_token
    )
    small = await api.quote(incoming["id"], token=quote_token, debitAmount=usd(10))
    first = await api.post(
        ops, {"walletAddress": box.buyer, "quoteId": small["id"]}, token=op_token
    )
    assert first.status_code == 201, first.text
    out["6c"] = await api.post(
        ops, {"walletAddress": box.buyer, "quoteId": small["id"]}, token=op_token
    )
    out["6e"] = await api.post(
        ops, {"walletAddress": box.seller, "quoteId": small["id"]}, token=op_token
    )
    out["6g"] = await api.get(first.json()["id"], token=quote_token)
    out["6k"] = await api.post(
        ops, {"walletAddress": box.buyer, "quoteId": small["id"]}, token=ip_token
    )
    stale = await api.quote(incoming["id"], token=quote_token, debitAmount=usd(10))
    box.clock.advance(301)
    out["6x"] = await api.post(
        ops, {"walletAddress": box.buyer, "quoteId": stale["id"]}, token=op_token
    )
    ips = box.url("/op/incoming-payments")
    out["7a"] = await api.post(
        ips, {"walletAddress": box.seller, "incomingAmount": usd(0)}, token=ip_token
    )
    out["7c"] = await api.post(
        ips,
        {"walletAddress": box.seller, "incomingAmount": usd(1) | {"assetCode": "EUR"}},
        token=ip_token,
    )
    out["7d"] = await api.post(
        ips,
        {"walletAddress": box.seller, "incomingAmount": usd(1) | {"assetScale": 9}},
        token=ip_token,
    )
    out["7e"] = await api.post(
        ips, {"walletAddress": box.seller, "expiresAt": "2020-01-01T00:00:00Z"}, token=ip_token
    )
    done = await api.incoming_payment("100", token=ip_token)
    assert (await api.post(done["id"] + "/complete", token=ip_token)).status_code == 200
    out["7h"] = await api.post(done["id"] + "/complete", token=ip_token)
    out["7i"] = await api.post(
        box.url("/op/quotes"),
        {"walletAddress": box.buyer, "receiver": done["id"], "method": "ilp"},
        token=quote_token,
    )
    return out


REFUSALS = {
    "6a": (403, "unauthorized"),
    "6c": (400, "invalid quote"),
    "6d": (400, "invalid quote"),
    "6e": (403, "Insufficient Grant"),
    "6g": (403, "Insufficient Grant"),
    "6k": (403, "Insufficient Grant"),
    "6x": (400, "invalid quote"),
    "7a": (400, "invalid amount"),
    "7c": (400, "invalid amount"),
    "7d": (400, "invalid amount"),
    "7e": (400, "invalid expiresAt"),
    "7h": (409, "wrong state"),
    "7i": (400, "invalid receiver"),
}


async def test_resource_server_refusals_carry_no_details_reason(sandbox: Sandbox) -> None:
    """4h, 5f, 6a, 6c-6e, 6g, 6k, 6x, 7a, 7c-7e, 7h, 7i: code and description only; the
    sandbox's explanation is in X-Sandbox-Reason (a reused, foreign and expired quote read
    the same in the body, as on Rafiki)."""
    async with sandbox.client() as api:
        got = await _refusals(api, sandbox)
    assert set(got) == set(REFUSALS)
    for row, (status, description) in REFUSALS.items():
        resp = got[row]
        assert resp.status_code == status, (row, resp.text)
        assert error_of(resp) == {"code": str(status), "description": description}, row
        assert reason_of(resp), row


# ------------------------------------------------------------- 8, 6i, 7b: request validation


GRANT_VALIDATION = [
    ("8a", {"client": "{client}"}, "body must have required property 'access_token'"),
    (
        "8b",
        {
            "access_token": {"access": [{"type": "nope", "actions": ["create"]}]},
            "client": "{client}",
        },
        "body.access_token.access.0.type must be equal to one of the allowed values",
    ),
    (
        "8c",
        {
            "access_token": {"access": [{"type": "quote", "actions": ["create"]}]},
            "client": "{client}",
            "interact": {"start": ["user_code"]},
        },
        "body.interact.start.0 must be equal to one of the allowed values",
    ),
    (
        "8d",
        {
            "access_token": {"access": [{"type": "quote", "actions": ["create"]}]},
            "client": "{client}",
            "interact": {
                "start": ["redirect"],
                "finish": {"method": "push", "uri": "http://127.0.0.1:9/f", "nonce": "n"},
            },
        },
        "body.interact.finish.method must be equal to one of the allowed values",
    ),
    (
        "8e",
        {
            "access_token": {"access": [{"type": "quote", "actions": ["create"]}]},
            "client": "not-a-url",
        },
        'body.client must match format "uri"',
    ),
    (
        "8i",
        {
            "access_token": {"access": [{"type": "outgoing-payment", "actions": ["create"]}]},
            "client": "{client}",
            "interact": {"start": ["redirect"]},
        },
        "body.access_token.access.0.type must be equal to one of the allowed values",
    ),
]


def _fill(value: Any, client: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, client) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, client) for v in value]
    return client if value == "{client}" else value


@pytest.mark.parametrize(
    ("row", "body", "words"), GRANT_VALIDATION, ids=[r[0] for r in GRANT_VALIDATION]
)
async def test_grant_request_validation_has_no_code(
    sandbox: Sandbox, row: str, body: dict[str, Any], words: str
) -> None:
    async with sandbox.client() as api:
        resp = await api.post(sandbox.url("/auth"), _fill(body, api.client_wallet))
    assert_answers(resp, Answer(400, None, OPENAPI + words))
    assert reason_of(resp)


async def test_resource_server_request_validation(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        token = (await api.token([{"type": "incoming-payment", "actions": ["create", "list"]}]))[
            "value"
        ]
        listed = await api.get(sandbox.url("/op/outgoing-payments"), token=token)  # 6i
        negative = await api.post(  # 7b
            sandbox.url("/op/incoming-payments"),
            {"walletAddress": sandbox.seller, "incomingAmount": usd(-1)},
            token=token,
        )
    assert_answers(
        listed, Answer(400, "400", OPENAPI + "must have required property 'wallet-address'")
    )
    assert_answers(
        negative,
        Answer(400, "400", OPENAPI + 'body.incomingAmount.value must match format "uint64"'),
    )


# ------------------------------------------------------------- 9: signatures


async def test_signature_refusals_in_rafikis_words(sandbox: Sandbox) -> None:
    """9b, 9d, 9e (AS) and 9m, 9n (RS): Rafiki's descriptions; the cause is in the header."""
    from opapprove.openpayments.keys import generate_private_key

    body = {
        "access_token": {"access": [{"type": "quote", "actions": ["create"]}]},
        "client": sandbox.seller,
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.asgi)) as http:
        unsigned = await http.post(
            sandbox.url("/auth"), json=body, headers={"Accept": "application/json"}
        )
    assert_answers(unsigned, Answer(401, "invalid_client", "invalid signature headers"))  # 9b
    async with sandbox.client(key=generate_private_key()) as api:
        other_key = await api.post(sandbox.url("/auth"), body)
    assert_answers(other_key, Answer(401, "invalid_client", "invalid signature"))  # 9d
    async with sandbox.client() as api:
        token = (await api.token([{"type": "incoming-payment", "actions": ["create"]}]))["value"]

        async def tamper(request: httpx.Request) -> None:
            # After signing, same length: only the digest can tell (Rafiki's 9e, 9m).
            changed = request.content.replace(b"seller", b"sellex")
            request._content = changed
            request.stream = httpx.ByteStream(changed)

        api.http.event_hooks["request"].append(tamper)
        changed = await api.post(sandbox.url("/auth"), body)  # 9e
        changed_rs = await api.post(  # 9m
            sandbox.url("/op/incoming-payments"), {"walletAddress": sandbox.seller}, token=token
        )
    assert_answers(changed, Answer(401, "invalid_client", "invalid signature headers"))
    assert "Content-Digest" in reason_of(changed)
    assert_answers(
        changed_rs,
        Answer(
            401,
            "401",
            "Signature validation error: provided signature is invalid",
            {"keyIdInSignature": sandbox.key_id, "client": {"walletAddress": sandbox.seller}},
        ),
    )


# ------------------------------------------------------------- 10: Accept, unknown routes


@pytest.mark.parametrize(
    ("row", "path", "accept", "status"),
    [
        ("10a", "/buyer", "text/html", 406),
        ("10b", "/buyer", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", 200),
        ("10c", "{incoming}", "text/html", 406),
    ],
)
async def test_accept_headers(
    sandbox: Sandbox, row: str, path: str, accept: str, status: int
) -> None:
    async with sandbox.client() as api:
        if path == "{incoming}":
            path = (await api.incoming_payment())["id"].removeprefix(sandbox.base)
        resp = await api.http.get(sandbox.url(path), headers={"Accept": accept})
    assert resp.status_code == status
    if status == 406:
        assert error_of(resp) == {
            "code": "406",
            "description": OPENAPI + "Must accept application/json",
        }
    else:
        assert resp.json()["id"] == sandbox.buyer


@pytest.mark.parametrize(("row", "path"), [("10d", "/no/such/route"), ("10e", "/nobody-here")])
async def test_unknown_wallet_or_route(sandbox: Sandbox, row: str, path: str) -> None:
    async with sandbox.client() as api:
        resp = await api.get(sandbox.url(path))
    assert_answers(
        resp,
        Answer(404, "404", "Could not get wallet address", {"walletAddressUrl": sandbox.url(path)}),
    )


async def test_get_on_the_grant_endpoint_is_plain_not_found(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        resp = await api.get(sandbox.url("/auth"))  # 10i
    assert (resp.status_code, resp.text) == (404, "Not Found")
