"""(3) Start-up: ``opapprove --help``, ``opapprove status ID`` cold, the CLI's import time.

Wall times are medians over fresh processes (the console script, as a user runs it).
``status`` reads a grant awaiting approval from a seeded store, which needs no network.
The import time is ``python -X importtime -c "import opapprove.cli.main"``'s total, and
the heavy modules each command loaded are listed, since they should load only when a
command needs them.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from common import (
    OPAPPROVE,
    PYTHON,
    Figure,
    Report,
    clean_env,
    heading,
    median,
    ms,
    say,
    timed_run,
    workdir,
    write_config,
)

SECTION = "start-up"
PYTHON_C = "-c"
HELP_TARGET = 0.150
HEAVY = (
    "pydantic",
    "httpx",
    "rich",
    "cryptography",
    "opapprove.openpayments.models",
    "opapprove.approvals.flow",
    "sqlite3",
)
# Runs the CLI in-process, then reports which heavy modules it imported.
PROBE = """
import json, sys
from opapprove.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
heavy = %r
sys.stderr.write("\\nPROBE " + json.dumps([m for m in heavy if m in sys.modules]) + "\\n")
"""


def seed_status(store_path: Path) -> str:
    from opapprove.approvals.records import State
    from opapprove.approvals.store import Store

    with Store(store_path) as store:
        pending = store.create_pending(
            seller_id="bench",
            offer_id="offer-1",
            buyer_wallet="http://127.0.0.1:9/buyer",
            amount="12.34",
        )
        steps = [
            (State.INCOMING_CREATED, {"incoming_payment_url": "http://127.0.0.1:9/op/ip/1"}),
            (State.QUOTE_CREATED, {"quote_url": "http://127.0.0.1:9/op/quotes/1"}),
            (
                State.AWAITING_APPROVAL,
                {
                    "interact_redirect": "http://127.0.0.1:9/interact/1/2",
                    "approval_expires_at": time.time() + 3600,
                },
            ),
        ]
        previous = State.STARTED
        for state, fields in steps:
            store.transition(pending.id, state, expect=previous, **fields)
            previous = state
    return pending.id


def _median_wall(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs + 1):
        seconds, proc = timed_run(argv, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:])} failed: {proc.stderr[-1000:]}")
        times.append(seconds)
    return median(times[1:])  # the first run writes .pyc files


def _loaded(args: list[str], env: dict[str, str]) -> list[str]:
    _, proc = timed_run([PYTHON, "-c", PROBE % (HEAVY,), *args], env=env)
    match = re.search(r"^PROBE (.*)$", proc.stderr, re.M)
    return json.loads(match.group(1)) if match else ["(probe failed)"]


def import_time(argv: list[str], env: dict[str, str]) -> tuple[float, list[tuple[float, str]]]:
    """Total import time of ``argv`` under ``-X importtime``, and self time per top package."""
    _, proc = timed_run([PYTHON, "-X", "importtime", *argv], env=env)
    total = 0.0
    by_package: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        own = int(parts[0].split(":")[1]) / 1e6
        total += own
        name = parts[2].strip()
        package = name if name.startswith("opapprove") else name.split(".")[0]
        if package.startswith("opapprove."):
            package = ".".join(package.split(".")[:2])
        by_package[package] = by_package.get(package, 0.0) + own
    top = sorted(((s, n) for n, s in by_package.items()), reverse=True)
    return total, top


def _trio_import(env: dict[str, str]) -> float | None:
    """What importing trio costs, if this environment has it (None if it has not)."""
    _, proc = timed_run([PYTHON, "-c", "import trio"], env=env)
    if proc.returncode != 0:
        return None
    return median([import_time(["-c", "import trio"], env)[0] for _ in range(3)])


def run(report: Report, *, runs: int = 15) -> None:
    heading(f"3. Start-up (median of {runs} fresh processes)")
    with workdir("startup") as work:
        write_config(work)
        env = clean_env(work)
        store = work / "store.db"
        pending_id = seed_status(store)
        baseline = _median_wall([PYTHON, "-c", "pass"], env, runs)
        helps = _median_wall([OPAPPROVE, "--help"], env, runs)
        status_argv = [OPAPPROVE, "--store", str(store), "status", pending_id]
        status = _median_wall(status_argv, env, runs)
        cli_import = [PYTHON_C, "import opapprove.cli.main"]
        imported = median([import_time(cli_import, env)[0] for _ in range(5)])
        _, top_help = import_time(["-m", "opapprove", "--help"], env)
        _, top_status = import_time(["-m", "opapprove", *status_argv[1:]], env)
        trio = _trio_import(clean_env(work, user_install=False))
        loaded_help = _loaded(["--help"], env)
        loaded_status = _loaded(status_argv[1:], env)
    report.add(Figure(SECTION, "python -c pass (interpreter alone)", ms(baseline)))
    report.add(
        Figure(
            SECTION,
            "opapprove --help",
            ms(helps),
            f"<= {ms(HELP_TARGET)}",
            helps <= HELP_TARGET,
        )
    )
    report.add(Figure(SECTION, "opapprove status ID (cold process)", ms(status)))
    report.add(Figure(SECTION, "import opapprove.cli.main (-X importtime)", ms(imported)))
    for label, top in (("--help", top_help), ("status", top_status)):
        heaviest = ", ".join(f"{name} {ms(seconds)}" for seconds, name in top[:8])
        say(f"import time by package for {label}: {heaviest}")
    if trio is not None:
        say(
            f"not counted above: this checkout's venv has trio (for selenium), which httpcore"
            f" imports when present: +{ms(trio)} per networked command; user installs lack it"
        )
    say(f"heavy modules loaded by --help: {', '.join(loaded_help) or 'none'}")
    say(f"heavy modules loaded by status: {', '.join(loaded_status) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    run(Report(), runs=args.runs)


if __name__ == "__main__":
    main()
