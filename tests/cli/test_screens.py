"""What people see on an 80-column terminal (a real pty): no URL is ever broken across lines.

Support staff paste these screens into tickets; a URL folded mid-token cannot be clicked or
searched. Piped (not a terminal), lists are one line per row.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from typing import Any

import pytest

from tests.cli.conftest import Cli
from tests.cli.flow_kit import Kit, setup_kit

WIDTH = 80
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
URL = re.compile(r"https?://[^\s\"'<>]+")


def on_pty(kit: Kit, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run the CLI with stdout and stderr on a pty of WIDTH columns; its screen as text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, WIDTH, 0, 0))
    full_env = kit.cli.subprocess_env()
    for name in ("COLUMNS", "LINES", "NO_COLOR"):
        full_env.pop(name, None)
    full_env.update(env or {})
    proc = subprocess.Popen(
        kit.cli.argv(*args), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=full_env
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError as exc:  # EIO: the child closed the pty
                    if exc.errno != errno.EIO:
                        raise
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def visible(screen: str) -> str:
    return ANSI.sub("", screen)


@pytest.fixture(scope="module")
def kit_module(tmp_path_factory: pytest.TempPathFactory, flow_sandbox: tuple[Any, str]) -> Kit:
    """One store for the module: the screens only read it."""
    tmp = tmp_path_factory.mktemp("screens")
    env = {
        "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
        "XDG_DATA_HOME": str(tmp / "xdg-data"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    config = tmp / "config.toml"
    config.write_text("", encoding="utf-8")
    return setup_kit(Cli(tmp, tmp / "data" / "opapprove.db", config, env), *flow_sandbox)


@pytest.fixture(scope="module")
def grants(kit_module: Kit) -> dict[str, str]:
    kit = kit_module
    paid = kit.start("o-paid", "12.34")
    assert kit.cli("finish", kit.approve(paid["approvalUrl"])).exit_code == 0
    waiting = kit.start("an-offer-id-that-is-rather-long-indeed", "1.00")
    return {"paid": paid["pendingId"], "waiting": waiting["pendingId"]}


def assert_urls_whole(screen: str, urls: list[str]) -> None:
    text = visible(screen)
    for url in urls:
        assert url in text, f"{url} is broken across lines on:\n{text}"
    for line in text.splitlines():
        for found in URL.findall(line):
            # A URL cut at the end of a line would show up as a prefix of a known one.
            assert found in urls or not any(u.startswith(found) and u != found for u in urls)


def test_pending_list_at_80_columns(kit_module: Kit, grants: dict[str, str]) -> None:
    screen = visible(on_pty(kit_module, "pending", "list"))
    assert_urls_whole(screen, [kit_module.buyer])
    assert grants["paid"] in screen and grants["waiting"] in screen
    # The short columns fit the terminal; only a URL or an error line may be longer.
    for line in screen.splitlines():
        if not line.lstrip().startswith(("buyer", "error")):
            assert len(line) <= WIDTH, line


def test_pending_show_and_status_watch_at_80_columns(
    kit_module: Kit, grants: dict[str, str]
) -> None:
    from opapprove.approvals.store import Store

    with Store(kit_module.cli.store) as store:
        paid = store.get_pending(grants["paid"])
        assert paid is not None
    urls = [
        u for u in (paid.buyer_wallet, paid.incoming_payment_url, paid.outgoing_payment_url) if u
    ]
    show = on_pty(kit_module, "pending", "show", grants["paid"])
    assert_urls_whole(show, urls)
    events = visible(show).split("Events:", 1)[1].splitlines()[1:]
    assert all(re.match(r"^  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  \S", ln) for ln in events if ln)
    watch = on_pty(kit_module, "status", grants["paid"], "--watch")
    assert_urls_whole(watch, urls)
    assert "completed" in visible(watch)


def test_doctor_at_80_columns_in_colour_unless_no_color(kit_module: Kit) -> None:
    coloured = on_pty(kit_module, "doctor")
    assert_urls_whole(coloured, [kit_module.seller])
    assert "\x1b[" in coloured and "PASS" in visible(coloured)
    plain = on_pty(kit_module, "doctor", env={"NO_COLOR": "1"})
    assert "\x1b[" not in plain.replace("\x1b[?25l", "").replace("\x1b[?25h", "")
    assert visible(plain).count("PASS") == visible(coloured).count("PASS")


def test_piped_list_is_one_line_per_grant(kit_module: Kit, grants: dict[str, str]) -> None:
    proc = kit_module.run("pending", "list")
    lines = proc.stdout.splitlines()
    assert lines[0].split("\t") == [
        "id",
        "offer",
        "buyer",
        "amount",
        "state",
        "age",
        "lastError",
    ]
    rows = {ln.split("\t")[0]: ln.split("\t") for ln in lines[1:]}
    assert rows[grants["paid"]][2] == kit_module.buyer
    assert rows[grants["waiting"]][4] == "awaiting_approval"
    table = kit_module.run("pending", "list", "--format", "table")
    assert "    buyer  " in table.stdout
    as_json = kit_module.run("pending", "list", "--format", "json")
    assert as_json.json()["count"] == len(rows)


def test_a_wait_shows_a_spinner_on_a_terminal_only(kit_module: Kit, grants: dict[str, str]) -> None:
    args = ("status", grants["waiting"], "--watch", "--interval", "0.2", "--timeout", "1.5")
    screen = visible(on_pty(kit_module, *args))
    assert re.search(r"waiting: awaiting_approval\s+0:00:0\d", screen), screen
    piped = kit_module.run(*args)
    assert piped.code == 8
    assert "waiting:" not in piped.stderr and "0:00:0" not in piped.stderr


def test_ctrl_c_says_the_grant_and_how_to_resume(kit_module: Kit, grants: dict[str, str]) -> None:
    import signal

    pending_id = grants["waiting"]
    proc = kit_module.popen("--json", "status", pending_id, "--watch", "--interval", "0.2")
    try:
        # --json: stdout stays empty until the end, so wait for the process to be polling.
        time.sleep(3)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert f"resume with `opapprove status {pending_id} --watch`" in err, (out, err)
    assert "Traceback" not in err
    doc = json.loads(out)
    assert doc["exitCode"] == 130 and doc["pendingId"] == pending_id
