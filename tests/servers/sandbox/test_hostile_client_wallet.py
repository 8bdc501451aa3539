"""A grant request naming a client wallet the sandbox does not host, on a hostile server.

The sandbox fetches that wallet's ``jwks.json`` over HTTP, as Rafiki does. A body that inflates
past the cap, a ``Content-Length`` of 10 GiB, or a body trickled a byte at a time must neither
hold the sandbox past its ``http_timeout`` nor be read past the client's cap
(``MAX_RESPONSE_BYTES``). The sandbox then answers as Rafiki does when it cannot get a client's
keys: 400 ``invalid_client`` "could not determine client" (rafiki_observed.md, 8f), and says why
in ``X-Sandbox-Reason``. Real HTTP on loopback (tests/raw_http.py).
"""

from __future__ import annotations

import gzip
import json

import pytest

from opapprove.openpayments.keys import public_jwk
from opapprove.openpayments.transport import MAX_RESPONSE_BYTES
from tests.raw_http import raw_server
from tests.sandbox_fixtures import Sandbox, make_sandbox, reason_of

pytestmark = pytest.mark.anyio

INCOMING_RW = [{"type": "incoming-payment", "actions": ["create", "read"]}]
JSON_200 = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
REFUSED = {"code": "invalid_client", "description": "could not determine client"}


def _jwks(sandbox: Sandbox, padding: int = 0) -> bytes:
    """The client wallet's keys, the signing key among them (whole, they would be accepted)."""
    text = json.dumps({"keys": [public_jwk(sandbox.key, sandbox.key_id).to_dict()]})
    return (text[:-1] + " " * padding + "}").encode()


def _length(body: bytes) -> bytes:
    return b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"


async def _refusal(
    sandbox: Sandbox, head: bytes, body: bytes, *, pause: float = 0.0
) -> tuple[dict[str, str], str]:
    """The sandbox's answer to a grant request signed with its seller key whose client wallet
    is a raw loopback server answering ``head`` then ``body``: its error and its reason."""
    try:
        async with raw_server(head, body, pause) as url, sandbox.client() as api:
            api.client_wallet = f"{url}/shop"
            resp = await api.grant(INCOMING_RW)
        assert resp.status_code == 400, resp.text
        error: dict[str, str] = resp.json()["error"]
        return error, reason_of(resp)
    finally:
        sandbox.state.close()


async def test_a_jwks_that_inflates_past_the_cap_is_not_read() -> None:
    sandbox = make_sandbox()
    bomb = gzip.compress(_jwks(sandbox, MAX_RESPONSE_BYTES))
    head = JSON_200 + b"Content-Encoding: gzip\r\n" + _length(bomb)
    error, reason = await _refusal(sandbox, head, bomb)
    assert error == REFUSED
    assert "jwks.json answered 200 with a body over 4 MiB" in reason


async def test_a_declared_length_over_the_cap_is_not_waited_for() -> None:
    # 10 GiB announced, a few bytes sent: neither wait for the rest nor take it.
    head = JSON_200 + b"Content-Length: 10737418240\r\n\r\n"
    error, reason = await _refusal(make_sandbox(http_timeout=1.0), head, b'{"keys": ')
    assert error == REFUSED
    assert "with a body over 4 MiB" in reason


async def test_a_jwks_trickled_slower_than_the_timeout_allows_is_given_up() -> None:
    # Each byte comes well within the timeout (httpx's own is per read); the whole would take
    # seconds against a 0.3 s timeout.
    sandbox = make_sandbox(http_timeout=0.3)
    jwks = _jwks(sandbox)
    error, reason = await _refusal(sandbox, JSON_200 + _length(jwks), jwks, pause=0.05)
    assert error == REFUSED
    assert "no whole answer within 0.3s" in reason
