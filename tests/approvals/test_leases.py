"""Leases per attempt, with host and pid: a dead holder on this host is no obstacle.

The dead holders here are real processes, killed with SIGKILL while holding a lease on a
real store file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from opapprove.approvals import leases as leases_module
from opapprove.approvals.errors import FlowError
from opapprove.approvals.leases import Holder, new_holder, process_gone, this_host
from opapprove.approvals.records import State
from opapprove.approvals.store import Store
from tests.approvals.conftest import FlowKit, make_kit
from tests.approvals.crash_support import STEP_BY_NAME, die_at, fresh_flow, payments_by_pending

pytestmark = pytest.mark.anyio

HOLD = """
import sys, time
from opapprove.approvals.leases import new_holder
from opapprove.approvals.store import Store
store = Store(sys.argv[1])
assert store.acquire_lease(sys.argv[2], new_holder("doomed"), 3600)
print("held", flush=True)
time.sleep(60)
"""


def _hold_then_kill(store_path: Path | str, pending_id: str) -> int:
    """A real process takes the grant's lease for an hour; then it is killed -9."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store_path), pending_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    return proc.pid


def _new_pending(store: Store) -> str:
    return store.create_pending(
        seller_id="s", offer_id="o", buyer_wallet="https://ilp.test/b", amount="1"
    ).id


def test_a_lease_records_the_attempt_host_and_pid(store_location: Path | str) -> None:
    with Store(store_location) as store:
        pid = _new_pending(store)
        first, second = new_holder("listener"), new_holder("listener")
        assert first.id != second.id  # one per attempt, even in one process
        assert store.acquire_lease(pid, first, 60)
        held = store.get_pending(pid)
        assert held is not None
        assert (held.lease_holder, held.lease_host, held.lease_pid) == (
            first.id,
            this_host(),
            os.getpid(),
        )
        # Another attempt of the same, live process waits its turn.
        assert not store.acquire_lease(pid, second, 60)
        store.release_lease(pid, first)
        freed = store.get_pending(pid)
        assert freed is not None and (freed.lease_host, freed.lease_pid) == (None, None)


def test_a_killed_holders_lease_is_taken_at_once(store_location: Path | str) -> None:
    with Store(store_location) as store:
        pending_id = _new_pending(store)
        dead = _hold_then_kill(store_location, pending_id)
        assert process_gone(this_host(), dead)
        assert store.acquire_lease(pending_id, new_holder("replay"), 60)
        (taken,) = [e for e in store.events(pending_id) if e.kind == "lease_taken_over"]
        assert taken.data["pid"] == dead and taken.data["why"] == "holder process gone"


def test_a_lease_from_another_host_or_a_live_process_is_kept(store_location: Path | str) -> None:
    with Store(store_location) as store:
        pending_id = _new_pending(store)
        dead = _hold_then_kill(store_location, pending_id)
        # The same dead pid, but on another machine: we cannot know, so we wait it out.
        store.release_lease(pending_id, store.get_pending(pending_id).lease_holder or "")
        assert store.acquire_lease(pending_id, Holder("far", host="elsewhere", pid=dead), 60)
        assert not store.acquire_lease(pending_id, new_holder("replay"), 60)
        store.release_lease(pending_id, "far")
        # A live process on this host (our parent, say) keeps its lease too.
        assert store.acquire_lease(pending_id, Holder("parent", pid=os.getppid()), 60)
        assert not store.acquire_lease(pending_id, new_holder("replay"), 60)


async def test_replay_right_after_the_holder_is_killed_is_not_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_location: Path | str
) -> None:
    kit: FlowKit = make_kit(tmp_path, monkeypatch, store_at=store_location)
    pending_id, died = await die_at(kit, STEP_BY_NAME["create outgoing payment"], "kill")
    assert died
    _hold_then_kill(store_location, pending_id)
    store, flow = fresh_flow(kit)
    try:
        done = await flow.replay(pending_id)
    except FlowError as exc:  # pragma: no cover - the failure being tested for
        pytest.fail(f"replay refused: {exc.kind}: {exc}")
    finally:
        await flow.aclose()
        store.close()
        kit.store.close()
    assert done.state == State.COMPLETED
    assert payments_by_pending(kit.sandbox.state) == {pending_id: 1}


async def test_a_401_on_continue_is_no_crash_while_another_attempt_is_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit: FlowKit = make_kit(tmp_path, monkeypatch)
    try:
        pending = await kit.flow.start_quote(
            offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1"
        )
        query = dict(httpx.URL(kit.finish_url(pending.interact_redirect or "")).params)
        approved = kit.flow.accept_approval(
            pending.id, interact_ref=query["interact_ref"], hash=query["hash"]
        )
        assert approved.continue_uri and approved.continue_token
        # Attempt A has continued (the wallet issued the token) but not saved it yet.
        client = kit.flow.client_for(kit.store.get_seller("default-seller"))
        await client.continue_grant(
            approved.continue_uri, approved.continue_token, query["interact_ref"]
        )
        kit.store.add_event(pending.id, "continue_sent", {"attempt": "attempt-A"})
        leases_module._LIVE_ATTEMPTS.add("attempt-A")
        try:
            with pytest.raises(FlowError) as busy:
                await kit.flow.complete(pending.id)  # attempt B: 401 from the wallet
        finally:
            leases_module._LIVE_ATTEMPTS.discard("attempt-A")
        assert busy.value.kind == "busy"
        kinds = [e.kind for e in kit.store.events(pending.id)]
        assert "approval_restarted" not in kinds and "failed" not in kinds
        assert kit.store.get_pending(pending.id).state == State.APPROVED
        # Once A is gone without saving the token, it was lost: the buyer approves again.
        with pytest.raises(FlowError) as lost:
            await kit.flow.complete(pending.id)
        assert lost.value.kind == "waiting"
        assert "approval_restarted" in [e.kind for e in kit.store.events(pending.id)]
        assert kit.sandbox.state.outgoing_payments() == []
    finally:
        await kit.flow.aclose()
        kit.store.close()
