"""(7) Store backends: 1,000-grant ``pending replay --all`` on SQLite and on PostgreSQL.

The same bulk run as section 4 (grants stuck at ``started``, the sandbox with latency), on
a new SQLite file and on a new PostgreSQL database in turn, ``--rounds`` times in this one
process: each round runs both, the first backend alternating, so both see the same machine
load. Each run is the call ``opapprove pending replay --all --workers 1`` makes
(``replay_many``, in process), timed from the first store read to the last outcome, after
one grant has warmed the grant cache (see ``bulk.replay_all``). The
figures are the median of each backend, the spread (fastest-slowest, and the middle half),
and the median of the rounds' own PostgreSQL/SQLite ratios (a round's two runs share the
load, so its ratio is steadier than either time). ``--processes N`` also runs the command
as a process, N interleaved rounds (start-up included).

Then the store alone, without any network, interleaved the same way: one transition (one
transaction: the row, its event) on each backend, the median over 1,000 per round.

PostgreSQL is a throwaway server from Debian's binaries (``tests/postgres_server.py``) on
loopback TCP with password authentication and fsync on, as a production server has it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bulk import one_size
from common import DEFAULT_LATENCY, ROOT, Figure, Report, heading, ms, say, workdir

sys.path.insert(0, str(ROOT))  # for tests/postgres_server.py
from tests.postgres_server import PostgresServer

SECTION = "store backends"
TARGET_RATIO = 1.5
TRANSITIONS = ("incoming_created", "quote_created", "awaiting_approval", "approved", "grant_issued")
BACKENDS = ("sqlite", "postgresql")
Times = dict[str, list[float]]


def spread(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    """Fastest-slowest and, from 4 values on, the middle half (quartiles) of ``values``."""
    low, high = min(values) * scale, max(values) * scale
    text = f"{low:.2f}-{high:.2f} {unit}"
    if len(values) >= 4:
        q1, _, q3 = statistics.quantiles(values, n=4)
        text += f", middle half {q1 * scale:.2f}-{q3 * scale:.2f}"
    return text


def interleaved(rounds: int, run: Callable[[str], float | None]) -> Times:
    """``run(backend)`` on both backends ``rounds`` times, which goes first alternating;
    the times per backend, and under ``"ratio"`` each complete round's PostgreSQL/SQLite."""
    times: Times = {b: [] for b in BACKENDS}
    ratios: list[float] = []
    for n in range(rounds):
        order = BACKENDS if n % 2 == 0 else BACKENDS[::-1]
        got = {b: run(b) for b in order}
        for backend, value in got.items():
            if value is not None:
                times[backend].append(value)
        sqlite, postgres = got["sqlite"], got["postgresql"]
        if sqlite is not None and postgres is not None:
            ratios.append(postgres / sqlite)
    times["ratio"] = ratios
    return times


def per_transition(location: Path | str, grants: int) -> float:
    """Seconds one transition takes in the store alone (median over ``grants`` x 5)."""
    from opapprove.approvals.records import State
    from opapprove.approvals.store import Store

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


def _new_store(server: PostgresServer, backend: str) -> str | None:
    """A new PostgreSQL store, or ``None``: a new SQLite file (``one_size`` makes it)."""
    return server.url(server.create_database("bench")) if backend == "postgresql" else None


def _replays(
    report: Report,
    server: PostgresServer,
    count: int,
    concurrency: int,
    latency: float,
    rounds: int,
    *,
    as_process: bool = False,
) -> None:
    """In process (``replay_many``), or as the command (start-up included); after a warm-up."""
    cpu: Times = {b: [] for b in BACKENDS}

    def run(backend: str) -> float | None:
        try:
            elapsed, outcomes, used, _ = one_size(
                count,
                concurrency,
                latency,
                as_process=as_process,
                workers=1,
                store=_new_store(server, backend),
                warm=True,
            )
        except RuntimeError as exc:  # a command that reported errors: not a figure
            say(f"{backend}: {str(exc)[:300]}")
            return None
        if outcomes.get("advanced", 0) < count:
            say(f"{backend}: {elapsed:.2f} s, outcomes {dict(outcomes)}: not a figure")
            return None
        cpu[backend].append(used)
        say(f"{backend}: {elapsed:.2f} s, CPU {used / count * 1e3:.1f} ms/grant")
        return elapsed

    how = "`pending replay --all --workers 1` process" if as_process else "in process"
    _figures(report, count, how, interleaved(rounds, run), cpu)


def _figures(report: Report, count: int, how: str, times: Times, cpu: Times | None = None) -> None:
    if not (times["sqlite"] and times["postgresql"]):
        say(f"{how}: no complete run on both backends, no figure")
        return
    medians = {b: statistics.median(times[b]) for b in BACKENDS}
    for backend, name in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        note = f"N={len(times[backend])}: {spread(times[backend])}"
        if cpu and cpu[backend]:
            note += f"; CPU {statistics.median(cpu[backend]) / count * 1e3:.1f} ms/grant"
        value = f"{medians[backend]:.2f} s"
        report.add(Figure(SECTION, f"{count} grants ({how}), {name}", value, note=note))
    of_medians = medians["postgresql"] / medians["sqlite"]
    ratios = times["ratio"]
    ratio = statistics.median(ratios) if ratios else of_medians
    report.add(
        Figure(
            SECTION,
            f"{count} grants ({how}): PostgreSQL / SQLite",
            f"{ratio:.2f}x",
            f"<= {TARGET_RATIO:g}x",
            ratio <= TARGET_RATIO,
            note=f"median of {len(ratios)} rounds' ratios"
            + (f", {spread(ratios, 'x')}" if ratios else "")
            + f"; ratio of the medians {of_medians:.2f}x",
        )
    )


def _transitions(report: Report, server: PostgresServer, rounds: int) -> None:
    with workdir("transitions") as work:
        files = iter(range(rounds))

        def run(backend: str) -> float:
            if backend == "sqlite":
                return per_transition(work / f"transitions-{next(files)}.db", 200)
            return per_transition(server.url(server.create_database("bench")), 200)

        each = interleaved(rounds, run)
    for backend, name in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        report.add(
            Figure(
                SECTION,
                f"one transition, the store alone, {name}",
                f"{statistics.median(each[backend]) * 1e3:.2f} ms",
                note=f"N={len(each[backend])} x 1,000: {spread(each[backend], 'ms', 1e3)}",
            )
        )
    extra = [(p - s) * 1e3 for p, s in zip(each["postgresql"], each["sqlite"], strict=True)]
    report.add(
        Figure(
            SECTION,
            "extra cost of a transition on PostgreSQL",
            f"{statistics.median(extra):+.2f} ms",
            note=f"rounds {min(extra):+.2f} to {max(extra):+.2f} ms; 5 transitions a grant here",
        )
    )


def run(
    report: Report,
    *,
    count: int = 1000,
    concurrency: int = 64,
    latency: float = DEFAULT_LATENCY,
    rounds: int = 5,
    processes: int = 0,
) -> None:
    from tests.postgres_server import MISSING, find_bindir

    heading(
        f"7. Store backends: {count}-grant `pending replay --all` on SQLite and PostgreSQL"
        f" ({rounds} interleaved rounds, latency {ms(latency)}/request), and one transition"
        " in the store alone"
    )
    bindir = find_bindir()
    if bindir is None:
        say(f"skipped: {MISSING}")
        return
    server = PostgresServer(bindir, durable=True).start()
    try:
        _replays(report, server, count, concurrency, latency, rounds)
        if processes:
            _replays(report, server, count, concurrency, latency, processes, as_process=True)
        _transitions(report, server, rounds)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved in-process rounds")
    parser.add_argument("--processes", type=int, default=0, help="rounds as the command too")
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY)
    args = parser.parse_args()
    report = Report()
    run(
        report,
        count=args.count,
        rounds=args.rounds,
        processes=args.processes,
        latency=args.latency,
    )
    print()
    for figure in report.figures:
        print(figure.line())


if __name__ == "__main__":
    main()
