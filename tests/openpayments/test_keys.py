"""Ed25519 keys in every form wallets hand them out, and the JWK Open Payments publishes."""

from __future__ import annotations

import base64
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519

from opapprove.openpayments.errors import KeyLoadError
from opapprove.openpayments.keys import (
    Jwk,
    b64url,
    b64url_decode,
    generate_private_key,
    load_private_key,
    load_private_key_file,
    new_key_id,
    private_key_pem,
    public_jwk,
    write_private_key,
)
from tests.spec_check import check_response

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(SEED)
PEM = private_key_pem(KEY)
X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


def _raw(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _pem_of(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# ------------------------------------------------------------------------- loading


def test_private_key_pem_is_pkcs8() -> None:
    assert PEM.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert PEM.rstrip().endswith(b"-----END PRIVATE KEY-----")


def test_load_from_a_pem_file_path(tmp_path: Path) -> None:
    path = tmp_path / "private.key"
    path.write_bytes(PEM)
    assert _raw(load_private_key(path)) == SEED
    assert _raw(load_private_key_file(path)) == SEED


def test_load_from_a_path_string(tmp_path: Path) -> None:
    path = tmp_path / "private.key"
    path.write_bytes(PEM)
    assert _raw(load_private_key(str(path))) == SEED


def test_load_from_a_pem_string_and_bytes() -> None:
    assert _raw(load_private_key(PEM.decode())) == SEED
    assert _raw(load_private_key(PEM)) == SEED
    assert _raw(load_private_key("\n  " + PEM.decode() + "  \n")) == SEED


def test_load_from_a_base64_encoded_pem_as_the_test_wallet_gives_it() -> None:
    encoded = base64.b64encode(PEM).decode()
    assert "\n" not in encoded
    assert _raw(load_private_key(encoded)) == SEED


def test_load_from_a_file_holding_a_base64_encoded_pem(tmp_path: Path) -> None:
    path = tmp_path / "private.b64"
    path.write_bytes(base64.b64encode(PEM) + b"\n")
    assert _raw(load_private_key(path)) == SEED


def test_rsa_keys_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    rsa_pem = _pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(KeyLoadError) as caught:
        load_private_key(rsa_pem.decode())
    message = str(caught.value)
    assert "holds an RSA-2048 key, not an Ed25519 key" in message
    assert "\n" not in message
    assert caught.value.hint and "Ed25519" in caught.value.hint


@pytest.mark.parametrize(
    ("make", "described"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "an EC secp256r1 key"),
        (ed448.Ed448PrivateKey.generate, "an Ed448 key"),
        (x25519.X25519PrivateKey.generate, "an X25519 key"),
    ],
    ids=["ec", "ed448", "x25519"],
)
def test_other_key_types_are_refused_with_a_clear_error(
    tmp_path: Path, make: Callable[[], object], described: str
) -> None:
    path = tmp_path / "other.pem"
    path.write_bytes(_pem_of(make()))
    with pytest.raises(KeyLoadError) as caught:
        load_private_key(path)
    assert f"holds {described}, not an Ed25519 key" in str(caught.value)


@pytest.mark.parametrize(
    "garbage",
    [
        "not a key at all",
        "",
        "/no/such/dir/private.key",
        base64.b64encode(b"just some bytes").decode(),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"\x00\x01\x02\xff",
    ],
)
def test_garbage_is_refused(garbage: str | bytes) -> None:
    with pytest.raises(KeyLoadError) as caught:
        load_private_key(garbage)
    assert "\n" not in str(caught.value)


def test_a_missing_key_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError) as caught:
        load_private_key(tmp_path / "nope.pem")
    assert "nope.pem" in str(caught.value)
    assert "cannot read key file" in str(caught.value)


def test_a_key_file_of_junk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("hello\n")
    with pytest.raises(KeyLoadError) as caught:
        load_private_key(path)
    assert "holds no PEM private key" in str(caught.value)


def test_a_pem_error_never_echoes_the_key() -> None:
    broken = PEM.decode().replace("MC4CAQAw", "MC4CAQAx")
    with pytest.raises(KeyLoadError) as caught:
        load_private_key(broken)
    body = "".join(PEM.decode().splitlines()[1:-1])
    assert body not in str(caught.value)


# ------------------------------------------------------------------------- writing


def test_write_private_key_creates_an_owner_only_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "seller.pem"
    key = generate_private_key()
    write_private_key(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _raw(load_private_key(path)) == _raw(key)


def test_write_private_key_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_key(tmp_path / "k.pem", generate_private_key())
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "k.pem").st_mode) == 0o600


def test_write_private_key_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "seller.pem"
    write_private_key(path, KEY)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_private_key(path, generate_private_key())
    assert path.read_bytes() == before


# ------------------------------------------------------------------------- JWK


def test_public_jwk_fields() -> None:
    jwk = public_jwk(KEY, "test-key-1")
    assert jwk.to_dict() == {
        "kid": "test-key-1",
        "alg": "EdDSA",
        "kty": "OKP",
        "crv": "Ed25519",
        "x": X,
    }
    assert public_jwk(KEY.public_key(), "test-key-1") == jwk


def test_public_jwk_x_is_unpadded_base64url_of_32_bytes() -> None:
    for _ in range(20):
        x = public_jwk(generate_private_key(), "k").x
        assert re.fullmatch(r"[a-zA-Z0-9_-]{43}", x)
        assert len(b64url_decode(x)) == 32


def test_public_jwk_validates_against_the_jwks_spec() -> None:
    jwk = public_jwk(KEY, new_key_id())
    check_response("get-wallet-address-keys", 200, {"keys": [jwk.to_dict()]})
    with_use = Jwk(kid="k", x=X, use="sig")
    assert with_use.to_dict()["use"] == "sig"
    check_response("get-wallet-address-keys", 200, {"keys": [with_use.to_dict()]})


def test_jwk_public_key_verifies_what_the_private_key_signs() -> None:
    jwk = Jwk.from_dict(public_jwk(KEY, "k").to_dict())
    jwk.public_key().verify(KEY.sign(b"msg"), b"msg")


def test_jwk_round_trips_through_a_dict() -> None:
    jwk = Jwk(kid="k1", x=X, use="sig")
    assert Jwk.from_dict(jwk.to_dict()) == jwk
    assert Jwk.from_dict({"kid": "k1", "x": X, "kty": "OKP", "crv": "Ed25519"}).alg == "EdDSA"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("not an object", "must be a JSON object"),
        ([], "must be a JSON object"),
        ({"x": X, "kty": "OKP", "crv": "Ed25519"}, "lacks kid"),
        ({"kid": "k", "kty": "OKP", "crv": "Ed25519"}, "lacks x"),
        ({"kid": "k", "x": X}, "lacks kty, crv"),
        ({"kid": 7, "x": X, "kty": "OKP", "crv": "Ed25519"}, "lacks kid"),
        ({"kid": "k", "x": X, "kty": "RSA", "crv": "Ed25519"}, "not OKP/Ed25519"),
        ({"kid": "k", "x": X, "kty": "OKP", "crv": "X25519"}, "not OKP/Ed25519"),
        ({"kid": "k", "x": X, "kty": "OKP", "crv": "Ed25519", "alg": "ES256"}, "not EdDSA"),
        ({"kid": "k", "x": X[:-4], "kty": "OKP", "crv": "Ed25519"}, "not 32"),
        ({"kid": "k", "x": X + "AAAA", "kty": "OKP", "crv": "Ed25519"}, "not 32"),
        ({"kid": "k", "x": "", "kty": "OKP", "crv": "Ed25519"}, "not 32"),
    ],
)
def test_jwk_from_dict_refuses_what_is_not_an_ed25519_jwk(data: object, says: str) -> None:
    with pytest.raises(KeyLoadError) as caught:
        Jwk.from_dict(data)
    assert says in str(caught.value)


def test_b64url_round_trip_without_padding() -> None:
    for n in range(0, 40):
        data = os.urandom(n)
        text = b64url(data)
        assert "=" not in text and "+" not in text and "/" not in text
        assert b64url_decode(text) == data


def test_new_key_ids_are_unique() -> None:
    assert len({new_key_id() for _ in range(100)}) == 100
