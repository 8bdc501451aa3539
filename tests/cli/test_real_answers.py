"""The CLI against the answers a real wallet gives (rafiki-observed.md), on a served sandbox.

Each test has a fresh sandbox, since most move its clock or revoke things at the wallet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from opapprove.approvals.records import Pending, State
from opapprove.approvals.store import Store
from opapprove.cli import exitcodes
from opapprove.servers.sandbox import grants
from tests.cli.conftest import Cli
from tests.cli.flow_kit import Kit, flow_kit


@pytest.fixture
def box_kit(cli: Cli, request: pytest.FixtureRequest) -> Iterator[Kit]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    with flow_kit(cli, **overrides) as kit:
        yield kit


def pending_of(kit: Kit, pending_id: str) -> Pending:
    with Store(kit.cli.store) as store:
        pending = store.get_pending(pending_id)
        assert pending is not None
        return pending


def events_of(kit: Kit, pending_id: str) -> list[Any]:
    with Store(kit.cli.store) as store:
        return list(store.events(pending_id))


def incoming_of(kit: Kit, pending: Pending) -> Any:
    url = pending.incoming_payment_url or ""
    [incoming] = [ip for ip in kit.box.state.incoming_payments() if url.endswith(ip.id)]
    return incoming


def cancel_at_wallet(kit: Kit, pending: Pending) -> None:
    """What another process, or the wallet's own expiry, does to the grant."""
    grant = kit.box.state.grant_by_continue_id((pending.continue_uri or "").rsplit("/", 1)[-1])
    grants.revoke_grant(kit.box.state, grant)


def set_config(kit: Kit, extra: str) -> None:
    kit.cli.write_config(kit.cli.config.read_text() + extra)


def test_rejection_while_polling_is_rejected_exit_6(box_kit: Kit) -> None:
    kit = box_kit
    start = ("--json", "quote", "start", "--offer", "o", "--buyer", kit.buyer, "--amount", "1")
    waiting = kit.cli(*start, "--poll", "--timeout", "0.2")
    assert waiting.exit_code == exitcodes.TIMEOUT
    with Store(kit.cli.store) as store:
        (pending,) = store.list_pending()
    pending_id = pending.id
    kit.approve(pending.interact_redirect or "", reject=True)
    # Rafiki answers the poll 401 request_denied "grant cannot be continued" (2l).
    replay = kit.cli("--json", "pending", "replay", pending_id)
    assert replay.exit_code == exitcodes.NOT_APPROVED, replay.output
    assert "rejected" in replay.stdout
    done = pending_of(kit, pending_id)
    assert done.state == State.REJECTED
    assert incoming_of(kit, done).completed


def test_a_cancel_the_wallet_already_did_is_already_cancelled(box_kit: Kit) -> None:
    kit = box_kit
    started = kit.start()
    cancel_at_wallet(kit, pending_of(kit, started["pendingId"]))
    result = kit.cli("--json", "pending", "cancel", started["pendingId"])
    assert result.exit_code == 0, result.output
    assert pending_of(kit, started["pendingId"]).state == State.CANCELLED
    [cancelled] = [e for e in events_of(kit, started["pendingId"]) if e.kind == "cancelled"]
    assert cancelled.data["grant"] == "already cancelled"  # Rafiki 4b: 401 invalid grant


@pytest.mark.parametrize("box_kit", [{"settle_delay": 1000.0}], indirect=True)
def test_unsent_then_sent_and_an_inactive_token_is_rotated(box_kit: Kit) -> None:
    kit = box_kit
    set_config(kit, "timeout = 0.5\n")  # the payment reads back off for at most this long
    started = kit.start()
    finished = kit.cli("--json", "finish", kit.approve(started["approvalUrl"]))
    assert finished.exit_code == 0, finished.output
    pending = pending_of(kit, started["pendingId"])
    # Created unsent (6b): the grant waits in payment_created; nothing is called paid.
    assert pending.state == State.PAYMENT_CREATED
    assert pending.outgoing_payment and pending.outgoing_payment["sentAmount"]["value"] == "0"
    # Past the token's lifetime and the settle delay: 403 Inactive Token, rotate, then sent.
    kit.box.clock.advance(1001)
    status = kit.cli("--json", "status", started["pendingId"])
    assert status.exit_code == 0, status.output
    assert pending_of(kit, started["pendingId"]).state == State.COMPLETED
    assert [e.kind for e in events_of(kit, started["pendingId"])].count("token_rotated") == 1
    [payment] = kit.payments()
    assert payment.sent == payment.debit


@pytest.mark.parametrize("box_kit", [{"settle_delay": 1000.0}], indirect=True)
def test_a_revoked_token_asks_for_a_new_approval_and_an_unknown_payment_is_no_loop(
    box_kit: Kit,
) -> None:
    kit = box_kit
    set_config(kit, "timeout = 0.5\n")
    started = kit.start()
    assert kit.cli("finish", kit.approve(started["approvalUrl"])).exit_code == 0
    pending = pending_of(kit, started["pendingId"])
    good_url = pending.outgoing_payment_url or ""
    # An unknown payment id: Rafiki answers 401 "Unauthorized" (6j); one GET, no rotation.
    with Store(kit.cli.store) as store:
        store.update(pending.id, outgoing_payment_url=good_url[:-4] + "0000")
    seen = kit.box.recorder.seen[("get-outgoing-payment", 401)]
    unknown = kit.cli("--json", "status", pending.id)
    assert unknown.exit_code == exitcodes.REFUSED
    assert "knows no resource" in json.loads(unknown.stdout)["error"]["hint"]
    assert kit.box.recorder.seen[("get-outgoing-payment", 401)] == seen + 1
    with Store(kit.cli.store) as store:
        store.update(pending.id, outgoing_payment_url=good_url)
    # The token revoked at the wallet: rotating is refused, so the buyer must approve anew.
    [token] = [t for t in kit.box.state.tokens.values() if t.value == pending.access_token]
    grants.revoke_token(kit.box.state, token)
    trace = kit.cli.tmp / "trace.jsonl"
    revoked = kit.cli("--json", "--trace-file", str(trace), "status", pending.id)
    assert revoked.exit_code == exitcodes.REFUSED
    error = json.loads(revoked.stdout)["error"]
    assert "no longer accepts" in error["message"] and "approve a new one" in error["hint"]
    # The body is Rafiki's; the sandbox's own explanation is in the trace, as a header.
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    reasons = [r["response_headers"].get("x-sandbox-reason") for r in records]
    assert "the access token was revoked; request a new grant" in reasons
    assert "token_rotated" not in [e.kind for e in events_of(kit, pending.id)]


def test_invalid_interaction_from_the_wallet_pays_nothing(box_kit: Kit) -> None:
    kit = box_kit
    started = kit.start()
    cancel_at_wallet(kit, pending_of(kit, started["pendingId"]))
    # Reopened after a cancel, Rafiki sends the browser back with invalid_interaction (4d).
    back = kit.approve(started["approvalUrl"])
    assert "result=invalid_interaction" in back and "message=invalid+interaction" in back
    result = kit.cli("--json", "finish", back)
    assert result.exit_code != 0
    assert pending_of(kit, started["pendingId"]).state != State.COMPLETED
    assert kit.payments() == []


@pytest.mark.parametrize("side_exit", ["cancelled", "expired", "failed"])
def test_every_side_exit_closes_the_incoming_payment(box_kit: Kit, side_exit: str) -> None:
    """And rejected: test_rejection_while_polling_is_rejected_exit_6 (a redirect's
    unverified result=grant_rejected leaves the grant open, see the listener)."""
    kit = box_kit
    if side_exit == "expired":
        set_config(kit, "approval_timeout = 0.01\n")
    started = kit.start()
    pending_id = started["pendingId"]
    if side_exit == "cancelled":
        result = kit.cli("pending", "cancel", pending_id)
    elif side_exit == "expired":
        approved = kit.approve(started["approvalUrl"])  # the buyer approves, too late
        result = kit.cli("--json", "status", pending_id)
        assert json.loads(result.stdout)["state"] == "expired", result.output
        # Cancelled at the wallet first (4e: 204), so the late finish is refused, unpaid.
        [expired] = [e for e in events_of(kit, pending_id) if e.kind == "expired"]
        assert expired.data["wallet"] == "ok"
        late = kit.cli("--json", "finish", approved)
        assert late.exit_code == exitcodes.NOT_APPROVED
        assert json.loads(late.stdout)["error"]["message"] == "Payment approval expired"
        assert kit.payments() == []
    else:
        kit.box.state.fail_next_payments(1)
        result = kit.cli("finish", kit.approve(started["approvalUrl"]))
    pending = pending_of(kit, pending_id)
    assert pending.state == State(side_exit), result.output
    assert incoming_of(kit, pending).completed
    closed = [e for e in events_of(kit, pending_id) if e.kind == "incoming_payment_closed"]
    assert [e.data["outcome"] for e in closed] == ["completed"]
