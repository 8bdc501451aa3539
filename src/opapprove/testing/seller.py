"""A seller for tests: a fresh Ed25519 key, its public JWK published at a sandbox wallet."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opapprove.openpayments.keys import Jwk, generate_private_key, public_jwk, write_private_key

if TYPE_CHECKING:
    from opapprove.settings import Settings
    from opapprove.testing.sandbox import OpSandbox


@dataclass(frozen=True)
class OpSeller:
    """What ``seller add`` / the seed's ``POST /sellers`` need, ready to use."""

    id: str
    wallet_address_url: str
    key_id: str
    private_key_path: Path
    key: Ed25519PrivateKey
    jwk: Jwk

    def settings(self, **overrides: Any) -> Settings:
        """opapprove ``Settings`` with this seller (e.g. ``store=tmp_path / "op.db"``)."""
        from opapprove.settings import load_settings

        return load_settings(**{**self._settings_fields(), **overrides})

    def env(self) -> dict[str, str]:
        """The same as ``OPAPPROVE_*`` variables, for ``opapprove`` run as a command."""
        from opapprove.settings import ENV_PREFIX

        return {
            (ENV_PREFIX + name).upper(): str(value)
            for name, value in self._settings_fields().items()
        }

    def _settings_fields(self) -> dict[str, Any]:
        """This seller as ``Settings`` fields; each is read from ``OPAPPROVE_<FIELD>`` too."""
        return {
            "seller_id": self.id,
            "seller_wallet_address_url": self.wallet_address_url,
            "seller_key_id": self.key_id,
            "seller_private_key_path": self.private_key_path,
        }

    def seed_body(self) -> dict[str, str]:
        """The seed's ``POST /sellers`` body (for ``opapprove listen --api``)."""
        return {
            "id": self.id,
            "walletAddressUrl": self.wallet_address_url,
            "keyId": self.key_id,
            "privateKeyPath": str(self.private_key_path),
        }


def make_seller(
    sandbox: OpSandbox,
    directory: Path,
    *,
    seller_id: str = "default-seller",
    wallet: str = "seller",
) -> OpSeller:
    """A new key written to ``directory`` (0600) and published at ``sandbox``'s ``wallet``."""
    key = generate_private_key()
    key_id = f"op-seller-{secrets.token_hex(6)}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key_id}.pem"
    write_private_key(path, key)
    jwk = public_jwk(key, key_id)
    sandbox.add_key(jwk, wallet=wallet)
    return OpSeller(
        id=seller_id,
        wallet_address_url=sandbox.wallet_url(wallet),
        key_id=key_id,
        private_key_path=path,
        key=key,
        jwk=jwk,
    )
