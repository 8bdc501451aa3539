"""The CLI framework: help, version, usage errors, --json, global options after the command."""

from __future__ import annotations

import json
import subprocess

import pytest
import typer

from opapprove import __version__
from opapprove.cli import exitcodes, main
from opapprove.cli.runtime import hoist_global_options
from tests.cli.conftest import Cli, one_error_line


def test_help_lists_commands_and_exit_codes(cli: Cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("seller", "wallet", "sandbox", "version"):
        assert command in result.stdout
    assert "Exit codes:" in result.stdout
    for code, meaning in exitcodes.MEANINGS.items():
        assert f"{code}  {meaning}" in result.stdout


def test_version_human_and_json(cli: Cli) -> None:
    assert cli("--version").stdout.strip() == f"opapprove {__version__}"
    assert cli("version").stdout.strip() == f"opapprove {__version__}"
    doc = json.loads(cli("version", "--json").stdout)
    assert doc["ok"] is True and doc["version"] == __version__


def test_unknown_command_is_usage_error_on_one_line(cli: Cli) -> None:
    result = cli("frobnicate")
    assert result.exit_code == exitcodes.USAGE
    assert "frobnicate" in one_error_line(result)
    assert result.stdout == ""


def test_unknown_option_after_command(cli: Cli) -> None:
    result = cli("seller", "list", "--nope")
    assert result.exit_code == exitcodes.USAGE
    line = one_error_line(result)
    assert "--nope" in line and "opapprove seller list --help" in line


def test_usage_error_with_json_prints_one_json_document(cli: Cli) -> None:
    result = cli("--json", "frobnicate")
    assert result.exit_code == exitcodes.USAGE
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["error"]["kind"] == "usage"
    assert set(doc["error"]) >= {"message", "hint", "kind"}
    one_error_line(result)


def test_json_after_the_command_is_global(cli: Cli) -> None:
    doc = json.loads(cli("seller", "list", "--json").stdout)
    assert doc == {"ok": True, "sellers": [], "exitCode": 0}


def test_hoisting_leaves_other_arguments_alone() -> None:
    argv = [
        "seller",
        "add",
        "x",
        "--json",
        "--store=/s.db",
        "--trace-file",
        "t.jsonl",
        "--",
        "--json",
    ]
    assert hoist_global_options(argv) == [
        "--json",
        "--store=/s.db",
        "--trace-file",
        "t.jsonl",
        "seller",
        "add",
        "x",
        "--",
        "--json",
    ]


def test_each_global_option_sets_the_runtime_field_of_its_name() -> None:
    from dataclasses import fields

    from opapprove.cli.runtime import FLAGS, VALUED, Runtime

    root = typer.main.get_command(main.app)
    given = {p.name: p.opts for p in root.params if p.expose_value}
    assert set(given) <= {f.name for f in fields(Runtime)}
    # Every one of them may also follow the command (hoist_global_options).
    assert sorted(opt for opts in given.values() for opt in opts) == sorted(FLAGS + VALUED)


def test_group_without_subcommand_shows_help(cli: Cli) -> None:
    result = cli("seller")
    assert result.exit_code == exitcodes.USAGE
    assert "keygen" in result.stderr


def test_bad_config_file_is_exit_3(cli: Cli) -> None:
    cli.write_config("this is = = not toml")
    result = cli("seller", "list")
    assert result.exit_code == exitcodes.CONFIG
    assert "config.toml" in one_error_line(result)


def test_unexpected_error_is_one_line_and_debug_shows_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(ctx: typer.Context) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(main.Runtime, "settings", lambda self: boom(None))  # type: ignore[arg-type]
    result = cli("seller", "list")
    assert result.exit_code == exitcodes.UNEXPECTED
    line = one_error_line(result)
    assert "RuntimeError" in line and "kaboom" in line and "--debug" in line
    debug = cli("--debug", "seller", "list")
    assert debug.exit_code == exitcodes.UNEXPECTED
    assert "Traceback" in debug.stderr and "kaboom" in debug.stderr


def test_main_returns_exit_code(cli: Cli) -> None:
    assert main.main(["--store", str(cli.store), "--config", str(cli.config), "version"]) == 0
    assert main.main(["--store", str(cli.store), "frobnicate"]) == exitcodes.USAGE


def test_subprocess_help_and_usage_error(cli: Cli) -> None:
    ok = cli.run_process("--help")
    assert ok.returncode == 0 and "Exit codes:" in ok.stdout
    bad = cli.run_process("seller", "show")
    assert bad.returncode == exitcodes.USAGE
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr


def test_help_does_not_import_heavy_modules_or_build_commands(cli: Cli) -> None:
    code = (
        "import sys\n"
        "from opapprove.cli.main import main, LAZY_COMMANDS\n"
        "main(['--help'])\n"
        "heavy = [m for m in ('pydantic', 'httpx', 'cryptography', 'rich', 'starlette', "
        "'uvicorn', 'opapprove.openpayments.client', 'opapprove.approvals.store', "
        "'opapprove.settings') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "print('BUILT', sorted(m for m, *_ in LAZY_COMMANDS.values() if m in sys.modules))\n"
    )
    out = subprocess.run(
        [*cli.argv()[:1], "-c", code],
        capture_output=True,
        text=True,
        env=cli.subprocess_env(),
        check=False,
    )
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "BUILT []" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("name", sorted(main.LAZY_COMMANDS))
def test_every_command_builds_on_demand_with_plain_help(cli: Cli, name: str) -> None:
    result = cli(name, "--help")
    assert result.exit_code == 0, result.output
    assert f"opapprove {name}" in result.stdout
    assert "--install-completion" not in result.stdout


@pytest.mark.parametrize("name", sorted(main.LAZY_COMMANDS))
def test_the_listed_summary_is_the_commands_own(name: str) -> None:
    built = main._build_command(name)
    listed = main._Summary(main.LAZY_COMMANDS[name][3])
    for limit in (20, 45, 60, 200):
        assert listed.get_short_help_str(limit) == built.get_short_help_str(limit)


def test_top_level_help_is_the_same_without_building_the_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")

    def help_text(prebuilt: bool) -> str:
        group = typer.main.get_command(main.app)
        if prebuilt:
            for name in main.LAZY_COMMANDS:
                group.get_command(None, name)  # type: ignore[attr-defined]
        group.main(["--help"], standalone_mode=False)
        return capsys.readouterr().out

    lazy = help_text(prebuilt=False)
    assert "Start a quote" in lazy
    assert lazy == help_text(prebuilt=True)
