"""``opapprove pending list/show/replay/cancel`` on a real store, against a sandbox on loopback."""

from __future__ import annotations

import json

import pytest

from opapprove.approvals.store import Store
from opapprove.cli import exitcodes
from tests.cli.conftest import Cli, one_error_line
from tests.cli.flow_kit import Kit


def test_list_on_no_store_creates_nothing(cli: Cli) -> None:
    result = cli("pending", "list")
    assert result.exit_code == 0
    # A wrong --store reads like an empty store: it says there is none at that path.
    assert f"No pending grants (no store at {cli.store} yet)." in result.stdout
    assert json.loads(cli("--json", "pending", "list").stdout) == {
        "ok": True,
        "pending": [],
        "count": 0,
        "exitCode": 0,
    }
    assert not cli.store.exists()


@pytest.mark.parametrize(
    "command",
    [["status"], ["pending", "show"], ["pending", "replay"], ["pending", "cancel"]],
)
def test_an_id_looked_up_in_no_store_says_there_is_no_store_there(
    cli: Cli, command: list[str]
) -> None:
    result = cli(*command, "01M8FKGEQ3NFWS4H93J8P69XTE")
    assert result.exit_code == exitcodes.USAGE
    line = one_error_line(result)
    assert f"unknown pendingId '01M8FKGEQ3NFWS4H93J8P69XTE': there is no store at {cli.store}" in (
        line
    )
    assert "--store" in line
    assert not cli.store.exists()


def test_list_table_and_filters(kit: Kit) -> None:
    first = kit.start("offer-a", "1.00")
    second = kit.start("offer-b", "2.00")
    assert kit.cli("finish", kit.approve(second["approvalUrl"])).exit_code == 0

    table = kit.cli("pending", "list")
    assert table.exit_code == 0
    for text in ("offer-a", "offer-b", "awaiting_approval", "completed", first["pendingId"]):
        assert text in table.stdout
    assert table.stdout.index("offer-b") < table.stdout.index("offer-a")  # newest first

    doc = json.loads(kit.cli("--json", "pending", "list", "--state", "completed").stdout)
    assert [p["pendingId"] for p in doc["pending"]] == [second["pendingId"]]
    item = doc["pending"][0]
    assert item["diagnosis"]["where"] == "completed" and item["sentAmount"]["value"] == "200"

    both = kit.cli("--json", "pending", "list", "--state", "completed,awaiting_approval")
    assert json.loads(both.stdout)["count"] == 2
    assert json.loads(kit.cli("--json", "pending", "list", "--limit", "1").stdout)["count"] == 1
    assert json.loads(kit.cli("--json", "pending", "list", "--since", "1h").stdout)["count"] == 2
    future = kit.cli("--json", "pending", "list", "--since", "2999-01-01T00:00:00Z")
    assert json.loads(future.stdout)["count"] == 0
    assert json.loads(kit.cli("--json", "pending", "list", "--stuck").stdout)["count"] == 0


def test_stuck_uses_stuck_after(kit: Kit) -> None:
    started = kit.start()
    kit.cli.write_config(
        kit.cli.config.read_text() + "stuck_after = 0.000001\n",
    )
    doc = json.loads(kit.cli("--json", "pending", "list", "--stuck").stdout)
    assert [p["pendingId"] for p in doc["pending"]] == [started["pendingId"]]


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--state", "nonsense"], "unknown state 'nonsense'"),
        (["--since", "yesterday-ish"], "--since"),
        (["--limit", "0"], "--limit"),
    ],
)
def test_list_bad_input(cli: Cli, args: list[str], text: str) -> None:
    result = cli("pending", "list", *args)
    assert result.exit_code == exitcodes.USAGE
    assert text in one_error_line(result)


def test_show_has_events_and_no_tokens(kit: Kit) -> None:
    started = kit.start()
    assert kit.cli("finish", kit.approve(started["approvalUrl"])).exit_code == 0
    with Store(kit.cli.store) as store:
        pending = store.get_pending(started["pendingId"])
        assert pending is not None and pending.access_token and pending.continue_token
        secrets = [pending.access_token, pending.continue_token]
    result = kit.cli("--json", "pending", "show", started["pendingId"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    kinds = [e["kind"] for e in doc["events"]]
    assert kinds[0] == "created" and "approved" in kinds and kinds[-1] == "completed"
    assert doc["pending"]["accessToken"] == "***" and doc["pending"]["continueToken"] == "***"
    assert doc["diagnosis"]["where"] == "completed"
    rich = kit.cli("pending", "show", started["pendingId"])
    assert "Events:" in rich.stdout and "grant_issued" in rich.stdout
    for secret in secrets:
        assert secret not in result.stdout and secret not in rich.stdout


def test_show_unknown(cli: Cli) -> None:
    result = cli("pending", "show", "01NOPE")
    assert result.exit_code == exitcodes.USAGE
    assert "01NOPE" in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ([], "nothing to replay"),
        (["X", "--all"], "not both"),
        (["--stuck"], "--all"),
    ],
)
def test_replay_usage(cli: Cli, args: list[str], text: str) -> None:
    result = cli("pending", "replay", *args)
    assert result.exit_code == exitcodes.USAGE
    assert text in one_error_line(result)


def test_replay_waiting_is_fine_and_unknown_is_not(kit: Kit) -> None:
    started = kit.start()
    waiting = kit.cli("--json", "pending", "replay", "--all")
    assert waiting.exit_code == 0, waiting.output
    doc = json.loads(waiting.stdout)
    assert doc["summary"] == {"waiting": 1} and doc["exitCode"] == 0
    assert doc["outcomes"][0]["pendingId"] == started["pendingId"]

    mixed = kit.cli("pending", "replay", started["pendingId"], "01NOPE")
    assert mixed.exit_code == exitcodes.USAGE
    assert "01NOPE - error: unknown pendingId" in mixed.stdout
    assert "Replayed 2 grants: 1 error, 1 waiting" in mixed.stdout


def test_replay_all_with_nothing_to_do(kit: Kit) -> None:
    result = kit.cli("pending", "replay", "--all", "--state", "paying")
    assert result.exit_code == 0
    assert "No grants to replay." in result.stdout


def test_cancel_is_idempotent_and_refuses_paid_grants(kit: Kit) -> None:
    started = kit.start("o1")
    first = kit.cli("pending", "cancel", started["pendingId"])
    assert first.exit_code == 0 and "cancelled" in first.stdout
    again = json.loads(kit.cli("--json", "pending", "cancel", started["pendingId"]).stdout)
    assert again["state"] == "cancelled" and again["alreadyCancelled"] is True

    paid = kit.start("o2")
    assert kit.cli("finish", kit.approve(paid["approvalUrl"])).exit_code == 0
    refused = kit.cli("pending", "cancel", paid["pendingId"])
    assert refused.exit_code == exitcodes.USAGE
    assert "nothing left to cancel" in one_error_line(refused)
    unknown = kit.cli("pending", "cancel", "01NOPE")
    assert unknown.exit_code == exitcodes.USAGE


def test_replay_shared_between_worker_processes_pays_each_once(kit: Kit) -> None:
    from urllib.parse import parse_qs, urlsplit

    from opapprove.approvals.records import State
    from opapprove.approvals.store import Store

    started = [kit.start(offer=f"w{i}", amount="1.00") for i in range(5)]
    with Store(kit.cli.store) as store:
        for doc in started:
            finish = kit.approve(doc["approvalUrl"])
            ref = parse_qs(urlsplit(finish).query)["interact_ref"][0]
            # Approved, but the process that caught the redirect died before continuing.
            store.transition(
                doc["pendingId"], State.APPROVED, expect=State.AWAITING_APPROVAL, interact_ref=ref
            )
    proc = kit.run("--json", "pending", "replay", "--all", "--workers", "2")
    assert proc.code == 0, proc.stderr
    doc = proc.json()
    assert doc["summary"] == {"completed": 5}
    assert sorted(o["pendingId"] for o in doc["outcomes"]) == sorted(
        d["pendingId"] for d in started
    )
    paid = [p for p in kit.payments() if (p.metadata or {}).get("offerId", "").startswith("w")]
    assert len(paid) == 5
    assert len({(p.metadata or {})["pendingId"] for p in paid}) == 5
