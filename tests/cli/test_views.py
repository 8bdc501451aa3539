"""The small pieces every flow command shares: ages, --since, --state, exit codes by state."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError
from opapprove.cli.views import age, parse_since, parse_states
from tests.cli.conftest import Cli

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m"), (95, "1m 35s"), (7260, "2h 1m"), (90000, "1d 1h")],
)
def test_age(seconds: float, text: str) -> None:
    assert age(seconds) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("30m", NOW - 1800),
        ("2h", NOW - 7200),
        ("1d", NOW - 86400),
        ("1h30m", NOW - 5400),
        ("2027-01-15T08:00:00Z", NOW),
        ("2027-01-15T08:00:00", NOW),  # UTC unless it says otherwise
        ("2027-01-15T10:00:00+02:00", NOW),
    ],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "soon", "2h ago", "12"])
def test_parse_since_refuses(text: str) -> None:
    with pytest.raises(CliError) as info:
        parse_since(text, NOW)
    assert info.value.exit_code == exitcodes.USAGE


def test_parse_states() -> None:
    assert parse_states(None) is None
    states = parse_states(["completed", "Expired,cancelled"])
    assert states is not None and [str(s) for s in states] == ["completed", "expired", "cancelled"]
    with pytest.raises(CliError) as info:
        parse_states(["done"])
    assert "awaiting_approval" in (info.value.hint or "")


def test_exit_code_by_final_state() -> None:
    assert exitcodes.for_state("completed") == exitcodes.OK
    for state in ("rejected", "expired", "cancelled"):
        assert exitcodes.for_state(state) == exitcodes.NOT_APPROVED
    assert exitcodes.for_state("failed") == exitcodes.REFUSED
    assert exitcodes.for_state("awaiting_approval") is None


def test_help_lists_the_flow_commands(cli: Cli) -> None:
    result = cli("--help")
    for command in ("quote", "listen", "finish", "status", "pending", "demo", "webhook"):
        assert command in result.stdout


def test_help_imports_nothing_heavy() -> None:
    # `opapprove --help` must stay fast: the command modules import their work lazily.
    code = (
        "import sys\n"
        "from opapprove.cli.main import app\n"
        "heavy = ['httpx', 'rich', 'uvicorn', 'segno', 'starlette', 'pydantic', 'cryptography',"
        " 'opapprove.approvals.flow', 'opapprove.demo', 'sqlite3']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
