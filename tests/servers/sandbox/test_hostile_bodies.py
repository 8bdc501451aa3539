"""JSON nested far past any Open Payments document, sent to the sandbox or served to it.

``json.loads`` raises RecursionError on it, no ValueError: the sandbox answered 500 (an
unsigned caller could make it do so at will) where Rafiki answers 400.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from opapprove.openpayments.keys import public_jwk
from tests.raw_http import raw_server
from tests.sandbox_fixtures import Sandbox

pytestmark = pytest.mark.anyio

DEEP = b"[" * 100_000 + b"]" * 100_000


async def _post(
    sandbox: Sandbox, path: str, body: bytes, content_type: str = "application/json"
) -> httpx.Response:
    transport = httpx.ASGITransport(app=sandbox.asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as http:
        return await http.post(path, content=body, headers={"Content-Type": content_type})


@pytest.mark.parametrize("path", ["/auth", "/_admin/approve"])
async def test_a_deep_body_is_a_400(sandbox: Sandbox, path: str) -> None:
    resp = await _post(sandbox, path, b'{"access_token": ' + DEEP + b"}")
    assert resp.status_code == 400
    assert "nested deeper than 64 levels" in json.dumps(resp.json()) + resp.headers.get(
        "x-sandbox-reason", ""
    )


async def test_a_client_wallet_serving_deep_json_is_an_unknown_client(sandbox: Sandbox) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(DEEP)).encode() + b"\r\n\r\n"
    )
    transport = httpx.ASGITransport(app=sandbox.asgi, raise_app_exceptions=False)
    async with raw_server(head, DEEP) as url, sandbox.client(transport=transport) as api:
        access = [{"type": "quote", "actions": ["create", "read"]}]
        resp = await api.grant(access, client=f"{url}/shop")
    # Rafiki's 8f: a client URL whose keys it cannot read.
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "code": "invalid_client",
        "description": "could not determine client",
    }


async def test_two_rotations_of_one_token_at_the_same_instant(sandbox: Sandbox) -> None:
    """Both pass the token check while the sandbox fetches the client's keys (a client
    wallet elsewhere: a real wait); the second then finds the token rotated away. It gets
    what a rotation with a dead token gets, on Rafiki as here (5d): 401 invalid_client."""
    key_id = "remote-key"
    jwks = json.dumps({"keys": [public_jwk(sandbox.key, key_id).to_dict()]}).encode()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(jwks)).encode() + b"\r\n\r\n"
    )
    async with raw_server(head, jwks) as url, sandbox.client(key_id=key_id) as api:
        access = [{"type": "incoming-payment", "actions": ["read"]}]
        granted = await api.grant(access, client=f"{url}/shop")
        assert granted.status_code == 200, granted.text
        token = granted.json()["access_token"]
        answers = await asyncio.gather(
            *(api.post(token["manage"], token=token["value"]) for _ in range(2))
        )
    assert sorted(a.status_code for a in answers) == [200, 401]
    (refused,) = [a for a in answers if a.status_code == 401]
    assert refused.json()["error"] == {
        "code": "invalid_client",
        "description": "invalid access token",
    }


@pytest.mark.parametrize(
    "item",
    [
        {"type": {"not": "a string"}, "actions": ["read"]},
        {"type": ["incoming-payment"], "actions": ["read"]},
        {"type": "incoming-payment", "actions": [["read"]]},
        {"type": "quote", "actions": [{"create": True}]},
    ],
)
async def test_an_access_item_of_the_wrong_json_type_is_a_400(
    sandbox: Sandbox, item: dict[str, object]
) -> None:
    """Found by fuzzing the grant endpoint: an object or list where a string belongs was
    looked up in a set (unhashable: a 500, for any caller, signed or not)."""
    grant = {"access_token": {"access": [item]}, "client": sandbox.url("/seller")}
    resp = await _post(sandbox, "/auth", json.dumps(grant).encode())
    assert resp.status_code == 400


async def test_a_consent_form_with_more_fields_than_the_page_has_is_a_400(
    sandbox: Sandbox,
) -> None:
    """The IdP page's form has three fields; the parser refuses past ten (it was a 500)."""
    fields = "&".join(f"f{i}=1" for i in range(20)).encode()
    resp = await _post(sandbox, "/idp/decide", fields, "application/x-www-form-urlencoded")
    assert resp.status_code == 400
