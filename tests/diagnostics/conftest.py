"""A sandbox served on loopback for the diagnostics, with the seller's key on disk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opapprove.openpayments.keys import generate_private_key, public_jwk, write_private_key
from opapprove.settings import Settings, load_settings
from tests.ports import free_port
from tests.sandbox_fixtures import Sandbox, ServedWallets, make_sandbox

# Published in the seller wallet's jwks.json, but the public key of some other private key.
OTHER_KID = "published-other-key"


@dataclass
class Live(ServedWallets):
    sandbox: Sandbox
    url: str
    key_path: Path

    def settings(self, tmp: Path, **overrides: Any) -> Settings:
        """Settings whose default seller is the sandbox's seller (key id and key file)."""
        values: dict[str, Any] = {
            "store": tmp / "data" / "opapprove.db",
            "seller_wallet_address_url": self.seller,
            "seller_key_id": self.sandbox.key_id,
            "seller_private_key_path": self.key_path,
            "timeout": 5.0,
        }
        values.update(overrides)
        return load_settings(**values)


def serve_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The body of a module-scoped ``live`` fixture (the CLI tests use it too)."""
    tmp = tmp_path_factory.mktemp("diagnostics")
    sandbox = make_sandbox(extra_keys=[public_jwk(generate_private_key(), OTHER_KID)])
    key_path = tmp / "seller.pem"
    write_private_key(key_path, sandbox.key)
    with sandbox.served() as server:
        yield Live(sandbox, server.url, key_path)
    sandbox.recorder.assert_clean()
    sandbox.state.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from serve_live(tmp_path_factory)


@pytest.fixture(autouse=True)
def isolated(isolated_env: Path) -> None:
    """Every diagnostics test runs isolated from the machine's config (tests/conftest)."""


def closed_port_url(path: str = "/alice") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"
