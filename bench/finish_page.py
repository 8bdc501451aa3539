"""(6) The buyer's finish page: time to first byte, and time until it says "Payment complete".

A real `opapprove listen` in its own process (as a user runs it) and the bench sandbox in
another, on loopback, with the wallet's ``continue.wait`` at 5 s (Rafiki's default) and
the usual injected latency per wallet request. For each run: a quote is started, the
sandbox approves it, and the bench plays the buyer's browser: it GETs the finish URL
(timing the first byte of the answer on a raw socket), then loads the same URL again
every 50 ms, as the page's own refresh would, until the page says "Payment complete".

Target: first byte <= 100 ms on loopback. Before issue 11 the first byte came only after
the continue.wait and the payment (time to first byte = time to completion).

    .venv/bin/python bench/finish_page.py [--runs 3] [--latency 0.1] [--wait 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from common import (
    DEFAULT_LATENCY,
    PYTHON,
    ROOT,
    Figure,
    Report,
    SandboxProcess,
    clean_env,
    heading,
    median,
    ms,
    new_seller,
    say,
    workdir,
)
from round_trips import add_seller

SECTION = "finish page"
TTFB_TARGET = 0.100
POLL = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[float, float, str]:
    """GET on a fresh connection: (seconds to the first byte, to the last, the body)."""
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}"
    t0 = time.perf_counter()
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/html\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = sock.recv(1)
        t_first = time.perf_counter() - t0
        # The page is whole when Content-Length bytes of body are in (not when the server
        # gets round to closing the connection: a browser renders before that).
        while not _whole(data) and (chunk := sock.recv(65536)):
            data += chunk
    return t_first, time.perf_counter() - t0, data.decode("utf-8", "replace")


def _whole(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def wait_until_up(url: str, proc: subprocess.Popen[str]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"the listener exited ({proc.returncode})")
        try:
            get(f"{url}/health?x=1")
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the listener did not start")


async def start_quote(store_path: Path, config: Path, sandbox_url: str, offer: str) -> str:
    from opapprove.approvals.flow import Flow
    from opapprove.approvals.store import Store
    from opapprove.settings import load_settings

    settings = load_settings(config, store=store_path, seller_id="s")
    with Store(store_path) as store:
        async with Flow(store, settings) as flow:
            pending = await flow.start_quote(
                offer_id=offer, buyer_wallet=f"{sandbox_url}/buyer", amount="12.34"
            )
    assert pending.interact_redirect, pending
    return pending.interact_redirect


def one_run(
    sandbox: SandboxProcess, store_path: Path, config: Path, listener: str, n: int
) -> dict[str, float]:
    redirect = asyncio.run(start_quote(store_path, config, sandbox.url, f"bench-finish-{n}"))
    finish_url = sandbox.approve(redirect)
    assert finish_url.startswith(listener), finish_url
    t0 = time.perf_counter()
    ttfb, whole, body = get(finish_url)
    assert "completing the payment" in body, body[-500:]
    loads = 1
    while 'data-state="completed"' not in body:
        if time.perf_counter() - t0 > 120:
            raise RuntimeError(f"not complete after 120 s: {body[-500:]}")
        time.sleep(POLL)
        _, _, body = get(finish_url)
        loads += 1
    return {"ttfb": ttfb, "first_page": whole, "complete": time.perf_counter() - t0, "loads": loads}


def run(report: Report, *, latency: float = DEFAULT_LATENCY, runs: int = 3, wait: int = 5) -> None:
    heading(
        f"6. Finish page (a real `opapprove listen`, continue.wait {wait} s,"
        f" latency {ms(latency)}/wallet request)"
    )
    with workdir("finish") as work:
        seller = new_seller(work)
        port = free_port()
        listener = f"http://127.0.0.1:{port}"
        config = work / "config.toml"
        config.write_text(f'base_url = "{listener}"\nlisten_port = {port}\ntimeout = 30\n')
        store_path = work / "store.db"
        with SandboxProcess([seller], latency=latency, wait_seconds=wait) as sandbox:
            add_seller(store_path, "s", f"{sandbox.url}/seller", seller.key_id, seller.key_path)
            env = {**clean_env(work), "OPAPPROVE_SELLER_ID": "s"}
            proc = subprocess.Popen(
                [PYTHON, "-m", "opapprove", "--store", str(store_path), "listen"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                wait_until_up(listener, proc)
                results = []
                for n in range(runs):
                    results.append(one_run(sandbox, store_path, config, listener, n))
                    r = results[-1]
                    say(
                        f"run {n + 1}: first byte {ms(r['ttfb'])}, first page whole"
                        f' {ms(r["first_page"])}, "Payment complete" after {ms(r["complete"])}'
                        f" ({r['loads']:.0f} loads)"
                    )
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    ttfb = median([r["ttfb"] for r in results])
    report.add(
        Figure(
            SECTION,
            "time to first byte of the finish page (median)",
            ms(ttfb),
            f"<= {ms(TTFB_TARGET)}",
            ttfb <= TTFB_TARGET,
        )
    )
    report.add(
        Figure(
            SECTION,
            "time until the whole first page is in (median)",
            ms(median([r["first_page"] for r in results])),
        )
    )
    report.add(
        Figure(
            SECTION,
            f"time until the page says Payment complete (median; continue.wait {wait} s)",
            ms(median([r["complete"] for r in results])),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wait", type=int, default=5, help="the wallet's continue.wait, s")
    args = parser.parse_args()
    report = Report()
    run(report, latency=args.latency, runs=args.runs, wait=args.wait)
    for figure in report.figures:
        met = {True: "met", False: "NOT met", None: ""}[figure.met]
        say(f"{figure.name}: {figure.value} {figure.target} {met}".rstrip())


if __name__ == "__main__":
    main()
