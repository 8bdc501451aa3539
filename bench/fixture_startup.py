"""What the pytest plugin costs a test session: ``op_sandbox`` start-up, measured.

Three figures, medians over fresh runs:
- ``running_sandbox()`` start and stop, in a warm process (a thread binds and listens);
- one pytest session of one empty test, with and without the ``op_sandbox`` fixture, in
  fresh processes: the difference is what the plugin adds to a session (imports included);
- ``op_seller`` (a key made, written 0600 and published through ``/_admin/keys``).

    .venv/bin/python bench/fixture_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from opapprove.testing import make_seller, running_sandbox

EMPTY = "def test_nothing():\n    pass\n"
USES = "def test_sandbox(op_sandbox):\n    assert op_sandbox.buyer_url\n"


def _median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms (min {min(values) * 1000:.0f})"


def in_process(runs: int) -> None:
    start, stop, seller = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            t0 = time.perf_counter()
            with running_sandbox() as sandbox:
                t1 = time.perf_counter()
                make_seller(sandbox, Path(tmp))
                t2 = time.perf_counter()
            t3 = time.perf_counter()
            start.append(t1 - t0)
            seller.append(t2 - t1)
            stop.append(t3 - t2)
    print(f"  running_sandbox() start, warm process     {_median_ms(start)}")
    print(f"  running_sandbox() stop                    {_median_ms(stop)}")
    print(f"  op_seller (key, file, /_admin/keys)       {_median_ms(seller)}")


def session(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = {"empty": Path(tmp, "test_empty.py"), "op_sandbox": Path(tmp, "test_uses.py")}
        files["empty"].write_text(EMPTY)
        files["op_sandbox"].write_text(USES)
        times: dict[str, list[float]] = {name: [] for name in files}
        for _ in range(runs):
            for name, path in files.items():
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
                    check=True,
                    capture_output=True,
                    cwd=tmp,
                )
                times[name].append(time.perf_counter() - t0)
    added = [u - e for u, e in zip(times["op_sandbox"], times["empty"], strict=True)]
    print(f"  pytest session, one empty test            {_median_ms(times['empty'])}")
    print(f"  pytest session, one op_sandbox test       {_median_ms(times['op_sandbox'])}")
    print(f"  what op_sandbox adds to a session         {_median_ms(added)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print("== op_sandbox start-up (pytest plugin)")
    in_process(args.runs)
    session(args.runs)


if __name__ == "__main__":
    main()
