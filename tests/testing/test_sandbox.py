"""``running_sandbox`` and ``OpSandbox`` for code without pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from opapprove.openpayments.keys import generate_private_key, public_jwk
from opapprove.servers.sandbox import AccountConfig
from opapprove.testing import (
    OpSandbox,
    SandboxAdminError,
    SandboxStartError,
    make_seller,
    running_sandbox,
)


def test_helpers_drive_a_sandbox_in_another_thread(tmp_path: Path) -> None:
    with running_sandbox() as sandbox:
        assert sandbox.buyer_url == f"{sandbox.url}/buyer"
        assert sandbox.balance("buyer") == 100_000
        seller = make_seller(sandbox, tmp_path)
        assert seller.private_key_path.stat().st_mode & 0o777 == 0o600
        keys = httpx.get(f"{sandbox.seller_url}/jwks.json").json()["keys"]
        assert seller.key_id in [k["kid"] for k in keys]
        assert sandbox.fault("POST /op/quotes", status=503, times=1) == {
            "POST /op/quotes": {"status": 503, "times": 1}
        }
        sandbox.latency(0.25)
        sandbox.reset()
        assert httpx.get(f"{sandbox.url}/_admin/faults").json() == {"faults": {}}
        with pytest.raises(SandboxAdminError, match="not an interaction URL"):
            sandbox.approve(f"{sandbox.url}/nowhere")
        with pytest.raises(ValueError, match="public JWK only"):
            sandbox.add_key({**public_jwk(generate_private_key(), "k").to_dict(), "d": "x"})
        attached = OpSandbox.attach(sandbox.url)
        assert attached.accounts() == sandbox.accounts()
        attached.close()
        assert httpx.get(f"{sandbox.url}/nobody").status_code == 404
    assert "POST /_admin/faults -> 200" in sandbox.log.text()
    # A refusal's own explanation (X-Sandbox-Reason) is in the log too.
    assert "GET /nobody -> 404" in sandbox.log.text()
    assert "no wallet address /nobody" in sandbox.log.text()


def test_config_is_passed_to_the_sandbox() -> None:
    accounts = [AccountConfig(name="alice", balance=5), AccountConfig(name="seller")]
    with running_sandbox(accounts=accounts) as sandbox:
        assert [(a["name"], a["balance"]) for a in sandbox.accounts()] == [
            ("alice", 5),
            ("seller", 0),
        ]


def test_a_sandbox_that_cannot_start_says_why_with_its_log() -> None:
    with pytest.raises(SandboxStartError) as caught:
        with running_sandbox(accounts=[AccountConfig(name="Bad Name")]):
            pass
    assert "account name 'Bad Name' cannot be used" in caught.value.message
    assert "starting on 127.0.0.1:a free port" in caught.value.log
