"""Keys registered while the sandbox runs: ``add_key`` and ``POST /_admin/keys``."""

from __future__ import annotations

from pathlib import Path

import pytest

from opapprove.openpayments.keys import generate_private_key, public_jwk
from opapprove.servers.sandbox import SandboxError, SandboxState
from tests.sandbox_fixtures import Sandbox

pytestmark = pytest.mark.anyio


async def test_a_key_made_after_start_signs_once_registered(sandbox: Sandbox) -> None:
    late = generate_private_key()
    jwk = public_jwk(late, "late-key").to_dict()
    access = [{"type": "incoming-payment", "actions": ["create", "read"]}]
    async with sandbox.client(late, "late-key") as api:
        assert (await api.grant(access)).status_code in (400, 401)
        added = await api.http.post(
            sandbox.url("/_admin/keys"), json={"wallet": "seller", "jwk": jwk}
        )
        assert added.status_code == 201
        assert added.json() == {
            "wallet": "seller",
            "keyIds": [sandbox.key_id, "late-key"],
            "added": True,
        }
        again = await api.http.post(
            sandbox.url("/_admin/keys"), json={"wallet": "seller", "jwk": jwk}
        )
        assert again.status_code == 200
        assert again.json()["keyIds"] == [sandbox.key_id, "late-key"]
        assert (await api.grant(access)).status_code == 200
        jwks = (await api.get(sandbox.seller + "/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [sandbox.key_id, "late-key"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"wallet": "seller", "jwk": {"kid": "k", "d": "secret"}}, 400, "private key"),
        ({"wallet": "seller", "jwk": {"kid": "k", "kty": "RSA"}}, 400, "not a usable public JWK"),
        (
            {"wallet": "seller", "jwk": {"kid": "k", "kty": "OKP", "crv": "Ed25519", "x": "AA"}},
            400,
            "not a usable public JWK",
        ),
        ({"wallet": "nobody", "jwk": None}, 400, '"wallet"'),
        ({"jwk": {}}, 400, '"wallet"'),
    ],
)
async def test_bad_registrations_are_refused(
    sandbox: Sandbox, body: dict[str, object], status: int, says: str
) -> None:
    async with sandbox.client() as api:
        resp = await api.http.post(sandbox.url("/_admin/keys"), json=body)
    assert resp.status_code == status
    assert says in resp.json()["error"]["description"]
    assert [k.kid for k in sandbox.state.keys_for("seller")] == [sandbox.key_id]


async def test_unknown_wallet_and_taken_kid(sandbox: Sandbox) -> None:
    jwk = public_jwk(generate_private_key(), sandbox.key_id).to_dict()
    async with sandbox.client() as api:
        unknown = await api.http.post(
            sandbox.url("/_admin/keys"), json={"wallet": "nobody", "jwk": jwk}
        )
        taken = await api.http.post(
            sandbox.url("/_admin/keys"), json={"wallet": "seller", "jwk": jwk}
        )
    assert unknown.status_code == 404
    assert "buyer, seller" in unknown.json()["error"]["description"]
    assert taken.status_code == 409
    assert "another id" in taken.json()["error"]["description"]


def test_registered_keys_survive_a_restart(persistent_sandbox: Sandbox, tmp_path: Path) -> None:
    box = persistent_sandbox
    jwk = public_jwk(generate_private_key(), "kept")
    assert box.state.add_key("buyer", jwk) == (["kept"], True)
    with pytest.raises(SandboxError, match="private key"):
        box.state.add_key("buyer", {**jwk.to_dict(), "d": "x"})
    box.state.close()
    restarted = SandboxState(box.state.config)
    try:
        assert [k.kid for k in restarted.keys_for("buyer")] == ["kept"]
        assert restarted.add_key("buyer", jwk.to_dict()) == (["kept"], False)
    finally:
        restarted.close()
