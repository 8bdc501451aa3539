"""One JSON contract for every command: camelCase keys, ISO-8601 UTC times, ``exitCode``, and
``pendingId`` as a field of its own on every error about a grant (README, "JSON output")."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from opapprove.approvals.records import State
from opapprove.cli.main import LAZY_COMMANDS
from tests.cli.flow_kit import Kit

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
# Keys that are data, not names: grant states counted per state (report), HTTP header
# names, JWK members.
DATA_KEYS = {str(s) for s in State}


def problems(doc: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(doc, list):
        for item in doc:
            found += problems(item, path + "[]")
    elif isinstance(doc, dict):
        for key, value in doc.items():
            where = f"{path}.{key}"
            if key not in DATA_KEYS and not CAMEL.match(key) and "-" not in key:
                found.append(f"{where}: not camelCase")
            if key.endswith("At") and value is not None:
                if not (isinstance(value, str) and ISO_UTC.match(value)):
                    found.append(f"{where}: {value!r} is not an ISO-8601 UTC time")
            found += problems(value, where)
    return found


def one_document(stdout: str) -> dict[str, Any]:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, stdout
    doc: dict[str, Any] = json.loads(lines[0])
    return doc


def check(kit: Kit, *args: str, pending_id: str | None = None) -> dict[str, Any]:
    result = kit.cli("--json", *args)
    doc = one_document(result.stdout)
    assert doc["exitCode"] == result.exit_code, (args, doc)
    assert isinstance(doc["ok"], bool)
    assert not problems(doc), (args, problems(doc))
    if pending_id is not None and result.exit_code != 0:
        assert doc["pendingId"] == pending_id, (args, doc)
    return doc


@pytest.fixture
def grants(kit: Kit) -> dict[str, str]:
    paid = kit.start("paid", "1.00")
    assert kit.cli("finish", kit.approve(paid["approvalUrl"])).exit_code == 0
    waiting = kit.start("waiting", "1.00")
    return {"paid": paid["pendingId"], "waiting": waiting["pendingId"]}


def test_every_command_speaks_the_contract(kit: Kit, grants: dict[str, str]) -> None:
    paid, waiting = grants["paid"], grants["waiting"]
    covered = set()

    def run(*args: str, pending_id: str | None = None) -> dict[str, Any]:
        covered.add(args[0])
        return check(kit, *args, pending_id=pending_id)

    run("version")
    run("seller", "list")
    run("seller", "show", "default-seller")
    keygen = run("seller", "keygen", "--out", str(kit.cli.tmp / "k.pem"), "--kid", "k2")
    assert keygen["publicJwk"]["kid"] == "k2"
    run("wallet", "check", kit.buyer)
    run("doctor")
    run("report")
    run("pending", "list")
    show = run("pending", "show", paid)
    assert show["pending"]["createdAt"] and show["events"][0]["at"]
    run("pending", "replay", waiting)
    run("status", paid)
    run("status", waiting, "--watch", "--interval", "0.1", "--timeout", "0.3", pending_id=waiting)
    run("pending", "cancel", paid, pending_id=paid)  # completed: nothing to cancel
    run("pending", "show", "01NOSUCHGRANT0000000000000", pending_id="01NOSUCHGRANT0000000000000")
    started = run("quote", "start", "--offer", "c", "--buyer", kit.buyer, "--amount", "2.00")
    approved = run("sandbox", "approve", started["approvalUrl"])
    run("finish", approved["finishUrl"])
    run("finish", approved["finishUrl"], pending_id=started["pendingId"])  # a second time
    run("pending", "cancel", waiting)
    run("pending", "prune")
    run("sandbox", "add-key", "--sandbox", kit.url)
    run(
        "webhook",
        "verify",
        "--header",
        "t=1,v1=00",
        "--secret",
        "s",
        "--body",
        "{}",
    )
    run("sig", "verify", "--raw", str(kit.cli.tmp / "missing.txt"))
    migrated = run("store", "migrate")
    assert migrated["fromVersion"] == migrated["toVersion"]
    copied = run("store", "copy", str(kit.cli.store), str(kit.cli.tmp / "copy.db"))
    assert copied["rows"]["pending"] >= 2
    run(
        "smoke",
        "--buyer",
        kit.buyer,
        "--amount",
        "0.01",
    )
    # listen streams: one JSON line per event, then the final document.
    covered.add("listen")
    listened = kit.cli("--json", "listen", "--timeout", "0.2", "--port", "0")
    lines = [json.loads(ln) for ln in listened.stdout.splitlines() if ln.strip()]
    assert lines[0]["event"] == "listening" and lines[-1]["exitCode"] == listened.exit_code == 8
    assert not problems(lines)
    missing = set(LAZY_COMMANDS) - covered - {"demo"}  # demo: tests/cli/test_demo_cmd.py
    assert not missing, f"commands not run with --json here: {sorted(missing)}"


def test_the_approval_url_comes_before_a_poll_wait(kit: Kit) -> None:
    result = kit.run("--json", *kit.quote_start("p", "1.00", "--poll", "--timeout", "0.5"))
    first = json.loads(result.stderr.splitlines()[0])
    assert first["event"] == "approvalNeeded" and first["approvalUrl"].startswith(kit.url)
    doc = one_document(result.stdout)
    assert result.code == doc["exitCode"] == 8
    assert doc["pendingId"] == first["pendingId"]
