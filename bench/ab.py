"""Old code against new, round by round: the bulk replay's CPU and requests per grant, and
a cold ``opapprove status ID``'s wall time and imports.

On a shared machine wall time is noise, so each git revision runs in turn within every
round (A B A B ...) and the figures are the replaying process's CPU per grant and the
requests the sandbox served per grant, medians with their ranges. Each revision runs from a
detached worktree (made under a temporary directory, removed at the end) through
``PYTHONPATH``, with this checkout's bench scripts; the client and the sandbox child both
report which ``opapprove`` they imported, and a run that imported another is refused.

    .venv/bin/python bench/ab.py --revs 5e51098,main --rounds 5 --grants 500
    .venv/bin/python bench/ab.py --revs main,HEAD --status-runs 15 --grants 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import BENCH, DEFAULT_LATENCY, PYTHON, ROOT, SandboxProcess, clean_env, workdir

RUN_BULK = "--one-bulk"
RUN_SEED = "--one-seed"
# The console script's entry point, with the revision's opapprove checked first.
CONSOLE = (
    "import sys, opapprove; assert opapprove.__file__.startswith({src!r}), opapprove.__file__;"
    " sys.argv = ['opapprove', *sys.argv[1:]];"
    " from opapprove.cli.startup import run; run()"
)


def one_bulk(count: int, latency: float) -> dict[str, Any]:
    """In this process (PYTHONPATH at one revision): replay ``count`` stuck grants."""
    from bulk import _warm_store, replay_all, seed
    from common import new_seller, write_config
    from round_trips import add_seller

    import opapprove

    with workdir("ab") as work:
        seller = new_seller(work)
        config = write_config(work)
        with SandboxProcess([seller], latency=latency) as sandbox:
            store_path = work / "store.db"
            add_seller(store_path, "s", f"{sandbox.url}/seller", seller.key_id, seller.key_path)
            seed(store_path, f"{sandbox.url}/buyer", count + 1)
            asyncio.run(_warm_store(store_path, config))  # the non-interactive grants cached
            before, cpu = sandbox.stats(), time.process_time()
            elapsed, outcomes = asyncio.run(replay_all(store_path, config, 64))
            cpu = time.process_time() - cpu
            after = sandbox.stats()
    return {
        "client": opapprove.__file__,
        "sandbox": after["opapprove"],
        "seconds": elapsed,
        "cpu_ms": cpu / count * 1000,
        "requests": (after["served"] - before["served"]) / count,
        "advanced": outcomes.get("advanced", 0),
    }


def one_seed(path: Path) -> None:
    """In this process: a store holding one grant awaiting approval; prints its id."""
    from startup import seed_status

    print(seed_status(path))


class Revision:
    def __init__(self, rev: str, base: Path) -> None:
        self.rev = rev
        sha = git("rev-parse", "--short", rev)
        self.tree = base / sha
        git("worktree", "add", "--detach", str(self.tree), sha)
        self.src = str(self.tree / "src")
        self.store = base / f"status-{sha}.db"
        self.pending_id = ""

    def env(self, work: Path) -> dict[str, str]:
        env = clean_env(work)
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], self.src])
        return env

    def bulk(self, work: Path, count: int, latency: float) -> dict[str, Any]:
        argv = [PYTHON, str(BENCH / "ab.py"), RUN_BULK, str(count), "--latency", str(latency)]
        proc = subprocess.run(argv, env=self.env(work), capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.rev}: {proc.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
        for who in ("client", "sandbox"):
            if not result[who].startswith(self.src):
                raise RuntimeError(f"{self.rev}: the {who} imported {result[who]}")
        return result

    def status_argv(self, *extra: str) -> list[str]:
        if not self.pending_id:
            argv = [PYTHON, str(BENCH / "ab.py"), RUN_SEED, str(self.store)]
            env = {**os.environ, "PYTHONPATH": self.src}
            seeded = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
            self.pending_id = seeded.stdout.split()[-1]
        code = CONSOLE.format(src=self.src)
        return [PYTHON, *extra, "-c", code, "--store", str(self.store), "status", self.pending_id]

    def status(self, work: Path) -> tuple[float, int, int, float]:
        """Wall seconds of a cold ``status``, then under -X importtime: modules loaded, of
        them opapprove's, and the import time they add up to."""
        env = self.env(work)
        t0 = time.perf_counter()
        proc = subprocess.run(self.status_argv(), env=env, capture_output=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{self.rev}: status failed: {proc.stderr[-1000:]!r}")
        traced = subprocess.run(
            self.status_argv("-X", "importtime"), env=env, capture_output=True, text=True
        )
        rows = [
            line.split("|")
            for line in traced.stderr.splitlines()
            if line.startswith("import time:") and line.split("|")[1].strip().isdigit()
        ]
        names = [row[2].strip() for row in rows]
        own = sum(int(row[0].split(":")[1]) for row in rows) / 1e6
        return wall, len(names), sum(n.startswith("opapprove") for n in names), own

    def remove(self) -> None:
        git("worktree", "remove", "--force", str(self.tree))


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def spread(values: list[float], unit: str, scale: float = 1.0) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid * scale:.2f} [{low * scale:.2f}-{high * scale:.2f}] {unit}"


def compare(revs: list[str], rounds: int, grants: int, latency: float, status_runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="opapprove-ab-") as name:
        base = Path(name)
        revisions = [Revision(rev, base) for rev in revs]
        bulk: dict[str, list[dict[str, Any]]] = {r.rev: [] for r in revisions}
        status: dict[str, list[tuple[float, int, int, float]]] = {r.rev: [] for r in revisions}
        loads: list[str] = []
        try:
            with workdir("ab-status") as work:
                (work / "config.toml").write_text('base_url = "http://127.0.0.1:3999"\n')
                for r in revisions:
                    if status_runs:
                        r.status(work)  # writes the revision's .pyc files
                for i in range(max(rounds if grants else 0, status_runs)):
                    loads.append(Path("/proc/loadavg").read_text().split()[0])
                    for r in revisions:
                        if i < status_runs:
                            status[r.rev].append(r.status(work))
                        if grants and i < rounds:
                            bulk[r.rev].append(r.bulk(work, grants, latency))
                            print(f"round {i + 1} {r.rev}: {json.dumps(bulk[r.rev][-1])}")
        finally:
            for r in revisions:
                r.remove()
    print(f"load average (1 min) at each round: {', '.join(loads)}")
    for rev in revs:
        if bulk[rev]:
            runs = bulk[rev]
            print(
                f"{rev}: bulk of {grants}, {len(runs)} runs: CPU/grant"
                f" {spread([r['cpu_ms'] for r in runs], 'ms')}; requests/grant"
                f" {spread([r['requests'] for r in runs], '')}; wall"
                f" {spread([r['seconds'] for r in runs], 's')}; fewest advanced"
                f" {min(r['advanced'] for r in runs)}"
            )
        if status[rev]:
            walls, modules, ours, own = zip(*status[rev], strict=True)
            print(
                f"{rev}: status, {len(walls)} runs: wall {spread(list(walls), 'ms', 1000)};"
                f" modules {modules[0]} ({ours[0]} opapprove); import time"
                f" {spread(list(own), 'ms', 1000)}"
            )


def main() -> None:
    if sys.argv[1:2] == [RUN_BULK]:
        latency = float(sys.argv[4]) if len(sys.argv) > 4 else DEFAULT_LATENCY
        print(json.dumps(one_bulk(int(sys.argv[2]), latency)))
        return
    if sys.argv[1:2] == [RUN_SEED]:
        one_seed(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--revs", required=True, help="git revisions, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--grants", type=int, default=500, help="0: no bulk runs")
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY)
    parser.add_argument("--status-runs", type=int, default=0)
    args = parser.parse_args()
    compare(args.revs.split(","), args.rounds, args.grants, args.latency, args.status_runs)


if __name__ == "__main__":
    main()
