"""README.md's command table and exit-code table say what `opapprove --help` says."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from opapprove.cli import exitcodes
from opapprove.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(title: str) -> str:
    text = README.read_text("utf-8")
    start = text.index(title)
    rest = text[start + len(title) :]
    end = re.search(r"^#{2,3} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def _rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows[1:]  # the header


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def _listed(help_text: str) -> list[str]:
    """The command names a --help lists under "Commands:"."""
    names = []
    in_commands = False
    for line in help_text.splitlines():
        if line.strip() == "Commands:":
            in_commands = True
            continue
        if in_commands:
            match = re.match(r"^  ([a-z][a-z-]*)\s", line + " ")
            if match is None:
                if names:
                    break  # the blank line before the epilog
                continue
            names.append(match[1])
    return names


def readme_commands() -> dict[str, set[str]]:
    """``{command: {subcommands named in the table}}`` from the Commands table."""
    out: dict[str, set[str]] = {}
    for row in _rows(_section("## Commands")):
        for span in re.findall(r"`([^`]+)`", row[0]):
            words = span.split()
            subs = out.setdefault(words[0], set())
            if len(words) > 1 and re.fullmatch(r"[a-z][a-z/-]*", words[1]):
                subs.update(words[1].split("/"))
    return out


def test_every_command_is_in_the_readme_and_no_other() -> None:
    listed = set(_listed(_help()))
    documented = readme_commands()
    assert set(documented) == listed - {"version"}, (
        "README's Commands table and `opapprove --help` differ: "
        f"only in --help {sorted(listed - set(documented) - {'version'})}, "
        f"only in the README {sorted(set(documented) - listed)}"
    )
    for command, subs in documented.items():
        group = _listed(_help(command))
        if group:
            assert subs == set(group), f"`{command}`: README {sorted(subs)}, --help {group}"


def test_exit_code_table_matches_the_code_and_help() -> None:
    documented = {int(code): text for code, text in _rows(_section("### Exit codes"))}
    meanings = {
        code: text.replace("--debug", "`--debug`") for code, text in exitcodes.MEANINGS.items()
    }
    assert documented == meanings
    epilog = _help()
    for code, text in exitcodes.MEANINGS.items():
        assert re.search(rf"^\s+{code}\s+{re.escape(text)}$", epilog, re.MULTILINE), (code, text)
