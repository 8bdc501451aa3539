"""``sig verify`` underneath: real trace lines verify; a tampered one says which part differs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from opapprove.cli.trace import exchange_record
from opapprove.diagnostics.sigcheck import (
    CapturedRequest,
    CaptureError,
    check_signature,
    client_wallet,
    client_wallets,
    fetch_jwks,
    load_jwks_file,
    parse_jwks,
    parse_raw_request,
    parse_trace_line,
    read_trace,
    wallet_of_jwks_url,
)
from opapprove.openpayments.client import OpenPaymentsClient
from opapprove.openpayments.errors import KeyLoadError
from opapprove.openpayments.exchange import Exchange
from opapprove.openpayments.keys import Jwk, generate_private_key, public_jwk
from opapprove.openpayments.models import AmountModel, CreateIncomingPayment, incoming_payment_grant
from opapprove.openpayments.redaction import redact_signature_base as mask_base
from opapprove.openpayments.signatures import sign_request
from tests.diagnostics.conftest import Live

# open-payments.md §2: vectors from @interledger/http-signature-utils 2.0.3, created frozen.
RFC8032_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
VECTOR_JWK = {
    "alg": "EdDSA",
    "kid": "test-key-1",
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
}
VECTOR_BODY = (
    '{"access_token":{"access":[{"type":"incoming-payment","actions":["create","read"]}]},'
    '"client":"https://wallet.example/alice"}'
)
VECTOR_POST = f"""POST https://auth.wallet.example/ HTTP/1.1
Content-Type: application/json
Content-Length: 125
Content-Digest: sha-512=:7GKvf20Y8h4ZTpYojwRq6VMuuoAGYDAFlQSrSTseAFPoQ9bDIicLUC2wJXGJ+kw4NH9OR1dt/CH8dZjQEMKoIA==:
Signature-Input: sig1=("@method" "@target-uri" "content-digest" "content-length" "content-type");keyid="test-key-1";created=1700000000
Signature: sig1=:dsOJg+1bYd0FMUb1h8lK8YmKeMMjDeTKawFYZcUpOydzYf4RS7anAdPmNAvdFd8xUpy+7iVbi1vMGFGy0bKLAw==:

{VECTOR_BODY}"""  # noqa: E501
VECTOR_GET = """> GET /outgoing-payments/abc HTTP/1.1
> Host: wallet.example
> Authorization: GNAP TOKEN123
> Signature-Input: sig1=("@method" "@target-uri" "authorization");keyid="test-key-1";created=1700000000
> Signature: sig1=:js866zqI4tSYYLCv3FH/PuBxZiecwbjSBfgjzpGm2foU5qwfFFYFFUyuXrgRNlCJgLG0JK6wvWorfBSZnGEkAA==:
>
< HTTP/1.1 200 OK
"""  # noqa: E501


@dataclass
class Traced:
    """Real exchanges of the client with the live sandbox, as trace-file lines."""

    exchanges: dict[str, Exchange]
    keys: dict[str, Jwk]
    live: Live

    def line(self, operation: str, *, show_secrets: bool = True) -> str:
        return json.dumps(exchange_record(self.exchanges[operation], show_secrets=show_secrets))

    def record(self, operation: str) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(self.line(operation))
        return record


@pytest.fixture(scope="module")
def traced(live: Live) -> Iterator[Traced]:
    seen: dict[str, Exchange] = {}

    async def go() -> None:
        async with OpenPaymentsClient(
            wallet_address_url=live.seller,
            key=live.sandbox.key,
            key_id=live.sandbox.key_id,
            on_exchange=lambda e: seen.setdefault(e.operation, e),
        ) as client:
            wallet = await client.get_wallet_address(live.seller)
            grant = await client.request_grant(
                wallet.auth_server, incoming_payment_grant(live.seller)
            )
            assert grant.access_token is not None
            token = grant.access_token.value
            body = CreateIncomingPayment(
                wallet_address=live.seller,
                incoming_amount=AmountModel(value="500", asset_code="USD", asset_scale=2),
            )
            created = await client.create_incoming_payment(wallet.resource_server, token, body)
            await client.get_incoming_payment(created.id, token)

    asyncio.run(go())
    keys = {live.sandbox.key_id: public_jwk(live.sandbox.key, live.sandbox.key_id)}
    yield Traced(seen, keys, live)


def check_line(traced: Traced, line: str, **kwargs: Any) -> Any:
    return check_signature(parse_trace_line(line, line=1), traced.keys, **kwargs)


# --------------------------------------------------------------------------- real lines


@pytest.mark.parametrize(
    "operation", ["post-request", "create-incoming-payment", "get-incoming-payment"]
)
def test_a_real_trace_line_verifies(traced: Traced, operation: str) -> None:
    result = check_line(traced, traced.line(operation))
    assert result.ok, result
    assert result.part is None and result.differs == ()
    assert result.key_id == traced.live.sandbox.key_id
    assert result.rebuilt_base == result.recorded_base
    assert "@target-uri" in result.components


def test_an_unsigned_get_is_said_to_be_unsigned(traced: Traced) -> None:
    result = check_line(traced, traced.line("get-wallet-address"))
    assert not result.ok and result.part == "headers" and "not signed" in result.message


def test_a_masked_trace_line_without_a_token_still_checks_the_body(traced: Traced) -> None:
    # --trace-file without --show-secrets: bodies re-formatted, Authorization masked.
    grant = check_line(traced, traced.line("post-request", show_secrets=False))
    assert grant.ok, grant
    assert any("compact form" in note for note in grant.notes)
    created = check_line(traced, traced.line("create-incoming-payment", show_secrets=False))
    assert not created.ok and created.part == "authorization"
    assert "--show-secrets" in (created.hint or "")


def test_a_masked_line_verifies_with_the_token_given(traced: Traced) -> None:
    token = traced.exchanges["get-incoming-payment"].request_headers["authorization"].split()[1]
    line = traced.line("get-incoming-payment", show_secrets=False)
    assert token not in line
    result = check_line(traced, line, token=token)
    assert result.ok, result
    assert token not in (mask_base(result.rebuilt_base) or "")


def test_a_tampered_body_is_a_content_digest_mismatch(traced: Traced) -> None:
    record = traced.record("create-incoming-payment")
    record["request_body"] = record["request_body"].replace('"500"', '"900"')
    result = check_line(traced, json.dumps(record))
    assert not result.ok and result.part == "content-digest"
    assert "the body's digest is sha-512=:" in result.message


@pytest.mark.parametrize(
    ("header", "value", "component"),
    [
        ("content-type", "application/json; charset=utf-8", "content-type"),
        ("authorization", "GNAP someone-elses-token", "authorization"),
        ("content-length", "999", "content-length"),
    ],
)
def test_a_tampered_header_names_the_component(
    traced: Traced, header: str, value: str, component: str
) -> None:
    record = traced.record("create-incoming-payment")
    record["request_headers"][header] = value
    result = check_line(traced, json.dumps(record))
    assert not result.ok and result.part == "signature"
    assert result.differs == (component,)
    assert component in result.message
    removed = [ln for ln in result.base_diff if ln.startswith(f'-"{component}"')]
    added = [ln for ln in result.base_diff if ln.startswith(f'+"{component}"')]
    assert len(removed) == 1 and len(added) == 1
    assert "someone-elses-token" not in "\n".join(result.base_diff)  # tokens stay masked


def test_a_different_url_is_the_target_uri(traced: Traced) -> None:
    record = traced.record("create-incoming-payment")
    record["url"] = record["url"].replace("http://", "https://")
    result = check_line(traced, json.dumps(record))
    assert result.differs == ("@target-uri",)
    assert "TLS-terminating proxy" in (result.hint or "")


def test_another_key_under_the_same_kid_means_the_key_differs(traced: Traced) -> None:
    kid = traced.live.sandbox.key_id
    other = {kid: public_jwk(generate_private_key(), kid)}
    result = check_signature(parse_trace_line(traced.line("post-request")), other)
    assert not result.ok and result.part == "signature" and result.differs == ("key",)
    assert result.base_diff == ()
    assert "the key differs" in result.message


def test_a_key_id_missing_from_the_jwks(traced: Traced) -> None:
    other = {"other": public_jwk(generate_private_key(), "other")}
    result = check_signature(parse_trace_line(traced.line("post-request")), other)
    assert not result.ok and result.part == "keyid"
    assert "(it has: other)" in result.message


def test_a_tampered_signature_input_is_signature_params(traced: Traced) -> None:
    record = traced.record("post-request")
    record["request_headers"]["signature-input"] = record["request_headers"][
        "signature-input"
    ].replace("created=", "created=1")
    result = check_line(traced, json.dumps(record))
    assert result.differs == ("@signature-params",)


def test_a_json_body_that_is_not_compact_is_what_rafiki_refuses() -> None:
    key = generate_private_key()
    request = httpx.Request(
        "POST",
        "https://auth.wallet.example/",
        content=b'{"client": "https://wallet.example/alice"}',
        headers={"Content-Type": "application/json"},
    )
    sign_request(request, key, "k1")
    captured = CapturedRequest(
        "POST", str(request.url), dict(request.headers), request.content, source="raw"
    )
    result = check_signature(captured, {"k1": public_jwk(key, "k1")})
    assert not result.ok and result.part == "body"
    assert "JSON.stringify" in result.message


# --------------------------------------------------------------------------- raw requests


def vector_keys() -> dict[str, Jwk]:
    return parse_jwks({"keys": [VECTOR_JWK]}, source="vector")


def test_the_sdk_test_vectors_verify_from_raw_text() -> None:
    seed = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032_SEED))
    assert public_jwk(seed, "test-key-1").x == VECTOR_JWK["x"]
    post = parse_raw_request(VECTOR_POST)
    assert post.url == "https://auth.wallet.example/" and post.body == VECTOR_BODY.encode()
    assert check_signature(post, vector_keys()).ok
    get = parse_raw_request(VECTOR_GET)  # curl -v style, path and Host only
    assert get.url == "https://wallet.example/outgoing-payments/abc"
    assert check_signature(get, vector_keys()).ok


def test_raw_text_with_a_separate_body_and_url() -> None:
    head, _, body = VECTOR_POST.partition("\n\n")
    head = head.replace("POST https://auth.wallet.example/ HTTP/1.1", "POST / HTTP/1.1")
    captured = parse_raw_request(head, body.encode() + b"\n", url="https://auth.wallet.example/")
    result = check_signature(captured, vector_keys())
    assert result.ok, result
    assert any("line break" in note for note in result.notes)


def test_a_loopback_host_means_http() -> None:
    captured = parse_raw_request("GET /alice HTTP/1.1\nHost: 127.0.0.1:8000\n")
    assert captured.url == "http://127.0.0.1:8000/alice"


@pytest.mark.parametrize(
    "text",
    ["", "hello world", "POST\n", "post /x HTTP/1.1\n", "GET /x HTTP/1.1\nno colon here\n"],
)
def test_raw_text_that_is_no_request_is_refused(text: str) -> None:
    with pytest.raises(CaptureError) as err:
        parse_raw_request(text, url="https://x.example/")
    assert "\n" not in str(err.value)


def test_a_path_without_host_needs_a_url() -> None:
    with pytest.raises(CaptureError) as err:
        parse_raw_request("GET /x HTTP/1.1\nAccept: */*\n")
    assert err.value.hint == "pass the full URL with --url"


# --------------------------------------------------------------------------- traces and keys


def test_reading_a_trace_file_numbers_its_lines(traced: Traced) -> None:
    text = "\n".join([traced.line("get-wallet-address"), "", traced.line("post-request")])
    captures = read_trace(text)
    assert [c.line for c in captures] == [1, 3]
    assert [c.signed for c in captures] == [False, True]
    assert captures[1].describe().startswith("line 3: POST ")
    assert client_wallet(captures[1]) == traced.live.seller
    assert client_wallets(captures) == [traced.live.seller]


@pytest.mark.parametrize("line", ["{not json", "[1, 2]", '{"method": "GET"}'])
def test_lines_that_are_no_trace_record_are_refused(line: str) -> None:
    with pytest.raises(CaptureError) as err:
        parse_trace_line(line, line=7)
    assert "line 7" in err.value.message


def test_keys_from_a_file_a_single_jwk_or_the_wallet(traced: Traced, tmp_path: Path) -> None:
    kid = traced.live.sandbox.key_id
    jwk = traced.keys[kid].to_dict()
    single = tmp_path / "one.jwk"
    single.write_text(json.dumps(jwk))
    assert set(load_jwks_file(single)) == {kid}
    fetched = asyncio.run(fetch_jwks(f"{traced.live.seller}/jwks.json"))
    assert fetched[kid] == traced.keys[kid]
    assert wallet_of_jwks_url("https://w.example/a/jwks.json/") == "https://w.example/a"
    for bad in ({"keys": []}, {"keys": [{"kid": "x"}]}, "nope"):
        with pytest.raises(KeyLoadError):
            parse_jwks(bad, source="t")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(KeyLoadError):
        load_jwks_file(broken)


def test_masking_a_base_hides_only_the_credential() -> None:
    base = '"@method": GET\n"authorization": GNAP abc.def\n"@signature-params": ()'
    assert mask_base(base) == '"@method": GET\n"authorization": GNAP ***\n"@signature-params": ()'
    assert mask_base(None) is None


def test_a_masked_token_is_not_blamed_for_another_difference(traced: Traced) -> None:
    token = traced.exchanges["create-incoming-payment"].request_headers["authorization"]
    record = json.loads(traced.line("create-incoming-payment", show_secrets=False))
    record["request_headers"]["content-type"] = "text/plain"
    result = check_line(traced, json.dumps(record), token=token.split()[1])
    assert not result.ok and result.differs == ("content-type",)
