"""(1) Round trips in ``quote start``: total requests and the longest sequential chain.

In-process ``Flow.start_quote`` (what ``opapprove quote start`` runs), one fresh ``Flow``
per run as a new process would have, against the bench sandbox with injected latency.
Cold: an empty store. Warm: the same store again, so the two non-interactive grants come
from its cache. The chain is computed from the client's request start/end times (each
``Exchange`` is reported the moment its request ends, and carries its ``elapsed``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from common import (
    DEFAULT_LATENCY,
    Figure,
    Report,
    SandboxProcess,
    Span,
    heading,
    longest_chain,
    median,
    ms,
    new_seller,
    say,
    workdir,
    write_config,
)

SECTION = "round trips"
COLD_TARGET = 5
WARM_TARGET = 3


async def one_start(store_path: Path, config: Path, sandbox_url: str, seller_id: str) -> dict:
    from opapprove.approvals.flow import Flow
    from opapprove.approvals.store import Store
    from opapprove.openpayments.exchange import Exchange
    from opapprove.settings import load_settings

    spans: list[Span] = []

    def record(exchange: Exchange) -> None:
        end = time.perf_counter()
        spans.append(Span(exchange.method, exchange.url, end - exchange.elapsed, end))

    settings = load_settings(config, store=store_path, seller_id=seller_id)
    with Store(store_path) as store:
        async with Flow(store, settings, on_exchange=record) as flow:
            t0 = time.perf_counter()
            pending = await flow.start_quote(
                offer_id="bench-offer",
                buyer_wallet=f"{sandbox_url}/buyer",
                amount="12.34",
            )
            wall = time.perf_counter() - t0
    assert pending.interact_redirect, pending
    return {"requests": len(spans), "chain": longest_chain(spans), "wall": wall}


def add_seller(
    store_path: Path | str, seller_id: str, wallet: str, key_id: str, key_path: Path
) -> None:
    from opapprove.approvals.records import Seller
    from opapprove.approvals.store import Store

    with Store(store_path) as store:
        store.add_seller(
            Seller(
                id=seller_id,
                wallet_address_url=wallet,
                key_id=key_id,
                private_key_path=str(key_path),
                created_at=time.time(),
            ),
            replace=True,
        )


def run(report: Report, *, latency: float = DEFAULT_LATENCY, runs: int = 5) -> None:
    heading(f"1. Round trips in `quote start` (in-process, latency {ms(latency)}/request)")
    with workdir("rt") as work:
        seller = new_seller(work)
        config = write_config(work)
        with SandboxProcess([seller], latency=latency) as sandbox:
            cold: list[dict] = []
            warm: list[dict] = []
            for i in range(runs):
                store_path = work / f"store-{i}.db"
                add_seller(store_path, "s", f"{sandbox.url}/seller", seller.key_id, seller.key_path)
                cold.append(asyncio.run(one_start(store_path, config, sandbox.url, "s")))
                warm.append(asyncio.run(one_start(store_path, config, sandbox.url, "s")))
                server_chain = longest_chain(sandbox.spans())
                say(
                    f"run {i + 1}: cold {cold[-1]['requests']} req, chain {cold[-1]['chain']},"
                    f" {ms(cold[-1]['wall'])}; warm {warm[-1]['requests']} req,"
                    f" chain {warm[-1]['chain']}, {ms(warm[-1]['wall'])}"
                    f" (server-side chain of both: {server_chain})"
                )
    for label, results, target in (("cold", cold, COLD_TARGET), ("warm", warm, WARM_TARGET)):
        chain = max(r["chain"] for r in results)
        wall = median([r["wall"] for r in results])
        report.add(Figure(SECTION, f"{label}: requests", str(max(r["requests"] for r in results))))
        report.add(
            Figure(
                SECTION,
                f"{label}: longest sequential chain",
                str(chain),
                f"<= {target}",
                chain <= target,
            )
        )
        report.add(
            Figure(
                SECTION,
                f"{label}: median wall time (in round trips)",
                f"{ms(wall)} ({wall / latency:.1f})" if latency else ms(wall),
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    run(Report(), latency=args.latency, runs=args.runs)


if __name__ == "__main__":
    main()
