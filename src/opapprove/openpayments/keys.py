"""Ed25519 keys: load a private key the ways wallets hand them out, export the public JWK."""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

from opapprove.openpayments.errors import KeyLoadError

PEM_HEADER = "-----BEGIN PRIVATE KEY-----"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _describe_key(key: object) -> str:
    # The classes' own names are implementation details ("RSAPrivateKey", "ECPrivateKey").
    if isinstance(key, rsa.RSAPrivateKey):
        return f"an RSA-{key.key_size} key"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC {key.curve.name} key"
    if isinstance(key, dsa.DSAPrivateKey):
        return "a DSA key"
    for kind, name in (
        (ed448.Ed448PrivateKey, "Ed448"),
        (x25519.X25519PrivateKey, "X25519"),
        (x448.X448PrivateKey, "X448"),
    ):
        if isinstance(key, kind):
            return f"an {name} key"
    return f"a {type(key).__name__.lstrip('_')}"


def _load_pem(pem: bytes, source: str) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyLoadError(
            f"{source} is not a readable PKCS#8 private key ({exc})",
            hint="give the Ed25519 key the wallet gave you, as PEM or base64-encoded PEM",
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyLoadError(
            f"{source} holds {_describe_key(key)}, not an Ed25519 key",
            hint=(
                "Open Payments signs with Ed25519 only; generate one with `opapprove seller keygen`"
            ),
        )
    return key


def load_private_key(value: str | bytes | os.PathLike[str]) -> ed25519.Ed25519PrivateKey:
    """Load an Ed25519 private key from a PEM file path, a PEM string or a base64-encoded PEM.

    The Interledger test wallet hands keys out base64-encoded, so all three forms are tried.
    """
    if isinstance(value, os.PathLike):
        return load_private_key_file(Path(value))
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        return _load_pem(stripped.encode(), "the key text")
    if "\n" not in stripped and len(stripped) < 4096 and Path(stripped).is_file():
        return load_private_key_file(Path(stripped))
    try:
        decoded = base64.b64decode(stripped, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise KeyLoadError(
            "the key is neither a PEM, a base64-encoded PEM, nor a file that exists",
            hint="pass the path of the private key file, or its PEM text",
        ) from exc
    if decoded.lstrip().startswith(b"-----BEGIN"):
        return _load_pem(decoded.strip(), "the base64-encoded key")
    raise KeyLoadError(
        "the key is neither a PEM, a base64-encoded PEM, nor a file that exists",
        hint="pass the path of the private key file, or its PEM text",
    )


def load_private_key_file(path: Path) -> ed25519.Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyLoadError(
            f"cannot read key file {path}: {exc.strerror or exc}",
            hint="check the path and that this user may read it",
        ) from exc
    text = data.decode("utf-8", "replace").strip()
    if text.startswith("-----BEGIN"):
        return _load_pem(text.encode(), f"key file {path}")
    try:
        decoded = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        decoded = b""
    if decoded.lstrip().startswith(b"-----BEGIN"):
        return _load_pem(decoded.strip(), f"key file {path} (base64)")
    raise KeyLoadError(
        f"key file {path} holds no PEM private key",
        hint="it must start with -----BEGIN PRIVATE KEY----- or be that text base64-encoded",
    )


def generate_private_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def private_key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path: Path, key: ed25519.Ed25519PrivateKey) -> None:
    """Write a PEM key file that only its owner can read, created 0600 (never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_pem(key))


def new_key_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Jwk:
    """A public Ed25519 JWK as Open Payments publishes it in ``jwks.json``."""

    kid: str
    x: str
    alg: str = "EdDSA"
    kty: str = "OKP"
    crv: str = "Ed25519"
    use: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"kid": self.kid, "alg": self.alg, "kty": self.kty, "crv": self.crv, "x": self.x}
        if self.use is not None:
            out["use"] = self.use
        return out

    def public_key(self) -> ed25519.Ed25519PublicKey:
        raw = b64url_decode(self.x)
        if len(raw) != 32:
            raise KeyLoadError(f"JWK {self.kid!r} has an x of {len(raw)} bytes, not 32")
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)

    @classmethod
    def from_dict(cls, data: Any) -> Jwk:
        if not isinstance(data, dict):
            raise KeyLoadError("a JWK must be a JSON object")
        missing = [f for f in ("kid", "x", "kty", "crv") if not isinstance(data.get(f), str)]
        if missing:
            raise KeyLoadError(f"the JWK lacks {', '.join(missing)}")
        if data["kty"] != "OKP" or data["crv"] != "Ed25519":
            raise KeyLoadError(
                f"the JWK is {data['kty']}/{data['crv']}, not OKP/Ed25519",
                hint="Open Payments keys are Ed25519",
            )
        alg = data.get("alg", "EdDSA")
        if alg != "EdDSA":
            raise KeyLoadError(f"the JWK's alg is {alg!r}, not EdDSA")
        use = data.get("use")
        jwk = cls(kid=data["kid"], x=data["x"], use=use if isinstance(use, str) else None)
        try:
            jwk.public_key()
        except (ValueError, binascii.Error) as exc:
            raise KeyLoadError(f"the JWK's x is not a valid Ed25519 public key ({exc})") from exc
        return jwk


def public_jwk(key: ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey, kid: str) -> Jwk:
    pub = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Jwk(kid=kid, x=b64url(raw))
