"""RFC 9421 signatures as Open Payments uses them: the §2 vectors, and Rafiki's verifier rules."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from opapprove.openpayments.errors import SignatureError
from opapprove.openpayments.keys import public_jwk
from opapprove.openpayments.signatures import (
    OpenPaymentsAuth,
    SignedParts,
    VerifiedSignature,
    compact_json,
    content_digest,
    covered_components,
    describe_request_base,
    should_sign,
    sign_request,
    verify_request,
)

# RFC 8032 test 1; the vectors below came from @interledger/http-signature-utils 2.0.3.
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
OTHER_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KID = "test-key-1"
CREATED = 1700000000
GRANT_BODY = (
    b'{"access_token":{"access":[{"type":"incoming-payment","actions":["create","read"]}]},'
    b'"client":"https://wallet.example/alice"}'
)
BODY_COMPONENTS = '"content-digest" "content-length" "content-type"'


@dataclass(frozen=True)
class Vector:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_digest: str | None
    signature_input: str
    signature: str


VECTORS: dict[str, Vector] = {
    "post-grant": Vector(
        method="POST",
        url="https://auth.wallet.example/",
        headers={},
        body=GRANT_BODY,
        content_digest="sha-512=:7GKvf20Y8h4ZTpYojwRq6VMuuoAGYDAFlQSrSTseAFPoQ9bDIicLUC2wJXGJ"
        "+kw4NH9OR1dt/CH8dZjQEMKoIA==:",
        signature_input=f'sig1=("@method" "@target-uri" {BODY_COMPONENTS});'
        'keyid="test-key-1";created=1700000000',
        signature="sig1=:dsOJg+1bYd0FMUb1h8lK8YmKeMMjDeTKawFYZcUpOydzYf4RS7anAdPmNAvdFd8xUpy"
        "+7iVbi1vMGFGy0bKLAw==:",
    ),
    "get-with-token": Vector(
        method="GET",
        url="https://wallet.example/outgoing-payments/abc",
        headers={"authorization": "GNAP TOKEN123"},
        body=b"",
        content_digest=None,
        signature_input='sig1=("@method" "@target-uri" "authorization");'
        'keyid="test-key-1";created=1700000000',
        signature="sig1=:js866zqI4tSYYLCv3FH/PuBxZiecwbjSBfgjzpGm2foU5qwfFFYFFUyuXrgRNlCJgLG0"
        "JK6wvWorfBSZnGEkAA==:",
    ),
    "continue-with-token-and-body": Vector(
        method="POST",
        url="https://auth.wallet.example/continue/xyz",
        headers={"authorization": "GNAP CONT123"},
        body=b'{"interact_ref":"REF1"}',
        content_digest="sha-512=:eEgdfSyYyAC9A3Cbf3MBo9YSbUlVWza9bs9Cv9+HkYtFZXyi62MXc8JA3tCC"
        "PBSuXWeNnSPtYEWjeWjeH/FfKA==:",
        signature_input=f'sig1=("@method" "@target-uri" "authorization" {BODY_COMPONENTS});'
        'keyid="test-key-1";created=1700000000',
        signature="sig1=:n0g1FN0W3XvRYutbFUYQ8o3mgjM/h4L1h+MB+drgyAUbpOl3M2qPM28CsoiA2vwKc0g2"
        "7PBmW3edm/bjIJ6DBQ==:",
    ),
    "delete-token": Vector(
        method="DELETE",
        url="https://auth.wallet.example/token/mgmt1",
        headers={"authorization": "GNAP TOK"},
        body=b"",
        content_digest=None,
        signature_input='sig1=("@method" "@target-uri" "authorization");'
        'keyid="test-key-1";created=1700000000',
        signature="sig1=:UffXvL3I7TZV64WZ8f8N1wxqanTaUhRS+8K+OMapcbLTP+ef7AJpgkG1J/kmtGFNhNpV"
        "vP1VP+da9crI0sGkAg==:",
    ),
}


def _request(name: str) -> httpx.Request:
    v = VECTORS[name]
    return httpx.Request(v.method, v.url, headers=v.headers, content=v.body)


def _resolver(
    key: ed25519.Ed25519PrivateKey = KEY, kid: str = KID
) -> Callable[[str], ed25519.Ed25519PublicKey | None]:
    public = key.public_key()
    return lambda wanted: public if wanted == kid else None


def _signed(name: str) -> httpx.Request:
    request = _request(name)
    sign_request(request, KEY, KID, created=CREATED)
    return request


def _verify(request: httpx.Request, **kwargs: Any) -> VerifiedSignature:
    return verify_request(
        request.method,
        str(request.url),
        request.headers,
        request.content,
        kwargs.pop("resolve_key", _resolver()),
        **kwargs,
    )


def _hand_signed(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    components: list[str],
    params: str = f'keyid="{KID}";created={CREATED}',
    label: str = "sig1",
    key: ed25519.Ed25519PrivateKey = KEY,
) -> httpx.Request:
    """Sign a request over any component list, building the base by hand (RFC 9421 §2.5).

    Lets each verifier rule be tested on its own: the signature itself is always valid.
    """
    request = httpx.Request(method, url, headers=headers, content=body)
    inner = "(" + " ".join(f'"{c}"' for c in components) + ")" + (";" + params if params else "")
    lines = []
    for c in components:
        if c == "@method":
            value = method
        elif c == "@target-uri":
            value = url
        else:
            value = request.headers[c]
        lines.append(f'"{c}": {value}')
    lines.append(f'"@signature-params": {inner}')
    signature = base64.b64encode(key.sign("\n".join(lines).encode())).decode()
    request.headers["Signature-Input"] = f"{label}={inner}"
    request.headers["Signature"] = f"{label}=:{signature}:"
    return request


def _body_headers(body: bytes, digest: str | None = None) -> dict[str, str]:
    return {
        "content-digest": digest or content_digest(body),
        "content-length": str(len(body)),
        "content-type": "application/json",
    }


TOKEN_COMPONENTS = ["@method", "@target-uri", "authorization"]
BODY_COMPONENT_LIST = [*TOKEN_COMPONENTS, "content-digest", "content-length", "content-type"]
CONTINUE_BODY = b'{"interact_ref":"REF1"}'


def _hand_signed_get(components: list[str], **kwargs: Any) -> httpx.Request:
    """A resource server GET with a token (the SDK's get-with-token, by hand)."""
    url = "https://wallet.example/outgoing-payments/abc"
    return _hand_signed("GET", url, {"authorization": "GNAP T"}, b"", components, **kwargs)


def _hand_signed_delete(components: list[str], **kwargs: Any) -> httpx.Request:
    """A token revocation (DELETE without a body), by hand."""
    url = "https://auth.wallet.example/token/1"
    return _hand_signed("DELETE", url, {"authorization": "GNAP T"}, b"", components, **kwargs)


def _hand_signed_continue(headers: dict[str, str], components: list[str]) -> httpx.Request:
    """A grant continuation carrying CONTINUE_BODY, with these body headers, by hand."""
    url = "https://auth.wallet.example/continue/xyz"
    headers = {"authorization": "GNAP C", **headers}
    return _hand_signed("POST", url, headers, CONTINUE_BODY, components)


# ------------------------------------------------------------------------- signing


@pytest.mark.parametrize("name", list(VECTORS))
def test_sign_request_reproduces_the_sdk_vectors_byte_for_byte(name: str) -> None:
    v = VECTORS[name]
    request = _request(name)
    parts = sign_request(request, KEY, KID, created=CREATED)
    assert request.headers["Signature-Input"] == v.signature_input
    assert request.headers["Signature"] == v.signature
    assert parts.signature_input == v.signature_input
    assert parts.signature == v.signature
    assert parts.content_digest == v.content_digest
    assert (parts.key_id, parts.created) == (KID, CREATED)
    if v.body:
        assert request.headers["Content-Digest"] == v.content_digest
        assert request.headers["Content-Length"] == str(len(v.body))
        assert request.headers["Content-Type"] == "application/json"
    else:
        assert "Content-Digest" not in request.headers
        assert "Content-Type" not in request.headers


@pytest.mark.parametrize("name", list(VECTORS))
def test_openpayments_auth_with_a_fixed_clock_signs_the_vectors(name: str) -> None:
    v = VECTORS[name]
    seen: list[httpx.Request] = []
    traced: list[SignedParts] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    auth = OpenPaymentsAuth(
        KEY, KID, clock=lambda: CREATED + 0.9, on_signed=lambda _r, p: traced.append(p)
    )
    with httpx.Client(auth=auth, transport=httpx.MockTransport(handler)) as client:
        response = client.request(v.method, v.url, headers=v.headers, content=v.body)
    assert response.status_code == 200
    (sent,) = seen
    assert sent.headers["Signature-Input"] == v.signature_input
    assert sent.headers["Signature"] == v.signature
    if v.content_digest:
        assert sent.headers["Content-Digest"] == v.content_digest
    (parts,) = traced
    assert parts.signature == v.signature
    assert sent.extensions["opapprove_signature"] == parts


def test_openpayments_auth_leaves_unauthenticated_gets_unsigned() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    traced: list[SignedParts] = []
    auth = OpenPaymentsAuth(
        KEY, KID, clock=lambda: CREATED, on_signed=lambda _r, p: traced.append(p)
    )
    with httpx.Client(auth=auth, transport=httpx.MockTransport(handler)) as client:
        client.get("https://wallet.example/alice", headers={"Accept": "application/json"})
        client.get("https://wallet.example/alice/jwks.json")
    assert all("signature" not in r.headers for r in seen)
    assert all("signature-input" not in r.headers for r in seen)
    assert traced == []


def test_signature_base_is_exposed_exactly() -> None:
    parts = sign_request(_request("get-with-token"), KEY, KID, created=CREATED)
    assert parts.signature_base == (
        '"@method": GET\n'
        '"@target-uri": https://wallet.example/outgoing-payments/abc\n'
        '"authorization": GNAP TOKEN123\n'
        '"@signature-params": ("@method" "@target-uri" "authorization");'
        'keyid="test-key-1";created=1700000000'
    )


def test_signature_base_of_a_bodied_request_lists_the_body_headers() -> None:
    parts = sign_request(_request("post-grant"), KEY, KID, created=CREATED)
    v = VECTORS["post-grant"]
    assert parts.signature_base.split("\n") == [
        '"@method": POST',
        '"@target-uri": https://auth.wallet.example/',
        f'"content-digest": {v.content_digest}',
        '"content-length": 125',
        '"content-type": application/json',
        '"@signature-params": ' + v.signature_input.removeprefix("sig1="),
    ]
    assert not parts.signature_base.endswith("\n")
    assert (
        KEY.public_key().verify(base64.b64decode(v.signature[6:-1]), parts.signature_base.encode())
        is None
    )


@pytest.mark.parametrize("name", list(VECTORS))
def test_describe_request_base_rebuilds_the_signed_base(name: str) -> None:
    request = _request(name)
    parts = sign_request(request, KEY, KID, created=CREATED)
    assert describe_request_base(request.method, str(request.url), request.headers) == (
        parts.signature_base
    )


def test_describe_request_base_of_an_unsigned_or_garbled_request_is_none() -> None:
    assert describe_request_base("GET", "https://wallet.example/alice", {}) is None
    garbled = {"signature-input": "this is ((( not a dictionary"}
    assert describe_request_base("GET", "https://wallet.example/alice", garbled) is None
    other_label = {"signature-input": 'sig2=("@method");keyid="k"'}
    assert describe_request_base("GET", "https://wallet.example/alice", other_label) is None


def test_sign_request_covers_the_port_and_the_raw_query() -> None:
    url = "http://127.0.0.1:8765/incoming-payments?wallet-address=http%3A%2F%2F127.0.0.1%3A8765%2Fa&first=10"
    request = httpx.Request("GET", url, headers={"Authorization": "GNAP t"})
    parts = sign_request(request, KEY, KID, created=CREATED)
    assert f'"@target-uri": {url}\n' in parts.signature_base


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("POST", {}, True),
        ("post", {}, True),
        ("GET", {}, False),
        ("GET", {"Accept": "application/json"}, False),
        ("GET", {"Authorization": "GNAP t"}, True),
        ("GET", {"authorization": "GNAP t"}, True),
        ("DELETE", {"Authorization": "GNAP t"}, True),
        ("DELETE", {}, False),
        ("PUT", {}, False),
    ],
)
def test_should_sign_every_post_and_every_request_with_a_token(
    method: str, headers: dict[str, str], expected: bool
) -> None:
    assert should_sign(method, headers) is expected


def test_covered_components_follow_the_sdk_order() -> None:
    assert covered_components(has_authorization=False, has_body=False) == [
        "@method",
        "@target-uri",
    ]
    assert covered_components(has_authorization=True, has_body=True) == [
        "@method",
        "@target-uri",
        "authorization",
        "content-digest",
        "content-length",
        "content-type",
    ]


# ------------------------------------------------------------------------- compact JSON


def test_compact_json_has_no_spaces_and_keeps_key_order() -> None:
    obj = {"b": [1, 2, {"c": None}], "a": True, "s": "x y"}
    assert compact_json(obj) == b'{"b":[1,2,{"c":null}],"a":true,"s":"x y"}'


def test_compact_json_keeps_non_ascii_as_utf8() -> None:
    assert compact_json({"d": "Café € 日本 😀"}) == '{"d":"Café € 日本 😀"}'.encode()
    assert b"\\u" not in compact_json({"d": "é"})


@pytest.mark.parametrize(
    ("value", "json_stringify"),
    [
        # Outputs of Node 20's JSON.stringify for the same values.
        ({"a": "line\nbreak\ttab"}, '{"a":"line\\nbreak\\ttab"}'),
        ({"q": 'say "hi" \\ /'}, '{"q":"say \\"hi\\" \\\\ /"}'),
        ({"c": "\x00\x1f\x7f"}, '{"c":"\\u0000\\u001f\x7f"}'),
        ({"u": "\u2028\u2029"}, '{"u":"\u2028\u2029"}'),
        ({"n": 9007199254740991, "z": 0, "neg": -5}, '{"n":9007199254740991,"z":0,"neg":-5}'),
        ([], "[]"),
        ({}, "{}"),
    ],
)
def test_compact_json_matches_json_stringify(value: object, json_stringify: str) -> None:
    assert compact_json(value) == json_stringify.encode("utf-8")


def test_compact_json_digest_is_over_the_exact_bytes() -> None:
    body = compact_json(json.loads(GRANT_BODY))
    assert body == GRANT_BODY
    assert content_digest(body) == VECTORS["post-grant"].content_digest


# ------------------------------------------------------------------------- verifier: accepts


@pytest.mark.parametrize("name", list(VECTORS))
def test_verify_request_accepts_a_good_request(name: str) -> None:
    request = _signed(name)
    verified = _verify(request)
    assert verified.key_id == KID
    assert verified.created == CREATED
    assert verified.components == VECTORS[name].signature_input.split("(")[1].split(")")[0].replace(
        '"', ""
    ).split(" ")
    assert (
        verified.signature_base
        == sign_request(_request(name), KEY, KID, created=CREATED).signature_base
    )


def test_verify_request_accepts_the_published_vector_headers_as_received() -> None:
    v = VECTORS["continue-with-token-and-body"]
    assert v.content_digest is not None
    headers = {
        "Authorization": "GNAP CONT123",
        "Content-Digest": v.content_digest,
        "Content-Length": "23",
        "Content-Type": "application/json",
        "Signature-Input": v.signature_input,
        "Signature": v.signature,
    }
    verify_request("post", v.url, headers, v.body, _resolver())


def test_verify_request_tolerates_an_alg_param() -> None:
    request = _hand_signed_get(
        TOKEN_COMPONENTS, params=f'keyid="{KID}";created={CREATED};alg="ed25519"'
    )
    assert _verify(request).key_id == KID


def test_verify_request_accepts_params_in_any_order() -> None:
    request = _hand_signed_delete(TOKEN_COMPONENTS, params=f'created={CREATED};keyid="{KID}"')
    assert _verify(request).created == CREATED


def test_verify_request_accepts_a_sha256_content_digest() -> None:
    sha256 = base64.b64encode(hashlib.sha256(CONTINUE_BODY).digest()).decode()
    headers = _body_headers(CONTINUE_BODY, f"sha-256=:{sha256}:")
    request = _hand_signed_continue(headers, BODY_COMPONENT_LIST)
    assert "content-digest" in _verify(request).components


def test_verify_request_without_digest_coverage_is_accepted_in_rafiki_mode() -> None:
    request = _hand_signed_continue({"content-type": "application/json"}, TOKEN_COMPONENTS)
    assert _verify(request, require_digest=False).components == TOKEN_COMPONENTS


def test_verify_request_created_window_off_accepts_any_age() -> None:
    assert _verify(_signed("delete-token"), now=CREATED + 10**8).created == CREATED


def test_verify_request_created_window_accepts_a_fresh_signature() -> None:
    assert _verify(_signed("delete-token"), created_window=300, now=CREATED + 299).created == (
        CREATED
    )


# ------------------------------------------------------------------------- verifier: rejects


def test_verify_request_rejects_a_tampered_body() -> None:
    request = _signed("post-grant")
    with pytest.raises(SignatureError) as caught:
        verify_request(
            "POST",
            str(request.url),
            request.headers,
            request.content.replace(b"read", b"list"),
            _resolver(),
        )
    assert caught.value.part == "content-digest"
    assert "does not match the body" in str(caught.value)


def test_verify_request_rejects_a_digest_that_does_not_match() -> None:
    wrong = content_digest(b'{"interact_ref":"REF2"}')
    request = _hand_signed_continue(_body_headers(CONTINUE_BODY, wrong), BODY_COMPONENT_LIST)
    with pytest.raises(SignatureError) as caught:
        _verify(request)
    assert caught.value.part == "content-digest"


def test_verify_request_rejects_the_wrong_key() -> None:
    with pytest.raises(SignatureError) as caught:
        _verify(_signed("get-with-token"), resolve_key=_resolver(OTHER_KEY))
    assert caught.value.part == "signature"
    assert "provided signature is invalid" in str(caught.value)


def test_verify_request_rejects_an_unknown_kid() -> None:
    with pytest.raises(SignatureError) as caught:
        _verify(_signed("get-with-token"), resolve_key=_resolver(kid="another-key"))
    assert caught.value.part == "keyid"
    assert "test-key-1" in str(caught.value)


# Each request is validly signed; one verifier rule refuses it: (request, part, in message).
HAND_SIGNED_REJECTS = {
    "label-other-than-sig1": (
        lambda: _hand_signed_get(TOKEN_COMPONENTS, label="sig2"),
        "label",
        "sig2",
    ),
    "method-not-covered": (
        lambda: _hand_signed_delete(["@target-uri", "authorization"]),
        "components",
        "@method",
    ),
    "target-uri-not-covered": (
        lambda: _hand_signed_delete(["@method", "authorization"]),
        "components",
        "@target-uri",
    ),
    "authorization-not-covered": (
        lambda: _hand_signed_get(["@method", "@target-uri"]),
        "components",
        "Authorization",
    ),
    "content-digest-not-covered-in-strict-mode": (
        lambda: _hand_signed_continue(_body_headers(CONTINUE_BODY), TOKEN_COMPONENTS),
        "components",
        "content-digest is not covered",
    ),
    "no-keyid": (
        lambda: _hand_signed_delete(TOKEN_COMPONENTS, params=f"created={CREATED}"),
        "keyid",
        "",
    ),
}


@pytest.mark.parametrize(
    ("make_request", "part", "said"), HAND_SIGNED_REJECTS.values(), ids=list(HAND_SIGNED_REJECTS)
)
def test_verify_request_rejects_a_validly_signed_request_that_breaks_a_rule(
    make_request: Callable[[], httpx.Request], part: str, said: str
) -> None:
    with pytest.raises(SignatureError) as caught:
        _verify(make_request())
    assert caught.value.part == part
    assert said in str(caught.value)


def test_verify_request_rejects_covered_digest_without_content_type() -> None:
    body = CONTINUE_BODY
    request = _signed("continue-with-token-and-body")
    del request.headers["content-type"]
    with pytest.raises(SignatureError) as caught:
        verify_request("POST", str(request.url), request.headers, body, _resolver())
    assert caught.value.part == "content-type"


def test_verify_request_rejects_covered_digest_with_an_empty_body() -> None:
    request = _signed("continue-with-token-and-body")
    with pytest.raises(SignatureError) as caught:
        verify_request("POST", str(request.url), request.headers, b"", _resolver())
    assert caught.value.part == "body"


def test_verify_request_rejects_an_uppercase_component() -> None:
    request = _signed("delete-token")
    request.headers["Signature-Input"] = request.headers["Signature-Input"].replace(
        '"authorization"', '"Authorization"'
    )
    with pytest.raises(SignatureError) as caught:
        _verify(request)
    assert caught.value.part == "components"


def test_verify_request_rejects_an_unsigned_request() -> None:
    with pytest.raises(SignatureError) as caught:
        verify_request(
            "GET", "https://wallet.example/x", {"authorization": "GNAP T"}, b"", _resolver()
        )
    assert caught.value.part == "headers"


def test_verify_request_rejects_another_target_uri() -> None:
    request = _signed("delete-token")
    with pytest.raises(SignatureError) as caught:
        verify_request(
            "DELETE",
            "https://auth.wallet.example:8443/token/mgmt1",
            request.headers,
            b"",
            _resolver(),
        )
    assert caught.value.part == "signature"


def test_verify_request_created_window_rejects_an_old_signature() -> None:
    with pytest.raises(SignatureError) as caught:
        _verify(_signed("delete-token"), created_window=300, now=CREATED + 301)
    assert caught.value.part == "created"
    assert "300s" in str(caught.value)


def test_verify_request_created_window_rejects_a_future_signature() -> None:
    with pytest.raises(SignatureError) as caught:
        _verify(_signed("delete-token"), created_window=300, now=CREATED - 301)
    assert caught.value.part == "created"


def test_verify_request_created_window_rejects_a_signature_without_created() -> None:
    request = _hand_signed_delete(TOKEN_COMPONENTS, params=f'keyid="{KID}"')
    assert _verify(request).created is None
    with pytest.raises(SignatureError) as caught:
        _verify(request, created_window=300, now=CREATED)
    assert caught.value.part == "created"


def test_verify_request_accepts_a_jwk_resolved_key() -> None:
    jwk = public_jwk(KEY, KID)
    keys = {jwk.kid: jwk.public_key()}
    request = _signed("get-with-token")
    assert verify_request("GET", str(request.url), request.headers, b"", keys.get).key_id == KID
