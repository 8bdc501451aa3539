"""Issue 4's proof: every path of the approval, with `python -m opapprove` as a subprocess.

The sandbox runs in this process on loopback; each command under test is its own
process sharing the store file, as a person's terminal (or a CI job) would run them.
Setup steps after the first tests (starting a quote) run in this process, for speed.
"""

from __future__ import annotations

import json
import signal
import time

import httpx

from opapprove.approvals.store import Store
from opapprove.cli import exitcodes
from tests.cli.flow_kit import Kit
from tests.e2e.conftest import Lines
from tests.servers.page_support import follow


def state_of(kit: Kit, pending_id: str) -> str:
    with Store(kit.cli.store) as store:
        pending = store.get_pending(pending_id)
        assert pending is not None
        return str(pending.state)


def test_approve_then_finish_url_then_status(kit: Kit) -> None:
    started = kit.start_sub("offer-1", "12.34")
    assert started["state"] == "awaiting_approval"
    finish_url = kit.approve(started["approvalUrl"])

    done = kit.run("--json", "finish", finish_url)
    assert done.code == 0, done.stderr
    assert done.json()["state"] == "completed"
    status = kit.run("--json", "status", started["pendingId"])
    assert status.code == 0
    assert status.json()["sentAmount"]["value"] == "1234"
    (payment,) = kit.payments()
    assert payment.debit == 1234 and payment.sent == 1234


def test_listen_once_receives_the_browser_redirect(kit: Kit) -> None:
    started = kit.start_sub("offer-2", "5.00")
    listener = Lines(kit.popen("--json", "listen", "--once", "--timeout", "30"))
    ready = json.loads(listener.until(lambda line: '"listening"' in line))
    assert ready["url"] == kit.listener and ready["matchesBaseUrl"] is True

    finish_url = kit.approve(started["approvalUrl"])
    assert finish_url.startswith(f"{kit.listener}/payments/finish?")
    with httpx.Client(timeout=30) as browser:  # the buyer's browser following the redirect
        pages = follow(browser.get, finish_url)
    assert all(page.status_code == 200 for page in pages)
    assert 'data-state="completed"' in pages[-1].text

    code, rest, _ = listener.finish()
    assert code == 0
    finished = json.loads(rest.splitlines()[0])
    assert finished["event"] == "finished" and finished["pendingId"] == started["pendingId"]
    assert state_of(kit, started["pendingId"]) == "completed"
    assert len(kit.payments()) == 1


def test_rejected_keeps_the_grant_open_until_cancelled(kit: Kit) -> None:
    started = kit.start()
    proc = kit.run("finish", kit.approve(started["approvalUrl"], reject=True))
    assert proc.code == exitcodes.NOT_APPROVED
    assert "declined" in proc.error_line() and "stays open" in proc.error_line()
    # A rejection redirect has no hash: it could be forged, so it ends nothing by itself.
    assert state_of(kit, started["pendingId"]) == "awaiting_approval"
    assert kit.run("pending", "cancel", started["pendingId"]).code == 0
    assert kit.payments() == []
    watched = kit.run("status", started["pendingId"], "--watch", "--interval", "0.1")
    assert watched.code == exitcodes.NOT_APPROVED
    assert "cancelled" in watched.stdout


def test_interaction_expired_at_the_wallet_is_noted(kit: Kit) -> None:
    started = kit.start()
    kit.box.clock.advance(601)  # past the sandbox's 600 s interaction lifetime
    finish_url = kit.approve(started["approvalUrl"])
    assert "result=invalid_interaction" in finish_url
    proc = kit.run("finish", finish_url)
    # Our own clock says the approval is still open; the unverified result changes nothing.
    assert proc.code == exitcodes.TIMEOUT
    assert "result=invalid_interaction" in proc.error_line()
    assert state_of(kit, started["pendingId"]) == "awaiting_approval"
    assert kit.payments() == []


def test_quote_expired(kit: Kit) -> None:
    started = kit.start()
    kit.box.clock.advance(301)  # past the quote's 300 s, inside the interaction's 600 s
    proc = kit.run("--json", "finish", kit.approve(started["approvalUrl"]))
    assert proc.code == exitcodes.REFUSED
    error = proc.json()["error"]
    assert "invalid quote" in error["message"] and "expired" in error["hint"]
    assert error["details"]["pendingId"] == started["pendingId"]
    assert state_of(kit, started["pendingId"]) == "failed"
    assert kit.payments() == []


def test_pasted_finish_url_from_stdin(kit: Kit) -> None:
    started = kit.start()
    proc = kit.run("finish", "-", stdin=kit.approve(started["approvalUrl"]) + "\n")
    assert proc.code == 0
    assert "Payment completed" in proc.stdout


def test_poll_waits_for_approval_and_pays(kit: Kit) -> None:
    lines = Lines(kit.popen(*kit.quote_start("o-poll", "3.00", "--poll", "--timeout", "30")))
    url = lines.until(lambda line: "/interact/" in line)
    assert kit.approve(url) == ""  # no finish redirect: the CLI polls instead
    code, rest, _ = lines.finish()
    assert code == 0, lines.seen
    assert "Payment completed: sent 3.00 USD" in rest
    assert len(kit.payments()) == 1


def test_forged_callback_is_refused_and_nothing_is_paid(kit: Kit) -> None:
    started = kit.start()
    real = kit.approve(started["approvalUrl"])
    forged = real.replace("hash=", "hash=Zm9yZ2Vk")

    pasted = kit.run("finish", forged)
    assert pasted.code == exitcodes.VERIFICATION
    assert "hash does not match" in pasted.error_line()

    listener = Lines(kit.popen("--json", "listen", "--once", "--timeout", "30"))
    listener.until(lambda line: '"listening"' in line)
    page = httpx.get(forged, timeout=30)
    assert page.status_code == 400
    code, rest, _ = listener.finish()
    assert code == exitcodes.VERIFICATION
    assert json.loads(rest.splitlines()[0])["event"] == "callback_refused"
    assert kit.box.state.outgoing_payments() == []
    assert state_of(kit, started["pendingId"]) == "awaiting_approval"

    # The genuine redirect still works afterwards.
    assert kit.run("finish", real).code == 0
    assert len(kit.payments()) == 1


def test_replay_resumes_a_lost_payment_answer_without_paying_twice(kit: Kit) -> None:
    started = kit.start()
    finish_url = kit.approve(started["approvalUrl"])
    # The wallet makes the payment, then the connection drops before the answer arrives.
    kit.box.state.set_fault("create-outgoing-payment", drop="after_commit", times=1)
    lost = kit.run("--json", "finish", finish_url)
    assert lost.code == exitcodes.TRANSPORT
    assert "pending replay" in lost.json()["error"]["hint"]
    assert state_of(kit, started["pendingId"]) == "paying"
    assert len(kit.payments()) == 1

    listed = kit.run("--json", "pending", "list", "--state", "paying")
    assert [p["pendingId"] for p in listed.json()["pending"]] == [started["pendingId"]]
    replayed = kit.run("pending", "replay", "--all")
    assert replayed.code == 0, replayed.stdout
    assert "completed" in replayed.stdout and "Replayed 1 grant" in replayed.stdout
    assert state_of(kit, started["pendingId"]) == "completed"
    assert len(kit.payments()) == 1  # found, not made again

    again = kit.run("--json", "pending", "replay", started["pendingId"])
    assert again.code == 0 and again.json()["outcomes"][0]["outcome"] == "unchanged"


def test_cancel_then_the_late_redirect_is_refused(kit: Kit) -> None:
    started = kit.start()
    cancelled = kit.run("pending", "cancel", started["pendingId"])
    assert cancelled.code == 0
    assert kit.cli("pending", "cancel", started["pendingId"]).exit_code == 0  # idempotent
    assert state_of(kit, started["pendingId"]) == "cancelled"
    late = kit.run(
        "finish",
        f"{kit.listener}/payments/finish?pendingId={started['pendingId']}&interact_ref=x&hash=y",
    )
    assert late.code in (exitcodes.NOT_APPROVED, exitcodes.VERIFICATION)
    assert kit.payments() == []


def test_status_watch_until_completed(kit: Kit) -> None:
    started = kit.start()
    watcher = Lines(
        kit.popen(
            "--json",
            "status",
            started["pendingId"],
            "--watch",
            "--interval",
            "0.1",
            "--timeout",
            "30",
        )
    )
    time.sleep(0.3)  # let it see awaiting_approval first (not asserted on)
    assert kit.run("finish", kit.approve(started["approvalUrl"])).code == 0
    code, rest, _ = watcher.finish()
    assert code == 0
    assert json.loads(rest)["state"] == "completed"


def test_listen_stops_cleanly_on_ctrl_c(kit: Kit) -> None:
    listener = Lines(kit.popen("listen", "--port", "0"))
    listener.until(lambda line: line.startswith("Listening on http://127.0.0.1:"))
    listener.proc.send_signal(signal.SIGINT)
    code, _, stderr = listener.finish()
    assert code == exitcodes.INTERRUPTED
    assert "listener stopped" in stderr
