from __future__ import annotations

import json
from pathlib import Path

import pytest

from opapprove.openpayments.errors import KeyLoadError
from opapprove.openpayments.keys import generate_private_key, public_jwk
from opapprove.servers.sandbox import (
    AccountConfig,
    SandboxConfig,
    SandboxConfigError,
    describe,
    load_public_keys,
)


def test_load_public_keys_from_jwk_and_jwks(tmp_path: Path) -> None:
    jwk = public_jwk(generate_private_key(), "k1").to_dict()
    one = tmp_path / "one.jwk"
    one.write_text(json.dumps(jwk))
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"keys": [jwk, {**jwk, "kid": "k2"}]}))
    assert [k.kid for k in load_public_keys(one)] == ["k1"]
    assert [k.kid for k in load_public_keys(many)] == ["k1", "k2"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [("not json", "not JSON"), ('{"kty": "OKP"}', "lacks"), ('{"keys": []}', "no keys")],
)
def test_load_public_keys_errors(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "k.jwk"
    path.write_text(content)
    with pytest.raises(KeyLoadError, match=needle):
        load_public_keys(path)


def test_private_jwk_is_refused(tmp_path: Path) -> None:
    jwk = public_jwk(generate_private_key(), "k1").to_dict() | {"d": "secret"}
    path = tmp_path / "k.jwk"
    path.write_text(json.dumps(jwk))
    with pytest.raises(KeyLoadError, match="private"):
        load_public_keys(path)
    with pytest.raises(KeyLoadError, match="cannot read"):
        load_public_keys(tmp_path / "missing.jwk")


@pytest.mark.parametrize(
    "config",
    [
        SandboxConfig(accounts=[AccountConfig("auth"), AccountConfig("seller")]),
        SandboxConfig(accounts=[AccountConfig("Buyer"), AccountConfig("seller")]),
        SandboxConfig(accounts=[AccountConfig("buyer")]),
        SandboxConfig(public_url="ftp://x"),
    ],
)
def test_bad_configs(config: SandboxConfig) -> None:
    with pytest.raises(SandboxConfigError):
        config.validate()


def test_describe_lists_wallets_and_key_ids() -> None:
    jwk = public_jwk(generate_private_key(), "seller-key")
    rows = describe(SandboxConfig(seller_keys=[jwk]), "http://127.0.0.1:9000/")
    assert [(r["name"], r["url"], r["keyIds"], r["client"]) for r in rows] == [
        ("buyer", "http://127.0.0.1:9000/buyer", [], False),
        ("seller", "http://127.0.0.1:9000/seller", ["seller-key"], True),
    ]
    with pytest.raises(SandboxConfigError):
        describe(SandboxConfig())


def test_reprs_hide_secrets() -> None:
    from opapprove.servers.sandbox.records import AccessToken, IncomingPayment

    token = AccessToken(id="m1", value="SECRET-TOKEN", grant_id="g", created_at=0, expires_in=1)
    ip = IncomingPayment(
        id="i",
        account="seller",
        incoming_amount=1,
        received=0,
        completed=False,
        expires_at=None,
        metadata=None,
        created_at=0,
        client=None,
        shared_secret="SECRET-SS",
    )
    assert "SECRET" not in repr(token) and "SECRET" not in repr(ip)
