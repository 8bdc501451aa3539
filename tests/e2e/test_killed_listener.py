"""A listener killed -9 while it holds a grant's lease: `pending replay` at once finishes it.

Real processes: `opapprove listen` takes the buyer's redirect, answers at once and starts
waiting out the wallet's ``continue.wait`` under the grant's lease; it is then killed with
SIGKILL. `opapprove pending replay` run straight after is not "busy" (the lease's holder
is a dead process on this host), continues the grant and pays, once.
"""

from __future__ import annotations

import signal
import time

import httpx

from opapprove.approvals.records import State
from opapprove.approvals.store import Store
from tests.cli.conftest import Cli
from tests.cli.flow_kit import flow_kit
from tests.e2e.conftest import Lines

WAIT_SECONDS = 2


def test_replay_right_after_the_listener_is_killed_pays_once(cli: Cli) -> None:
    # Real time at the sandbox too, so its continue.wait is the one the listener waits out.
    with flow_kit(cli, clock=time.time, wait_seconds=WAIT_SECONDS) as kit:
        started = kit.start()
        pending_id = started["pendingId"]
        listener = Lines(kit.popen("listen"))
        try:
            listener.until(lambda line: line.startswith("Listening on"))
            page = httpx.get(kit.approve(started["approvalUrl"]), timeout=30)
            assert page.status_code == 200 and "completing the payment" in page.text
            with Store(cli.store) as store:
                for _ in range(200):  # the background attempt takes the lease at once
                    held = store.get_pending(pending_id)
                    if held is not None and held.lease_holder:
                        break
                    time.sleep(0.01)
                assert held is not None and held.lease_pid == listener.proc.pid
                assert held.state == State.APPROVED
        finally:
            listener.proc.send_signal(signal.SIGKILL)
            listener.proc.wait(10)

        replay = kit.run("--json", "pending", "replay", pending_id)

        assert replay.code == 0, replay.stderr
        with Store(cli.store) as store:
            done = store.get_pending(pending_id)
            kinds = [e.kind for e in store.events(pending_id)]
        assert done is not None and done.state == State.COMPLETED
        assert "lease_taken_over" in kinds and "approval_restarted" not in kinds
        assert len(kit.payments()) == 1
