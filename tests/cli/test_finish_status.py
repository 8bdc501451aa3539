"""``opapprove finish URL`` and ``opapprove status`` in-process, against a sandbox on loopback."""

from __future__ import annotations

import json

import pytest

from opapprove.approvals.store import Store
from opapprove.cli import exitcodes
from tests.cli.conftest import Cli, one_error_line
from tests.cli.flow_kit import Kit


def test_finish_pays_and_status_shows_it(kit: Kit) -> None:
    started = kit.start("o1", "12.34")
    finish_url = kit.approve(started["approvalUrl"])
    result = kit.cli("finish", finish_url)
    assert result.exit_code == 0, result.output
    assert "Payment completed for offer o1: sent 12.34 USD" in result.stdout
    assert len(kit.payments()) == 1

    shown = kit.cli("status", started["pendingId"])
    assert shown.exit_code == 0
    for text in ("completed", "12.34 USD", "(completed)", "outgoing payment", "o1"):
        assert text in shown.stdout
    doc = json.loads(kit.cli("--json", "status", started["pendingId"]).stdout)
    assert doc["state"] == "completed" and doc["final"] is True
    assert doc["sentAmount"] == {"value": "1234", "assetCode": "USD", "assetScale": 2}
    assert doc["incomingPayment"]["completed"] is True
    assert doc["outgoingPayment"]["id"].startswith(f"{kit.url}/op/outgoing-payments/")
    assert doc["approvalUrl"] is None


def test_finish_from_stdin(kit: Kit) -> None:
    started = kit.start()
    finish_url = kit.approve(started["approvalUrl"])
    result = kit.cli("--json", "finish", "-", input=finish_url + "\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state"] == "completed"


def test_finish_twice_pays_once(kit: Kit) -> None:
    started = kit.start()
    finish_url = kit.approve(started["approvalUrl"])
    assert kit.cli("finish", finish_url).exit_code == 0
    again = kit.cli("--json", "finish", finish_url)
    assert again.exit_code == 0
    assert json.loads(again.stdout)["state"] == "completed"
    assert len(kit.payments()) == 1


def test_finish_rejected_is_exit_6(kit: Kit) -> None:
    started = kit.start()
    result = kit.cli("finish", kit.approve(started["approvalUrl"], reject=True))
    assert result.exit_code == exitcodes.NOT_APPROVED
    assert "rejected" in one_error_line(result)
    assert kit.payments() == []


def test_finish_forged_hash_is_exit_7_and_nothing_changes(kit: Kit) -> None:
    started = kit.start()
    real = kit.approve(started["approvalUrl"])
    forged = real.replace("hash=", "hash=AAAA")
    result = kit.cli("--json", "finish", forged)
    assert result.exit_code == exitcodes.VERIFICATION
    doc = json.loads(result.stdout)
    assert doc["error"]["kind"] == "verification"
    assert doc["error"]["details"] == {"pendingId": started["pendingId"]}
    with Store(kit.cli.store) as store:
        pending = store.get_pending(started["pendingId"])
        assert pending is not None and pending.state == "awaiting_approval"
    assert kit.payments() == []


@pytest.mark.parametrize(
    ("url", "exit_code", "text"),
    [
        ("http://127.0.0.1:3999/payments/finish?hash=x", exitcodes.USAGE, "pendingId"),
        ("http://127.0.0.1:3999/payments/finish?pendingId=NOPE&hash=x&interact_ref=y", 2, "NOPE"),
        ("   ", exitcodes.USAGE, "empty"),
        # Pasted unquoted, the shell ends the URL at its first & (and runs the rest).
        (
            "http://127.0.0.1:3999/payments/finish?pendingId=01M8FKGEQ3NFWS4H93J8P69XTE",
            exitcodes.USAGE,
            "put the whole URL in quotes",
        ),
    ],
)
def test_finish_bad_urls(cli: Cli, url: str, exit_code: int, text: str) -> None:
    result = cli("finish", url)
    assert result.exit_code == exit_code
    assert text in one_error_line(result)


def test_status_of_unknown_id_is_exit_2(cli: Cli) -> None:
    result = cli("status", "01NOPE")
    assert result.exit_code == exitcodes.USAGE
    assert "01NOPE" in one_error_line(result)
    assert not cli.store.exists()


def test_status_of_unknown_id_in_a_store_is_exit_2(kit: Kit) -> None:
    result = kit.cli("--json", "status", "01NOPE")
    assert result.exit_code == exitcodes.USAGE
    assert json.loads(result.stdout)["error"]["kind"] == "input"


def test_status_awaiting_shows_the_approval_url(kit: Kit) -> None:
    started = kit.start("o7", "2.00")
    result = kit.cli("status", started["pendingId"])
    assert result.exit_code == 0
    assert started["approvalUrl"] in result.stdout
    assert "approval expires" in result.stdout and "2.00 USD" in result.stdout


def test_watch_returns_at_once_for_a_final_grant(kit: Kit) -> None:
    started = kit.start()
    assert kit.cli("pending", "cancel", started["pendingId"]).exit_code == 0
    result = kit.cli("status", started["pendingId"], "--watch")
    assert result.exit_code == exitcodes.NOT_APPROVED
    assert "cancelled" in result.stdout


def test_watch_timeout_is_exit_8(kit: Kit) -> None:
    started = kit.start()
    result = kit.cli(
        "status", started["pendingId"], "--watch", "--interval", "0.05", "--timeout", "0.15"
    )
    assert result.exit_code == exitcodes.TIMEOUT
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "still awaiting_approval" in lines[0]


def test_status_timeout_needs_watch(cli: Cli) -> None:
    result = cli("status", "x", "--timeout", "3")
    assert result.exit_code == exitcodes.USAGE
    assert "--watch" in one_error_line(result)
