"""Our signatures against the official @interledger/http-signature-utils 2.0.3, both ways.

Every node op of this module runs in one batch (one node start), built up front.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from opapprove.openpayments.errors import SignatureError
from opapprove.openpayments.keys import private_key_pem, public_jwk
from opapprove.openpayments.signatures import compact_json, sign_request, verify_request

pytestmark = pytest.mark.interop

KEY = ed25519.Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
OTHER_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KID = "test-key-1"
CREATED = 1700000000


@dataclass(frozen=True)
class Req:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def to_op(self) -> dict[str, Any]:
        op: dict[str, Any] = {"method": self.method, "url": self.url, "headers": self.headers}
        if self.body:
            op["body"] = self.body.decode("utf-8")
        return op


def _body(obj: Any) -> bytes:
    return compact_json(obj)


CASES: dict[str, Req] = {
    "post_body": Req(
        "POST",
        "https://auth.wallet.example/",
        body=_body(
            {
                "access_token": {
                    "access": [{"type": "incoming-payment", "actions": ["create", "read"]}]
                },
                "client": "https://wallet.example/alice",
            }
        ),
    ),
    "get_token": Req(
        "GET",
        "https://wallet.example/outgoing-payments/abc",
        {"Authorization": "GNAP TOKEN123"},
    ),
    "post_token_body": Req(
        "POST",
        "https://auth.wallet.example/continue/xyz",
        {"Authorization": "GNAP CONT123"},
        _body({"interact_ref": "REF1"}),
    ),
    "delete_token": Req(
        "DELETE",
        "https://auth.wallet.example/token/mgmt1",
        {"Authorization": "GNAP TOK"},
    ),
    # Loopback with a port, an encoded query and non-ASCII JSON: where signers drift apart.
    "get_query_port": Req(
        "GET",
        "http://127.0.0.1:8765/outgoing-payments?wallet-address=http%3A%2F%2F127.0.0.1%3A8765%2Falice&first=10",
        {"Authorization": "GNAP T0K-with.dots"},
    ),
    "post_unicode": Req(
        "POST",
        "http://127.0.0.1:8765/incoming-payments",
        {"Authorization": "GNAP abc"},
        _body(
            {
                "walletAddress": "http://127.0.0.1:8765/alice",
                "incomingAmount": {"value": "1000", "assetCode": "EUR", "assetScale": 2},
                "metadata": {"description": "Café crème für 2 € — 日本", "n": 3},
            }
        ),
    ),
}


def _sign_ours(req: Req) -> Req:
    request = httpx.Request(req.method, req.url, headers=req.headers, content=req.body)
    sign_request(request, KEY, KID, created=CREATED)
    headers = {k: v for k, v in request.headers.items() if k != "host"}
    return replace(req, headers=headers)


def _tamper_body(req: Req) -> Req:
    assert req.body.endswith(b"}")
    return replace(req, body=req.body[:-1] + b',"tampered":true}')


def _tamper_header(req: Req) -> Req:
    headers = dict(req.headers)
    name = next((k for k in headers if k.lower() == "authorization"), None)
    if name is not None:
        headers[name] = headers[name] + "x"
    else:
        name = next(k for k in headers if k.lower() == "content-type")
        headers[name] = "application/json; charset=utf-8"
    return replace(req, headers=headers)


def _tamper_label(req: Req) -> Req:
    headers = {
        k: v.replace("sig1=", "sig2=", 1) if k.lower() in ("signature", "signature-input") else v
        for k, v in req.headers.items()
    }
    return replace(req, headers=headers)


def _tamper_url(req: Req) -> Req:
    return replace(req, url=req.url.replace("://", "://evil.", 1))


TAMPERS: dict[str, Callable[[Req], Req]] = {
    "body": _tamper_body,
    "header": _tamper_header,
    "label": _tamper_label,
    "url": _tamper_url,
    "key": lambda req: req,  # same request, verified against another key
}
# What our verifier should blame for each tamper.
EXPECTED_PART = {
    "body": "content-digest",
    "header": "signature",
    "label": "label",
    "url": "signature",
    "key": "signature",
}
TAMPER_CASES = [
    (case, tamper)
    for case in CASES
    for tamper in TAMPERS
    if not (tamper == "body" and not CASES[case].body)
]

# JSON values whose JSON.stringify form compact_json must reproduce (no floats: Open Payments
# sends amounts as strings, and Python prints 1.0 where JS prints 1).
_rng = random.Random(20240611)
_ALPHABET = "abcXYZ019 \"\\/\n\t\x00\x1f\x7fé€日😀\u2028\u2029<>&'"


def _random_json(depth: int = 0) -> Any:
    kind = _rng.randrange(6 if depth < 3 else 4)
    if kind == 0:
        return "".join(_rng.choice(_ALPHABET) for _ in range(_rng.randrange(12)))
    if kind == 1:
        return _rng.randrange(-(2**53) + 1, 2**53)
    if kind == 2:
        return _rng.choice([True, False, None])
    if kind == 3:
        return str(_rng.randrange(2**64))
    if kind == 4:
        return [_random_json(depth + 1) for _ in range(_rng.randrange(4))]
    return {
        "".join(_rng.choice(_ALPHABET) for _ in range(_rng.randrange(1, 6))): _random_json(
            depth + 1
        )
        for _ in range(_rng.randrange(4))
    }


JSON_SAMPLES = [_random_json() for _ in range(200)]


@dataclass
class Batch:
    official_signed: dict[str, dict[str, str]]
    verify_ours: dict[str, dict[str, Any]]
    verify_ours_tampered: dict[tuple[str, str], dict[str, Any]]
    stringified: list[dict[str, Any]]


def _verify_op(req: Req, key: ed25519.Ed25519PrivateKey) -> dict[str, Any]:
    return {"op": "verify", **req.to_op(), "jwk": public_jwk(key, KID).to_dict()}


@pytest.fixture(scope="module")
def batch(sigtool: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Batch:
    pem = private_key_pem(KEY).decode("ascii")
    ops: list[dict[str, Any]] = []
    slots: list[tuple[str, Any]] = []
    for name, req in CASES.items():
        ops.append({"op": "sign", **req.to_op(), "privateKeyPem": pem, "keyId": KID})
        ops[-1]["created"] = CREATED
        slots.append(("sign", name))
        ops.append(_verify_op(_sign_ours(req), KEY))
        slots.append(("verify", name))
    for name, tamper in TAMPER_CASES:
        signed = _sign_ours(CASES[name])
        key = OTHER_KEY if tamper == "key" else KEY
        ops.append(_verify_op(TAMPERS[tamper](signed), key))
        slots.append(("tampered", (name, tamper)))
    for sample in JSON_SAMPLES:
        ops.append({"op": "stringify", "text": compact_json(sample).decode("utf-8")})
        slots.append(("stringify", None))
    results = sigtool(ops)
    out = Batch({}, {}, {}, [])
    for (kind, key_), result in zip(slots, results, strict=True):
        assert "error" not in result, f"{kind} {key_}: {result['error']}"
        if kind == "sign":
            out.official_signed[key_] = result["headers"]
        elif kind == "verify":
            out.verify_ours[key_] = result
        elif kind == "tampered":
            out.verify_ours_tampered[key_] = result
        else:
            out.stringified.append(result)
    return out


def _official_request(batch: Batch, name: str) -> Req:
    req = CASES[name]
    return replace(req, headers={**req.headers, **batch.official_signed[name]})


def _verify_ours(req: Req, key: ed25519.Ed25519PrivateKey = KEY) -> None:
    public = key.public_key()
    verify_request(
        req.method,
        req.url,
        req.headers,
        req.body,
        lambda kid: public if kid == KID else None,
    )


# ------------------------------------------------------------------ we sign, official verifies


@pytest.mark.parametrize("name", list(CASES))
def test_official_validate_signature_accepts_what_we_sign(batch: Batch, name: str) -> None:
    assert batch.verify_ours[name] == {"headersValid": True, "valid": True}


@pytest.mark.parametrize(("name", "tamper"), TAMPER_CASES)
def test_official_validate_signature_rejects_what_we_sign_then_tamper(
    batch: Batch, name: str, tamper: str
) -> None:
    assert batch.verify_ours_tampered[(name, tamper)]["valid"] is False


# ------------------------------------------------------------------ official signs, we verify


@pytest.mark.parametrize("name", list(CASES))
def test_official_create_headers_match_ours_byte_for_byte(batch: Batch, name: str) -> None:
    ours = dict(_sign_ours(CASES[name]).headers)
    official = {k.lower(): v for k, v in batch.official_signed[name].items()}
    for header, value in official.items():
        assert ours[header] == value, header
    expected = {"signature", "signature-input"}
    if CASES[name].body:
        expected |= {"content-digest", "content-length", "content-type"}
    assert set(official) == expected


@pytest.mark.parametrize("name", list(CASES))
def test_we_verify_what_official_create_headers_signs(batch: Batch, name: str) -> None:
    _verify_ours(_official_request(batch, name))


@pytest.mark.parametrize(("name", "tamper"), TAMPER_CASES)
def test_we_reject_what_official_signs_then_tamper(batch: Batch, name: str, tamper: str) -> None:
    req = TAMPERS[tamper](_official_request(batch, name))
    with pytest.raises(SignatureError) as caught:
        _verify_ours(req, OTHER_KEY if tamper == "key" else KEY)
    assert caught.value.part == EXPECTED_PART[tamper]


# ------------------------------------------------------------------ compact JSON


def test_compact_json_is_what_json_stringify_produces(batch: Batch) -> None:
    for sample, result in zip(JSON_SAMPLES, batch.stringified, strict=True):
        assert result["text"] == compact_json(sample).decode("utf-8"), sample
