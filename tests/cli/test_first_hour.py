"""A new user's first hour (issue 13): each trap driven as they hit it, and the new behaviour."""

from __future__ import annotations

import json
import socket
import stat
from urllib.parse import urlsplit

import pytest

from opapprove.approvals.store import Store
from opapprove.cli import exitcodes
from tests.cli.conftest import Cli, one_error_line
from tests.cli.flow_kit import Kit
from tests.ports import free_port


def _typos(kit: Kit) -> list[tuple[list[str], int, str]]:
    port = urlsplit(kit.url).port
    https = kit.buyer.replace("http://", "https://")
    wrong_port = kit.buyer.replace(f":{port}", f":{free_port()}")
    return [
        (["--amount", "12.345"], exitcodes.USAGE, "decimal places"),
        (["--amount", "0.001"], exitcodes.USAGE, "decimal places"),
        (["--amount", "0"], exitcodes.USAGE, "is zero"),
        (["--amount", "0.00"], exitcodes.USAGE, "is zero"),
        (["--amount", "-5"], exitcodes.USAGE, "not a positive decimal"),
        (["--buyer", https], exitcodes.TRANSPORT, "nothing was stored"),
        (["--buyer", wrong_port], exitcodes.TRANSPORT, "nothing was stored"),
        (["--buyer", f"{kit.url}/nobody"], exitcodes.USAGE, "nothing was stored"),
    ]


def test_typos_leave_no_rows_and_bulk_replay_has_nothing_to_do(kit: Kit) -> None:
    for change, code, says in _typos(kit):
        args = {"--offer": "o", "--buyer": kit.buyer, "--amount": "1.00"}
        args.update(dict(zip(change[::2], change[1::2], strict=True)))
        flat = [part for pair in args.items() for part in pair]
        result = kit.cli("quote", "start", *flat)
        assert result.exit_code == code, (change, result.output)
        line = one_error_line(result)
        assert says in line, (change, line)
        assert "pending replay" not in line  # replay cannot fix a typo
        assert "400 400" not in line
    with Store(kit.cli.store) as store:
        assert store.list_pending() == []
    replay = kit.cli("pending", "replay", "--all")
    assert replay.exit_code == 0, replay.output


def test_prune_and_cancel_all_clean_up_without_network(kit: Kit) -> None:
    kept = kit.start("kept", "1.00")
    with Store(kit.cli.store) as store:
        junk = [
            store.create_pending(
                seller_id="default-seller", offer_id=f"junk-{i}", buyer_wallet=kit.buyer, amount="1"
            ).id
            for i in range(3)
        ]
        # An old typo's seller is long gone; cancelling its row must not need it.
        store.create_pending(
            seller_id="gone", offer_id="junk-gone", buyer_wallet=kit.buyer, amount="1"
        )
    one = kit.cli("--json", "pending", "cancel", "--all", "--state", "started")
    assert one.exit_code == 0, one.output
    doc = json.loads(one.stdout)
    assert doc["cancelled"] == 4 and doc["failed"] == 0
    assert {g["pendingId"] for g in doc["grants"]} >= set(junk)
    again = kit.cli("pending", "prune")
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    with Store(kit.cli.store) as store:
        states = {p.offer_id: str(p.state) for p in store.list_pending()}
    assert states.pop("kept") == "awaiting_approval"
    assert set(states.values()) == {"cancelled"}
    assert kit.cli("pending", "replay", "--all").exit_code == 0
    assert kept["pendingId"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--all"], "--all needs --state"),
        (["--state", "started"], "--state goes with --all"),
        ([], "nothing to cancel"),
    ],
)
def test_cancel_usage(kit: Kit, args: list[str], says: str) -> None:
    result = kit.cli("pending", "cancel", *args)
    assert result.exit_code == exitcodes.USAGE
    assert says in one_error_line(result)


def test_sandbox_state_that_is_not_a_database_is_refused_untouched(cli: Cli) -> None:
    path = cli.tmp / "notes.txt"
    path.write_text("my notes\n", encoding="utf-8")
    path.chmod(0o644)
    result = cli("sandbox", "--state", str(path))
    assert result.exit_code == exitcodes.USAGE
    assert "not a sandbox state file" in one_error_line(result)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text(encoding="utf-8") == "my notes\n"


def test_sandbox_port_in_use_is_said_like_listen(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("sandbox", "--port", str(port))
        listen = cli("listen", "--port", str(port))
    assert result.exit_code == listen.exit_code == exitcodes.TRANSPORT
    assert "cannot listen on" in one_error_line(result)
    assert "ERROR:" not in result.stderr


def test_shell_completion_is_offered(cli: Cli) -> None:
    assert "--install-completion" in cli("--help").stdout
    shown = cli("--show-completion", "bash")
    assert shown.exit_code == 0, shown.output
    assert "complete" in shown.stdout and "opapprove" in shown.stdout


def test_seller_add_compares_the_key_with_the_published_jwks(kit: Kit) -> None:
    from opapprove.openpayments.keys import generate_private_key, write_private_key

    def add(name: str, kid: str, key: str, *extra: str) -> tuple[str, str]:
        result = kit.cli(
            "--json",
            "seller",
            "add",
            name,
            "--wallet",
            kit.seller,
            "--key-id",
            kid,
            "--key",
            key,
            *extra,
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["keyCheck"], result.stderr

    assert add("same", kit.box.key_id, str(kit.key_path)) == ("published", "")
    check, warned = add("typo", "no-such-kid", str(kit.key_path))
    assert check == "missing" and "is not in" in warned and kit.box.key_id in warned
    other = kit.cli.tmp / "other.pem"
    write_private_key(other, generate_private_key())
    check, warned = add("wrong", kit.box.key_id, str(other))
    assert check == "mismatch" and "another public key" in warned
    assert add("later", "no-such-kid", str(other), "--no-check") == ("skipped", "")


def test_a_completed_grant_keeps_no_old_error(kit: Kit) -> None:
    started = kit.start("was-troubled", "1.00")
    with Store(kit.cli.store) as store:
        store.record_error(started["pendingId"], "GET ... failed: timed out")
    assert kit.cli("finish", kit.approve(started["approvalUrl"])).exit_code == 0
    with Store(kit.cli.store) as store:
        done = store.get_pending(started["pendingId"])
        assert done is not None and str(done.state) == "completed"
        assert done.last_error is None
        assert "error" in [e.kind for e in store.events(done.id)]  # the trail keeps it


def test_doctor_fails_a_read_only_store(kit: Kit) -> None:
    kit.start("any", "1.00")
    kit.cli.store.chmod(0o400)
    try:
        result = kit.cli("doctor")
    finally:
        kit.cli.store.chmod(0o600)
    assert result.exit_code == exitcodes.CONFIG, result.output
    assert any(
        ln.startswith("FAIL  store") and "read-only" in ln for ln in result.stdout.splitlines()
    )


def test_a_file_the_os_refuses_is_not_unexpected() -> None:
    import errno

    from opapprove.cli.errors import classify

    for exc in (
        PermissionError(errno.EACCES, "Permission denied", "/ro/k.pem"),
        OSError(errno.EROFS, "Read-only file system", "/ro/k.pem"),
        OSError(errno.ENOSPC, "No space left on device", "/full/opapprove.db"),
    ):
        report = classify(exc)
        assert report.exit_code == exitcodes.USAGE and report.kind == "file", exc
        assert exc.filename in report.message and "unexpected" not in report.line()
