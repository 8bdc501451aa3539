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
from opapprove.servers.sandbox.config import DEFAULT_CREATED_WINDOW, SandboxConfig
from tests.sandbox_fixtures import Sandbox, make_sandbox, reason_of

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
    created: int = 1700000000,
    extra: str = "",
) -> None:
    """Sign over exactly ``components`` (a well-formed signature over too little).

    ``extra`` is appended to the parameters, e.g. ``;alg="ed25519"``.
    """
    if request.content:
        request.headers["Content-Digest"] = digest or content_digest(request.content)
        request.headers["Content-Length"] = str(len(request.content))
        request.headers["Content-Type"] = "application/json"
    inner = (
        "(" + " ".join(f'"{c}"' for c in components) + f');keyid="{kid}";created={created}{extra}'
    )
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
    assert error_of(resp)["description"] == "invalid signature"
    assert "provided signature is invalid" in reason_of(resp)


async def test_digest_mismatch_is_refused(sandbox: Sandbox) -> None:
    req = grant_request(sandbox)
    # A correct signature over a digest of other bytes: the digest check must catch it.
    sign_custom(req, sandbox.key, sandbox.key_id, FULL, digest=content_digest(b'{"other":1}'))
    resp = await send(sandbox, req)
    assert resp.status_code == 401
    assert error_of(resp)["description"] == "invalid signature headers"
    assert "Content-Digest does not match" in reason_of(resp)


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
    assert "sig1" in reason_of(resp)


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
    assert missing in reason_of(resp)


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
    assert "Authorization header is present but not covered" in reason_of(resp)
    assert "reason" not in error["details"]
    assert error["details"]["keyIdInSignature"] == sandbox.key_id


async def test_resource_server_names_the_unknown_key_and_lists_client_keys(
    sandbox: Sandbox,
) -> None:
    async with sandbox.client() as api:
        token = await api.token([{"type": "incoming-payment", "actions": ["create"]}])
    async with sandbox.client(key_id="not-registered") as api:
        resp = await api.post_incoming_payment(token["value"])
    assert resp.status_code == 401
    error = error_of(resp)
    assert error["description"] == (
        "Signature validation error: could not find key in list of client keys"
    )
    assert error["details"]["keyIdInSignature"] == "not-registered"
    assert error["details"]["client"] == {"walletAddress": sandbox.seller}
    assert [k["kid"] for k in error["details"]["clientKeys"]] == [sandbox.key_id]


async def test_resource_server_without_signature_is_a_request_validation_error(
    sandbox: Sandbox,
) -> None:
    async with sandbox.client() as api:
        token = await api.token([{"type": "incoming-payment", "actions": ["create", "read"]}])
        incoming = await api.incoming_payment(token=token["value"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.asgi)) as http:
        resp = await http.get(incoming["id"], headers={"Authorization": f"GNAP {token['value']}"})
    # Rafiki 9l: its OpenAPI validator wants the signature headers before anything else.
    assert resp.status_code == 400
    assert error_of(resp) == {
        "code": "400",
        "description": "Received error validating OpenAPI request: "
        "must have required property 'signature-input'",
    }


async def test_pretty_json_is_refused_because_rafiki_would_refuse_it(sandbox: Sandbox) -> None:
    pretty = json.dumps(json.loads(grant_body(sandbox)), indent=2).encode()
    req = grant_request(sandbox, pretty)
    sign_request(req, sandbox.key, sandbox.key_id)
    resp = await send(sandbox, req)
    assert resp.status_code == 401
    assert "compact JSON" in reason_of(resp)


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
    assert "window" in reason_of(resp)
    fresh = grant_request(box)
    sign_request(fresh, box.key, box.key_id, created=int(box.clock()))
    assert (await send(box, fresh)).status_code == 200


# ---------------------------------------------------------------- stricter than Rafiki
# Rafiki accepts each of these (rafiki-observed.md 9f-9i); the sandbox refuses them on
# purpose (README, "Where the sandbox is stricter").


async def send_with_params(offset: int, extra: str) -> httpx.Response:
    """A grant request signed ``offset`` s from the sandbox's now, ``extra`` params added
    (``{created}`` in it is the created value), to a sandbox with the default window."""
    sandbox = make_sandbox(created_window=DEFAULT_CREATED_WINDOW)
    created = int(sandbox.clock()) + offset
    req = grant_request(sandbox)
    sign_custom(
        req, sandbox.key, sandbox.key_id, FULL, created=created, extra=extra.format(created=created)
    )
    return await send(sandbox, req)


@pytest.mark.parametrize(
    ("extra", "offset", "problem"),
    [
        (';alg="rsa-pss-sha512"', 0, "alg"),  # 9h
        (';alg="hmac-sha256"', 0, "alg"),
        (";expires={created}", 0, "expired"),
        ("", -24 * 3600, "window"),  # 9f: created a day old
        ("", 24 * 3600, "window"),  # 9g: a day ahead
        ("", -301, "window"),
        ("", 301, "window"),
    ],
)
async def test_tampered_signature_parameters_are_refused(
    extra: str, offset: int, problem: str
) -> None:
    resp = await send_with_params(offset, extra)
    assert resp.status_code == 401, resp.text
    assert error_of(resp) == {"code": "invalid_client", "description": "invalid signature"}
    assert problem in reason_of(resp)


@pytest.mark.parametrize("extra", ["", ';alg="ed25519"', ";expires=9999999999"])
async def test_matching_alg_and_a_future_expires_pass(extra: str) -> None:
    assert (await send_with_params(-299, extra)).status_code == 200


async def test_the_created_window_can_be_widened_to_rafikis_leniency() -> None:
    box = make_sandbox(created_window=None)
    for offset in (-24 * 3600, 24 * 3600):
        req = grant_request(box)
        sign_custom(req, box.key, box.key_id, FULL, created=int(box.clock()) + offset)
        assert (await send(box, req)).status_code == 200


async def test_an_exact_replay_of_an_accepted_request_is_refused() -> None:
    box = make_sandbox(refuse_replays=True, created_window=DEFAULT_CREATED_WINDOW)
    req = grant_request(box)
    sign_request(req, box.key, box.key_id, created=int(box.clock()))
    assert (await send(box, req)).status_code == 200
    again = await send(
        box, httpx.Request("POST", req.url, headers=req.headers, content=req.content)
    )
    assert again.status_code == 401
    assert error_of(again)["description"] == "invalid signature"
    assert "replay" in reason_of(again)
    # The same request signed afresh a second later is a new request.
    box.clock.advance(1)
    fresh = grant_request(box)
    sign_request(fresh, box.key, box.key_id, created=int(box.clock()))
    assert (await send(box, fresh)).status_code == 200
    # Past the window the replay is still refused (now as too old).
    box.clock.advance(400)
    late = await send(box, httpx.Request("POST", req.url, headers=req.headers, content=req.content))
    assert late.status_code == 401
    assert "window" in reason_of(late)


async def test_a_repeated_read_is_not_a_replay() -> None:
    """Signatures are deterministic: polling a payment twice in a second is legitimate."""
    box = make_sandbox(refuse_replays=True)
    async with box.client() as api:
        incoming = await api.incoming_payment()
        token = await api.token([{"type": "incoming-payment", "actions": ["read"]}])
        for _ in range(3):
            assert (await api.get(incoming["id"], token=token["value"])).status_code == 200


def test_the_strict_verifier_is_the_default() -> None:
    config = SandboxConfig()
    assert config.created_window == DEFAULT_CREATED_WINDOW == 300
    assert config.refuse_replays
