"""(2) ``opapprove quote start`` as a process vs the official Node SDK doing the same steps.

Both against one sandbox process with injected latency, runs alternating (which goes
first swaps every round), median of the per-round ratios. The Node side is
``bench/node/p2p.mjs``: @interledger/open-payments 7.4.0 with its default client
(response validation on) making the requests of its peer-to-peer example, one after
another. Cold: a fresh opapprove store; warm: the same store again (cached grants). The
SDK keeps nothing between runs, so its warm run is its cold run. Then the rest of the
flow, side by side: ``opapprove finish URL`` vs the SDK's continue + outgoing payment +
reading the payment back. ``finish`` also reads the seller's own incoming payment (the
receipt: a buyer's wallet can report a payment that never left), which the SDK's example
does not: 4 requests against its 3. Requests and chains are counted by the sandbox.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from common import (
    BENCH,
    DEFAULT_LATENCY,
    OPAPPROVE,
    Figure,
    Report,
    SandboxProcess,
    Seller,
    clean_env,
    heading,
    longest_chain,
    median,
    ms,
    new_seller,
    say,
    timed_run,
    workdir,
    write_config,
)

SECTION = "vs Node SDK"
COLD_TARGET = 0.65
WARM_TARGET = 0.5
NODE_SCRIPT = BENCH / "node" / "p2p.mjs"
# Nothing listens there: the sandbox's admin approve hands back the finish URL instead.
NODE_FINISH_URI = "http://127.0.0.1:9/finish"


@dataclass
class Timing:
    seconds: float
    requests: int
    chain: int


class Runner:
    def __init__(self, sandbox: SandboxProcess, seller: Seller, work: Path) -> None:
        self.sandbox = sandbox
        self.seller = seller
        self.work = work
        self.env = clean_env(work)
        self.node = shutil.which("node")

    def _measure(self, argv: list[str], stdin: str | None = None) -> tuple[Timing, str]:
        self.sandbox.spans()
        seconds, proc = timed_run(argv, env=self.env, stdin=stdin)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} {argv[1:3]} failed: {proc.stderr[-2000:]}")
        spans = self.sandbox.spans()
        return Timing(seconds, len(spans), longest_chain(spans)), proc.stdout

    def new_store(self, n: int) -> str:
        store = str(self.work / f"store-{n}.db")
        _, proc = timed_run(
            [
                OPAPPROVE,
                "--store",
                store,
                "seller",
                "add",
                "bench",
                "--wallet",
                f"{self.sandbox.url}/seller",
                "--key-id",
                self.seller.key_id,
                "--key",
                str(self.seller.key_path),
            ],
            env=self.env,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"seller add failed: {proc.stderr}")
        return store

    def op_start(self, store: str, n: int) -> tuple[Timing, str]:
        timing, out = self._measure(
            [
                OPAPPROVE,
                "--store",
                store,
                "--json",
                "quote",
                "start",
                "--seller",
                "bench",
                "--offer",
                f"offer-{n}",
                "--buyer",
                f"{self.sandbox.url}/buyer",
                "--amount",
                "12.34",
            ]
        )
        data = json.loads(out)
        return timing, str(data["approvalUrl"])

    def op_finish(self, store: str, approval_url: str) -> Timing:
        finish_url = self.sandbox.approve(approval_url)
        timing, out = self._measure([OPAPPROVE, "--store", store, "--json", "finish", finish_url])
        assert json.loads(out)["state"] == "completed", out
        return timing

    def _node_input(self) -> dict[str, str]:
        return {
            "clientWalletUrl": f"{self.sandbox.url}/seller",
            "keyId": self.seller.key_id,
            "privateKeyPem": self.seller.pem,
        }

    def node_start(self) -> tuple[Timing, dict[str, str]]:
        assert self.node
        payload = {
            **self._node_input(),
            "sendingWalletUrl": f"{self.sandbox.url}/buyer",
            "receivingWalletUrl": f"{self.sandbox.url}/seller",
            "value": "1234",
            "finishUri": NODE_FINISH_URI,
        }
        timing, out = self._measure(
            [self.node, str(NODE_SCRIPT), "start"], stdin=json.dumps(payload)
        )
        return timing, json.loads(out)

    def node_finish(self, started: dict[str, str]) -> Timing:
        assert self.node
        finish_url = self.sandbox.approve(started["redirect"])
        interact_ref = parse_qs(urlsplit(finish_url).query)["interact_ref"][0]
        payload = {**started, **self._node_input(), "interactRef": interact_ref}
        timing, _ = self._measure(
            [self.node, str(NODE_SCRIPT), "finish"], stdin=json.dumps(payload)
        )
        return timing


def _ratio_figure(
    report: Report, label: str, ours: list[Timing], theirs: list[Timing], target: float | None
) -> None:
    ratios = [a.seconds / b.seconds for a, b in zip(ours, theirs, strict=True)]
    ratio = median(ratios)
    report.add(
        Figure(
            SECTION,
            f"{label}: median ratio opapprove / Node SDK",
            f"{ratio:.2f}",
            f"<= {target:g}" if target is not None else "",
            ratio <= target if target is not None else None,
            note=f"opapprove {ms(median([t.seconds for t in ours]))}"
            f" ({ours[0].requests} req, chain {ours[0].chain}),"
            f" Node {ms(median([t.seconds for t in theirs]))}"
            f" ({theirs[0].requests} req, chain {theirs[0].chain})",
        )
    )


def run(report: Report, *, runs: int = 5, latency: float = DEFAULT_LATENCY) -> None:
    heading(
        f"2. `quote start` and the rest of the flow as processes: opapprove vs the Node SDK"
        f" ({runs} alternating rounds, latency {ms(latency)}/request)"
    )
    if (
        shutil.which("node") is None
        or not (BENCH.parent / "tests/interop/node_modules/@interledger/open-payments").is_dir()
    ):
        say("skipped: needs node and `npm ci` in tests/interop (make bench does it)")
        return
    cold_op: list[Timing] = []
    warm_op: list[Timing] = []
    start_node: list[Timing] = []
    finish_op: list[Timing] = []
    finish_node: list[Timing] = []
    with workdir("node") as work:
        seller = new_seller(work)
        write_config(work)
        with SandboxProcess([seller], latency=latency) as sandbox:
            runner = Runner(sandbox, seller, work)
            # Untimed: writes the .pyc files and fills the disk cache for both sides.
            runner.op_start(runner.new_store(-1), -1)
            runner.node_start()
            for n in range(runs):
                store = runner.new_store(n)
                node_first = n % 2 == 1
                if node_first:
                    node_timing, node_started = runner.node_start()
                cold, cold_url = runner.op_start(store, n)
                warm, _ = runner.op_start(store, n + 1000)
                if not node_first:
                    node_timing, node_started = runner.node_start()
                cold_op.append(cold)
                warm_op.append(warm)
                start_node.append(node_timing)
                if node_first:
                    finish_node.append(runner.node_finish(node_started))
                finish_op.append(runner.op_finish(store, cold_url))
                if not node_first:
                    finish_node.append(runner.node_finish(node_started))
                say(
                    f"round {n + 1}: opapprove cold {ms(cold.seconds)}, warm {ms(warm.seconds)},"
                    f" finish {ms(finish_op[-1].seconds)}; Node start"
                    f" {ms(node_timing.seconds)}, finish {ms(finish_node[-1].seconds)}"
                )
            # What each process costs besides its round trips.
            sandbox.set_latency(0.0)
            fixed_op = [runner.op_start(store, 2000 + n)[0].seconds for n in range(3)]
            fixed_node = [runner.node_start()[0].seconds for _ in range(3)]
    _ratio_figure(report, "quote start cold", cold_op, start_node, COLD_TARGET)
    _ratio_figure(report, "quote start warm", warm_op, start_node, WARM_TARGET)
    _ratio_figure(
        report,
        "finish (continue, pay, check; opapprove also the receipt)",
        finish_op,
        finish_node,
        None,
    )
    report.add(
        Figure(
            SECTION,
            "fixed cost without latency: opapprove warm / Node",
            f"{ms(median(fixed_op))} / {ms(median(fixed_node))}",
            note="process start, imports, CPU: what the round trips come on top of",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY)
    args = parser.parse_args()
    run(Report(), runs=args.runs, latency=args.latency)


if __name__ == "__main__":
    main()
