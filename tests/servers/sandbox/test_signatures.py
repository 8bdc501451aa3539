"""The sandbox's verifier refuses what Rafiki refuses, and what Rafiki lets through by mistake."""

from __future__ import annotations

import base64
import json
import types
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from opapprove.openpayments.keys import generate_private_key
from opapprove.openpayments.signatures import (
    compact_json,
    content_digest,
    sign_request,
    signature_base,
)
from tests.sandbox_fixtures import Sandbox, make_sandbox

pytestmark = pytest.mark.anyio

FULL = ["@method", "@target-uri", "content-digest", "content-length", "content-type"]


def grant_body(sandbox: Sandbox) -> bytes:
    access = [{"type": "incoming-payment", "actions": ["create", "read"]}]
    return compact_json({"access_token": {"access": access}, "client": sandbox.seller})


def sign_custom(
    request: httpx.Request,
    key: ed25519.Ed25519PrivateKey,
    kid: str,
    components: list[str],
    *,
    label: str = "sig1",
    digest: str | None = None,
) -> None:
    """Sign over exactly ``components`` (a well-formed signature over too little)."""
    if request.content:
        request.headers["Content-Digest"] = digest or content_digest(request.content)
        request.headers["Content-Length"] = str(len(request.content))
        request.headers["Content-Type"] = "application/json"
    inner = "(" + " ".join(f'"{c}"' for c in components) + f');keyid="{kid}";created=1700000000'
    message = types.SimpleNamespace(
        method=request.method, url=str(request.url), headers=request.headers
    )
    base = signature_base(message, components, f"sig1={inner}")
    signature = base64.b64encode(key.sign(base.encode("ascii"))).decode()
    request.headers["Signature-Input"] = f"{label}={inner}"
    request.headers["Signature"] = f"{label}=:{signature}:"


async def send(sandbox: Sandbox, request: httpx.Request) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.asgi)) as http:
        return await http.send(request)


def grant_request(sandbox: Sandbox, body: bytes | None = None) -> httpx.Request:
    return httpx.Request(
        "POST",
        sandbox.url("/auth"),
        content=grant_body(sandbox) if body is None else body,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )


def error_of(resp: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = resp.json()["error"]
    return error


async def test_a_correct_signature_passes(sandbox: Sandbox) -> None:
    req = grant_request(sandbox)
    sign_request(req, sandbox.key, sandbox.key_id)
    resp = await send(sandbox, req)
    assert resp.status_code == 200, resp.text


async def test_tampered_body_is_refused(sandbox: Sandbox) -> None:
    req = grant_request(sandbox)
    sign_request(req, sandbox.key, sandbox.key_id)
    other = grant_body(sandbox).replace(b'"read"', b'"list"')
    # The attacker also fixes the digest, but cannot re-sign it.
    forged = httpx.Request("POST", req.url, content=other, headers=req.headers)
    forged.headers["Content-Digest"] = content_digest(other)
    resp = await send(sandbox, forged)
    assert resp.status_code == 401
    assert error_of(resp)["code"] == "invalid_client"
    assert "provided signature is invalid" in error_of(resp)["description"]


async def test_digest_mismatch_is_refused(sandbox: Sandbox) -> None:
    req = grant_request(sandbox)
    # A correct signature over a digest of other bytes: the digest check must catch it.
    sign_custom(req, sandbox.key, sandbox.key_id, FULL, digest=content_digest(b'{"other":1}'))
    resp = await send(sandbox, req)
    assert resp.status_code == 401
    assert "Content-Digest does not match" in error_of(resp)["description"]


async def test_wrong_key_is_refused(sandbox: Sandbox) -> None:
    req = grant_request(sandbox)
    sign_request(req, generate_private_key(), sandbox.key_id)
    resp = await send(sandbox, req)
    assert resp.status_code == 401
    assert error_of(resp)["code"] == "invalid_client"


async def test_unknown_key_id_cannot_determine_client(sandbox: Sandbox) -> None:
    req = grant_request(sandbox)
    sign_request(req, sandbox.key, "some-other-kid")
    resp = await send(sandbox, req)
    assert resp.status_code == 400
    assert error_of(resp) == {"code": "invalid_client", "description": "could not determine client"}


async def test_label_other_than_sig1_is_refused(sandbox: Sandbox) -> None:
    req = grant_request(sandbox)
    sign_custom(req, sandbox.key, sandbox.key_id, FULL, label="sig2")
    resp = await send(sandbox, req)
    assert resp.status_code == 401
    assert "sig1" in error_of(resp)["description"]


@pytest.mark.parametrize(
    ("components", "missing"),
    [
        (FULL[1:], "@method"),
        ([FULL[0], *FULL[2:]], "@target-uri"),
        (["@method", "@target-uri"], "content-digest"),
    ],
)
async def test_missing_coverage_is_refused(
    sandbox: Sandbox, components: list[str], missing: str
) -> None:
    req = grant_request(sandbox)
    sign_custom(req, sandbox.key, sandbox.key_id, components)
    resp = await send(sandbox, req)
    assert resp.status_code == 401, resp.text
    assert missing in error_of(resp)["description"]


async def test_missing_authorization_coverage_is_refused_at_the_resource_server(
    sandbox: Sandbox,
) -> None:
    async with sandbox.client() as api:
        incoming = await api.incoming_payment()
        token = await api.token([{"type": "incoming-payment", "actions": ["read"]}])
    req = httpx.Request("GET", incoming["id"], headers={"Authorization": f"GNAP {token['value']}"})
    sign_custom(req, sandbox.key, sandbox.key_id, ["@method", "@target-uri"])
    resp = await send(sandbox, req)
    assert resp.status_code == 401
    error = error_of(resp)
    assert error["description"] == "Signature validation error: provided signature is invalid"
    assert "Authorization header is present but not covered" in error["details"]["reason"]
    assert error["details"]["keyIdInSignature"] == sandbox.key_id


async def test_resource_server_names_the_unknown_key_and_lists_client_keys(
    sandbox: Sandbox,
) -> None:
    async with sandbox.client() as api:
        token = await api.token([{"type": "incoming-payment", "actions": ["create"]}])
    async with sandbox.client(key_id="not-registered") as api:
        resp = await api.post(
            sandbox.url("/op/incoming-payments"),
            {"walletAddress": sandbox.seller},
            token=token["value"],
        )
    assert resp.status_code == 401
    error = error_of(resp)
    assert error["description"] == (
        "Signature validation error: could not find key in list of client keys"
    )
    assert error["details"]["keyIdInSignature"] == "not-registered"
    assert error["details"]["client"] == sandbox.seller
    assert [k["kid"] for k in error["details"]["clientKeys"]] == [sandbox.key_id]


async def test_resource_server_without_signature_says_keyid_missing(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        token = await api.token([{"type": "incoming-payment", "actions": ["create", "read"]}])
        incoming = await api.incoming_payment(token=token["value"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.asgi)) as http:
        resp = await http.get(incoming["id"], headers={"Authorization": f"GNAP {token['value']}"})
    assert resp.status_code == 401
    assert error_of(resp)["description"] == (
        "Signature validation error: missing keyId in signature input"
    )


async def test_pretty_json_is_refused_because_rafiki_would_refuse_it(sandbox: Sandbox) -> None:
    pretty = json.dumps(json.loads(grant_body(sandbox)), indent=2).encode()
    req = grant_request(sandbox, pretty)
    sign_request(req, sandbox.key, sandbox.key_id)
    resp = await send(sandbox, req)
    assert resp.status_code == 401
    assert "compact JSON" in error_of(resp)["description"]


async def test_signature_is_checked_against_the_public_url() -> None:
    box = make_sandbox(public_url="https://wallet.example")
    # Addressed (and signed) as https://wallet.example, delivered to a local origin.
    body = compact_json(
        {
            "access_token": {"access": [{"type": "quote", "actions": ["create"]}]},
            "client": "https://wallet.example/seller",
        }
    )
    signed = httpx.Request("POST", "https://wallet.example/auth", content=body)
    sign_request(signed, box.key, box.key_id)
    delivered = httpx.Request(
        "POST", "http://127.0.0.1:8000/auth", content=body, headers=signed.headers
    )
    delivered.headers["Host"] = "127.0.0.1:8000"
    resp = await send(box, delivered)
    assert resp.status_code == 200, resp.text
    assert resp.json()["access_token"]["manage"].startswith("https://wallet.example/auth/token/")
    # Signed for the local origin instead: not what the public URL says, refused.
    local = httpx.Request("POST", "http://127.0.0.1:8000/auth", content=body)
    sign_request(local, box.key, box.key_id)
    assert (await send(box, local)).status_code == 401
    box.recorder.assert_clean()


async def test_optional_created_window() -> None:
    box = make_sandbox(created_window=60)
    req = grant_request(box)
    sign_request(req, box.key, box.key_id, created=int(box.clock()) - 3600)
    resp = await send(box, req)
    assert resp.status_code == 401
    assert "window" in error_of(resp)["description"]
    fresh = grant_request(box)
    sign_request(fresh, box.key, box.key_id, created=int(box.clock()))
    assert (await send(box, fresh)).status_code == 200
