"""``state_path``: the sandbox's state survives a restart, in a file only its owner reads."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from opapprove.servers.sandbox import SandboxConfig, SandboxState, create_app
from tests.sandbox_fixtures import Sandbox, SpecCheckedApp, finish_params

pytestmark = pytest.mark.anyio


async def test_state_survives_a_restart(persistent_sandbox: Sandbox, tmp_path: Path) -> None:
    box = persistent_sandbox
    async with box.client() as api:
        token = await api.token([{"type": "incoming-payment", "actions": ["create", "read"]}])
        incoming = await api.incoming_payment("700", token=token["value"])
        pending = await api.pending_outgoing_grant()
        ref = finish_params(box.state.approve(pending["interact"]["redirect"]))["interact_ref"]
        op_token = (await api.continue_grant(pending, ref)).json()["access_token"]["value"]
        paid = await api.post(
            box.url("/op/outgoing-payments"),
            {
                "walletAddress": box.buyer,
                "incomingPayment": incoming["id"],
                "debitAmount": {"value": "700", "assetCode": "USD", "assetScale": 2},
            },
            token=op_token,
        )
        assert paid.status_code == 201
    path = tmp_path / "sandbox.sqlite"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    box.state.close()

    # A new process: same file, same config.
    restarted = SandboxState(box.state.config)
    assert restarted.balance("buyer") == 100_000 - 700
    assert restarted.balance("seller") == 700
    assert [p.id for p in restarted.outgoing_payments()] == [
        p.id for p in box.state.outgoing_payments()
    ]
    box.app = create_app(restarted)
    box.asgi = SpecCheckedApp(box.app, box.recorder)
    async with box.client() as api:
        got = await api.get(incoming["id"], token=token["value"])
        assert got.status_code == 200
        assert got.json()["completed"] is True
        # The continuation was used up before the restart, and stays used.
        again = await api.continue_grant(pending, ref)
        assert again.status_code == 401
        # New records get new ids after the restart.
        newer = await api.incoming_payment("5", token=token["value"])
    assert newer["id"] != incoming["id"]
    assert len(restarted.incoming_payments()) == 2


def test_an_existing_state_file_is_narrowed_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    path.write_bytes(b"")
    path.chmod(0o644)
    state = SandboxState(SandboxConfig(state_path=path))
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert state.balance("buyer") == 100_000
    finally:
        state.close()
