"""(7) Store backends: 1,000-grant ``pending replay --all`` on SQLite and on PostgreSQL.

The same bulk run as section 4 (grants stuck at ``started``, the sandbox with latency), as
the ``opapprove pending replay --all`` process (with ``--workers 1``, then the default: a
process per CPU), alternately on a new SQLite file
and on a new PostgreSQL database, so both see the same machine load; the median of each.
Then the store alone, without any network: the cost of one transition (one transaction:
lock the row, update it, append its event) on each backend.

PostgreSQL is a throwaway server from Debian's binaries (``tests/postgres_server.py``) on
loopback TCP with password authentication and fsync on, as a production server has it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bulk import one_size
from common import DEFAULT_LATENCY, ROOT, Figure, Report, heading, ms, say, workdir

sys.path.insert(0, str(ROOT))  # for tests/postgres_server.py
from tests.postgres_server import PostgresServer

SECTION = "store backends"
TARGET_RATIO = 1.5
TRANSITIONS = ("incoming_created", "quote_created", "awaiting_approval", "approved", "grant_issued")


def per_transition(location: Path | str, grants: int) -> float:
    """Seconds one transition takes in the store alone (median over ``grants`` x 5)."""
    from opapprove.approvals.store import State, Store

    times: list[float] = []
    with Store(location) as store:
        for n in range(grants):
            pid = store.create_pending(
                seller_id="s", offer_id=f"o-{n}", buyer_wallet="https://w.test/b", amount="1"
            ).id
            previous = State.STARTED
            for name in TRANSITIONS:
                t0 = time.perf_counter()
                store.transition(pid, State(name), expect=previous, quote_url="https://q")
                times.append(time.perf_counter() - t0)
                previous = State(name)
    return statistics.median(times)


def _replays(
    report: Report,
    server: PostgresServer,
    count: int,
    concurrency: int,
    latency: float,
    repeat: int,
    workers: int | None,
) -> None:
    runs: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    for _ in range(repeat):
        for backend in runs:
            store = server.url(server.create_database("bench")) if backend == "postgresql" else None
            try:
                elapsed, outcomes, cpu, _ = one_size(
                    count, concurrency, latency, as_process=True, workers=workers, store=store
                )
            except RuntimeError as exc:  # a run whose replay reported errors: not a figure
                say(f"{backend}, workers {workers or 'default'}: {str(exc)[:300]}")
                continue
            runs[backend].append(elapsed)
            say(
                f"{backend}, workers {workers or 'default'}: {elapsed:.2f} s, outcomes"
                f" {dict(outcomes)}, CPU {cpu:.1f} s"
            )
    how = "--workers 1" if workers == 1 else "default workers"
    if not (runs["sqlite"] and runs["postgresql"]):
        say(f"{how}: no complete run on both backends, no figure")
        return
    sqlite = statistics.median(runs["sqlite"])
    postgres = statistics.median(runs["postgresql"])
    for backend, value in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        spread = runs[backend.lower()]
        report.add(
            Figure(
                SECTION,
                f"{count} grants, `pending replay --all` ({how}), {backend}",
                f"{value:.2f} s",
                note=f"runs {min(spread):.2f}-{max(spread):.2f} s",
            )
        )
    ratio = postgres / sqlite
    report.add(
        Figure(
            SECTION,
            f"{count} grants ({how}): PostgreSQL / SQLite",
            f"{ratio:.2f}x",
            f"<= {TARGET_RATIO:g}x",
            ratio <= TARGET_RATIO,
        )
    )


def run(
    report: Report,
    *,
    count: int = 1000,
    concurrency: int = 64,
    latency: float = DEFAULT_LATENCY,
    repeat: int = 3,
) -> None:
    from tests.postgres_server import MISSING, find_bindir

    heading(
        f"7. Store backends: {count}-grant `pending replay --all` on SQLite and"
        f" PostgreSQL (alternating, median of {repeat}, latency {ms(latency)}/request), and"
        " one transition in the store alone"
    )
    bindir = find_bindir()
    if bindir is None:
        say(f"skipped: {MISSING}")
        return
    server = PostgresServer(bindir, durable=True).start()
    try:
        # One process, then the default (a process per CPU for a bulk replay).
        for workers in (1, None):
            _replays(report, server, count, concurrency, latency, repeat, workers)
        with workdir("transitions") as work:
            with_sqlite = per_transition(work / "transitions.db", 200)
        with_postgres = per_transition(server.url(server.create_database("bench")), 200)
        for backend, value in (("SQLite", with_sqlite), ("PostgreSQL", with_postgres)):
            report.add(
                Figure(
                    SECTION, f"one transition, the store alone, {backend}", f"{value * 1e3:.2f} ms"
                )
            )
        report.add(
            Figure(
                SECTION,
                "extra cost of a transition on PostgreSQL",
                f"{(with_postgres - with_sqlite) * 1e3:+.2f} ms",
                note=f"{with_postgres / with_sqlite:.2f}x SQLite's; 5 transitions a grant here",
            )
        )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY)
    args = parser.parse_args()
    run(Report(), count=args.count, repeat=args.repeat, latency=args.latency)


if __name__ == "__main__":
    main()
