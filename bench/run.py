"""``make bench``: every opapprove benchmark, each figure printed with its target.

Against the embedded sandbox on loopback with injected per-request latency (default
100 ms, about a testnet round trip). Nothing here asserts on time: the figures are for
people. The whole default run takes a few minutes; ``--quick`` is a ~1 minute smoke run,
``--full`` adds more rounds. ``--results FILE`` writes the figures and the machine as
Markdown (bench/RESULTS.md is made that way).

    .venv/bin/python bench/run.py [--quick | --full] [--only 1,2,3,4,5,6,7] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import bulk
import capacity
import finish_page
import round_trips
import startup
import store_backends
import vs_node
from common import DEFAULT_LATENCY, Report, machine, say


@dataclass(frozen=True)
class Plan:
    rt_runs: int = 5
    node_runs: int = 11
    startup_runs: int = 15
    sizes: tuple[int, ...] = (100, 1000, 5000)
    capacity_seconds: float = 10.0
    bulk_repeat: int = 3
    finish_runs: int = 3


PLANS = {
    "quick": Plan(
        rt_runs=2,
        node_runs=2,
        startup_runs=5,
        sizes=(100,),
        capacity_seconds=3.0,
        bulk_repeat=1,
        finish_runs=1,
    ),
    "default": Plan(),
    "full": Plan(rt_runs=10, node_runs=15, startup_runs=31, capacity_seconds=20.0),
}


def write_results(path: Path, report: Report, info: dict[str, str], argv: list[str]) -> None:
    lines = [
        "# opapprove benchmark results",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} with `python bench/run.py"
        f"{' ' + ' '.join(argv) if argv else ''}`.",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']},"
        f" Node {info['node']}, {info['os']}; load average at the start {info['load']}.",
        "",
        "| section | figure | value | target | met |",
        "|---|---|---|---|---|",
    ]
    for f in report.figures:
        met = {True: "yes", False: "**no**", None: ""}[f.met]
        note = f" ({f.note})" if f.note else ""
        lines.append(f"| {f.section} | {f.name}{note} | {f.value} | {f.target} | {met} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run, about a minute")
    size.add_argument("--full", action="store_true", help="more rounds, steadier medians")
    parser.add_argument("--only", default="1,2,3,4,5,6,7", help="sections to run, e.g. 1,4")
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY)
    parser.add_argument("--results", type=Path, help="write the figures as Markdown here")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full" if args.full else "default"
    plan = PLANS[mode]
    only = {int(s) for s in args.only.split(",") if s.strip()}
    info = machine()
    load = os.getloadavg()[0]
    info["load"] = f"{load:.2f}"
    print(
        f"opapprove bench ({mode}): {info['nproc']} CPUs, {info['cpu']}, Python"
        f" {info['python']}, Node {info['node']}; latency {args.latency * 1000:.0f} ms/request"
    )
    if load > 0.5 * (os.cpu_count() or 1):
        say(f"warning: load average {load:.1f}; other work on this machine inflates the times")
    report = Report()
    started = time.perf_counter()
    if 1 in only:
        round_trips.run(report, latency=args.latency, runs=plan.rt_runs)
    if 2 in only:
        vs_node.run(report, runs=plan.node_runs, latency=args.latency)
    if 3 in only:
        startup.run(report, runs=plan.startup_runs)
    if 4 in only:
        bulk.run(report, sizes=plan.sizes, latency=args.latency, repeat=plan.bulk_repeat)
    if 5 in only:
        capacity.run(report, seconds=plan.capacity_seconds)
    if 6 in only:
        finish_page.run(report, latency=args.latency, runs=plan.finish_runs)
    if 7 in only:
        store_backends.run(
            report,
            count=max(plan.sizes[:2]),
            latency=args.latency,
            rounds=max(plan.bulk_repeat, 3),
        )
    info["load"] += f" (at the end {os.getloadavg()[0]:.2f})"
    missed = [f for f in report.figures if f.met is False]
    print(f"\n{len(report.figures)} figures in {time.perf_counter() - started:.0f} s;", end=" ")
    print(f"{len(missed)} target(s) not reached" + (":" if missed else "."))
    for f in missed:
        print(f"  - {f.section}: {f.name} = {f.value} (target {f.target})")
    print(f"Load average {info['load']}: other work on this machine inflates the times.")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "figures": report.to_json()}, indent=2))
    if args.results:
        write_results(args.results, report, info, sys.argv[1:])


if __name__ == "__main__":
    main()
