"""(5) Sandbox capacity: complete flows per second it sustains on loopback, no latency.

A complete flow is what a CI smoke test runs: ``quote start`` (steps 1-7), the approval
(the operator's ``/_admin/approve``), ``finish`` (continue, outgoing payment, payment
check, the seller's receipt). Client worker processes (``--worker``) each keep
``--concurrency`` flows going with their own store; the sandbox runs alone in its
process, so its CPU seconds per flow say what one sandbox can sustain whatever the
clients cost. ``--profile FILE`` writes the sandbox's cProfile stats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from pathlib import Path

import httpx
from common import (
    PYTHON,
    Figure,
    Report,
    SandboxProcess,
    heading,
    new_seller,
    say,
    workdir,
    write_config,
)
from round_trips import add_seller

SECTION = "sandbox capacity"
HERE = Path(__file__).resolve()


async def worker(
    sandbox_url: str, store_path: Path, config: Path, concurrency: int, seconds: float
) -> dict:
    from opapprove.approvals.flow import Flow
    from opapprove.approvals.records import State
    from opapprove.approvals.store import Store
    from opapprove.settings import load_settings

    settings = load_settings(config, store=store_path, seller_id="s")
    done = 0
    failed: list[str] = []
    latencies: list[float] = []
    with Store(store_path) as store:
        async with (
            Flow(store, settings) as flow,
            httpx.AsyncClient(base_url=sandbox_url, timeout=60) as admin,
        ):
            deadline = time.perf_counter() + seconds

            async def loop(n: int) -> None:
                nonlocal done
                i = 0
                while time.perf_counter() < deadline:
                    i += 1
                    t0 = time.perf_counter()
                    try:
                        pending = await flow.start_quote(
                            offer_id=f"cap-{n}-{i}",
                            buyer_wallet=f"{sandbox_url}/buyer",
                            amount="1.00",
                        )
                        answer = await admin.post(
                            "/_admin/approve", json={"redirect": pending.interact_redirect}
                        )
                        finish = answer.json()["finish_url"]
                        pending = await flow.finish_url(finish)
                    except Exception as exc:
                        failed.append(f"{type(exc).__name__}: {exc}")
                        continue
                    if pending.state == State.COMPLETED:
                        done += 1
                        latencies.append(time.perf_counter() - t0)
                    else:
                        failed.append(str(pending.state))

            t0 = time.perf_counter()
            await asyncio.gather(*(loop(n) for n in range(concurrency)))
            elapsed = time.perf_counter() - t0
    return {"done": done, "failed": failed[:5], "failures": len(failed), "elapsed": elapsed}


def run(
    report: Report,
    *,
    seconds: float = 10.0,
    workers: int = 2,
    concurrency: int = 8,
    profile: Path | None = None,
) -> None:
    heading(
        f"5. Sandbox capacity (no latency; {workers} client processes x {concurrency}"
        f" concurrent flows, {seconds:g} s)"
    )
    with workdir("cap") as work:
        seller = new_seller(work)
        config = write_config(work)
        with SandboxProcess([seller], latency=0.0, profile=profile) as sandbox:
            stores = []
            for w in range(workers):
                store = work / f"worker-{w}.db"
                add_seller(store, "s", f"{sandbox.url}/seller", seller.key_id, seller.key_path)
                stores.append(store)
            before = sandbox.stats()
            procs = [
                subprocess.Popen(
                    [
                        PYTHON,
                        str(HERE),
                        "--worker",
                        sandbox.url,
                        str(store),
                        str(config),
                        str(concurrency),
                        str(seconds),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for store in stores
            ]
            results = [json.loads(p.communicate()[0]) for p in procs]
            after = sandbox.stats()
    flows = sum(r["done"] for r in results)
    failures = sum(r["failures"] for r in results)
    elapsed = max(r["elapsed"] for r in results)
    cpu = after["cpu"] - before["cpu"]
    requests = after["served"] - before["served"]
    for r in results:
        if r["failed"]:
            say(f"failures in a worker: {r['failed']}")
    report.add(
        Figure(
            SECTION,
            "complete flows per second (observed)",
            f"{flows / elapsed:.1f}/s",
            note=f"{flows} flows, {failures} failed, {requests} requests",
        )
    )
    if flows:
        per_flow = cpu / flows
        report.add(
            Figure(
                SECTION,
                "sandbox CPU per flow -> flows/s on one core",
                f"{per_flow * 1000:.1f} ms -> {1 / per_flow:.0f}/s",
                note=f"{requests / flows:.0f} requests/flow, {cpu / requests * 1000:.2f} ms each",
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=5, metavar="ARG")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    if args.worker:
        url, store, config, concurrency, seconds = args.worker
        result = asyncio.run(
            worker(url, Path(store), Path(config), int(concurrency), float(seconds))
        )
        print(json.dumps(result))
        return
    run(
        Report(),
        seconds=args.seconds,
        workers=args.workers,
        concurrency=args.concurrency,
        profile=args.profile,
    )


if __name__ == "__main__":
    main()
