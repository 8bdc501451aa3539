"""The client's connection pool against httpx's own, on the 1,000-grant bulk replay.

Runs ``bulk.one_size`` (in-process ``replay_many``, 64 in flight, against the sandbox with
latency) with each transport in turn, round after round so that the machine's swings fall
on all of them alike, and prints the median time and the replaying process's CPU per
grant. bench/RESULTS.md, "The connection pool", holds the figures and what they decided.

    .venv/bin/python bench/pool.py                 # 1,000 grants, 3 rounds
    .venv/bin/python bench/pool.py --size 200 --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import httpcore
import httpx
from bulk import one_size
from common import DEFAULT_LATENCY, heading, say

from opapprove.openpayments.transport import POOL_CONNECTIONS, POOL_KEEPALIVE_EXPIRY


def httpx_pool(keepalive: int) -> Callable[[], Any]:
    """httpx's documented knobs: its own pool and anyio backend, ``keepalive`` kept alive."""

    def make() -> httpx.AsyncHTTPTransport:
        limits = httpx.Limits(
            max_connections=POOL_CONNECTIONS,
            max_keepalive_connections=keepalive,
            keepalive_expiry=POOL_KEEPALIVE_EXPIRY,
        )
        return httpx.AsyncHTTPTransport(limits=limits)

    return make


def httpcore_pool_on_asyncio() -> httpx.AsyncHTTPTransport:
    """httpcore's own pool (no assignment fix) on the client's asyncio backend."""
    from opapprove.openpayments.asyncio_pool import AsyncioBackend

    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(
        max_connections=POOL_CONNECTIONS,
        max_keepalive_connections=POOL_CONNECTIONS,
        keepalive_expiry=POOL_KEEPALIVE_EXPIRY,
        network_backend=AsyncioBackend(),
    )
    return transport


def pool_fix_on_anyio() -> httpx.AsyncHTTPTransport:
    """The client's pool (its assignment step) on httpx's default anyio backend."""
    from opapprove.openpayments.asyncio_pool import pooled_transport

    transport = pooled_transport(
        False,
        max_connections=POOL_CONNECTIONS,
        max_keepalive_connections=POOL_CONNECTIONS,
        keepalive_expiry=POOL_KEEPALIVE_EXPIRY,
    )
    transport._pool._network_backend = httpcore.AnyIOBackend()
    return transport


VARIANTS: dict[str, Callable[[], Any] | None] = {
    "client's pool (AsyncioConnectionPool on AsyncioBackend)": None,
    f"httpx pool, Limits(max_keepalive_connections={POOL_CONNECTIONS})": httpx_pool(
        POOL_CONNECTIONS
    ),
    "httpx pool, Limits(max_keepalive_connections=20) (httpx's default)": httpx_pool(20),
    "httpcore's pool on AsyncioBackend (backend only, no pool fix)": httpcore_pool_on_asyncio,
    "client's pool on httpx's anyio backend (pool fix only)": pool_fix_on_anyio,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY)
    parser.add_argument("--only", help="comma-separated numbers of the variants to run (1-5)")
    args = parser.parse_args()
    chosen = list(VARIANTS.items())
    if args.only:
        chosen = [chosen[int(n) - 1] for n in args.only.split(",")]
    heading(
        f"Pool: {args.size} grants, in-process replay_many, concurrency {args.concurrency},"
        f" {args.rounds} rounds, keepalive_expiry {POOL_KEEPALIVE_EXPIRY:g} s"
    )
    seen: dict[str, list[tuple[float, float, int]]] = {name: [] for name, _ in chosen}
    for round_no in range(1, args.rounds + 1):
        for name, make in chosen:
            elapsed, outcomes, cpu, _ = one_size(
                args.size, args.concurrency, args.latency, transport=make
            )
            advanced = outcomes.get("advanced", 0)
            seen[name].append((elapsed, cpu, advanced))
            say(f"round {round_no}, {name}: {elapsed:.2f} s, CPU {cpu:.2f} s, {dict(outcomes)}")
    print()
    for name, runs in seen.items():
        times = [r[0] for r in runs]
        cpu = statistics.median(r[1] for r in runs) / args.size * 1000
        fewest = min(r[2] for r in runs)
        print(
            f"  {name}: median {statistics.median(times):.2f} s"
            f" (runs {min(times):.2f}-{max(times):.2f}), client CPU {cpu:.1f} ms/grant,"
            f" advanced >= {fewest}/{args.size}"
        )


if __name__ == "__main__":
    main()
