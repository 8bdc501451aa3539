"""The console script pauses the garbage collector for start-up and every command resumes it.

Each case runs in its own interpreter: the collector's state is process-wide, and pytest's
own must not change.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from tests.cli.conftest import Cli

# Runs `startup.run` as the console script would, with probes that print the collector's
# state when the CLI begins parsing and when the command's real work starts.
PROBE = textwrap.dedent(
    """
    import gc, json, sys

    import opapprove.cli.main as main
    import opapprove.cli.runtime as runtime
    import opapprove.diagnostics.doctor as doctor
    import opapprove.servers.serving as serving
    from opapprove.cli import startup

    seen = {"before": gc.isenabled()}
    cli_run = main.run

    def probed_main_run():
        seen["parsing"] = gc.isenabled()
        cli_run()

    real_run = runtime.Runtime.run

    def probed_runtime_run(self, coro):
        coro.close()

        async def probe():
            seen["working"] = gc.isenabled()
            seen["frozen"] = gc.get_freeze_count() > 0
            return None

        return real_run(self, probe())

    def probed_sandbox(config, *args, **kwargs):
        seen["working"] = gc.isenabled()
        seen["frozen"] = gc.get_freeze_count() > 0

    def probed_checks(*args, **kwargs):
        seen["working"] = gc.isenabled()
        seen["frozen"] = gc.get_freeze_count() > 0
        return []

    main.run = probed_main_run
    runtime.Runtime.run = probed_runtime_run
    serving.run_sandbox = probed_sandbox
    doctor.run_checks = probed_checks
    sys.argv = ["opapprove", *sys.argv[1:]]
    try:
        startup.run()
    except SystemExit:
        pass
    seen["after"] = gc.isenabled()
    # Left for the exit's collection: only what was made since the command ended.
    seen["frozen_at_exit"] = sum(len(gc.get_objects(generation=g)) for g in range(3)) < 1000
    sys.stderr.write("PROBE " + json.dumps(seen) + "\\n")
    """
)


def _probe(cli: Cli, *args: str) -> dict[str, bool]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            "--store",
            str(cli.store),
            "--config",
            str(cli.config),
            *args,
        ],
        capture_output=True,
        text=True,
        env=cli.subprocess_env(),
        timeout=60,
        check=False,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("PROBE ")]
    assert lines, proc.stderr
    result: dict[str, bool] = json.loads(lines[-1].removeprefix("PROBE "))
    return result


def test_the_installed_script_is_the_startup_entry_point() -> None:
    (script,) = entry_points(group="console_scripts", name="opapprove")
    assert script.value == "opapprove.cli.startup:run"
    main = Path(__file__).parents[2] / "src" / "opapprove" / "__main__.py"
    assert "opapprove.cli.startup import run" in main.read_text(encoding="utf-8")


def test_a_networked_command_collects_again_once_its_work_starts(cli: Cli) -> None:
    seen = _probe(cli, "--json", "wallet", "check", "http://127.0.0.1:9/nobody")
    assert seen["before"] is True
    assert seen["parsing"] is False  # imports and option parsing run without the collector
    assert seen["working"] is True
    assert seen["frozen"] is True  # what start-up built is out of later full collections
    assert seen["frozen_at_exit"] is True  # and what the work built, out of the exit's one


def test_the_sandbox_collects_again_before_it_serves(cli: Cli) -> None:
    seen = _probe(cli, "sandbox", "--port", "0")
    assert seen["parsing"] is False
    assert seen["working"] is True
    assert seen["frozen"] is True


def test_doctor_collects_again_before_its_checks(cli: Cli) -> None:
    seen = _probe(cli, "doctor")
    assert seen["parsing"] is False
    assert seen["working"] is True
    assert seen["frozen"] is True


def test_python_dash_m_runs_the_same_entry_point(cli: Cli) -> None:
    proc = cli.run_process("--json", "version")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["version"]


def test_settled_is_a_no_op_when_start_up_did_not_pause(cli: Cli) -> None:
    code = (
        "import gc\n"
        "from opapprove.cli import startup\n"
        "gc.disable()\n"  # the host's own choice, which settled() must not undo
        "startup.settled()\n"
        "print(gc.isenabled(), gc.get_freeze_count())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.split() == ["False", "0"]
