"""What every bench script shares: the sandbox process, request spans, chains, stats, output.

The sandbox runs in its own process (``bench/sandbox_server.py``) so that neither the
client under test nor the bench driver competes with it for the GIL; it injects the
per-request latency (an async sleep, so concurrent requests overlap as they would on a
real network) and records when each request started and ended, server-side.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
OPAPPROVE = str(Path(PYTHON).with_name("opapprove"))
INTEROP = ROOT / "tests" / "interop"
DEFAULT_LATENCY = 0.1
# A ``trio`` that cannot be imported, so a child process sees what a user install has.
NO_TRIO = BENCH / "user_install"


# ---------------------------------------------------------------------------- output


@dataclass
class Figure:
    """One printed figure: what, how much, the target and whether it was met."""

    section: str
    name: str
    value: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    def line(self) -> str:
        verdict = {True: "MET", False: "NOT MET", None: ""}[self.met]
        target = f"  (target {self.target}: {verdict})" if self.target else ""
        note = f"  [{self.note}]" if self.note else ""
        return f"  {self.name:<52} {self.value:>16}{target}{note}"


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(figure.line(), flush=True)
        return figure

    def to_json(self) -> list[dict[str, Any]]:
        return [f.__dict__ for f in self.figures]


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = "not found"
    try:
        node = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "node": node or "not found",
        "os": platform.platform(),
    }


# ---------------------------------------------------------------------------- spans


@dataclass(frozen=True)
class Span:
    """One request as the sandbox saw it (seconds on the sandbox's monotonic clock)."""

    method: str
    path: str
    start: float
    end: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Span:
        return cls(data["method"], data["path"], data["start"], data["end"])


def longest_chain(spans: Iterable[Span]) -> int:
    """The most requests that ran strictly one after another (each started after one ended).

    Concurrent requests overlap, so they never sit in one chain; this is the number of
    round trips the run could not avoid waiting for, in sequence.
    """
    ordered = sorted(spans, key=lambda s: s.start)
    best: list[int] = []
    for i, span in enumerate(ordered):
        before = [best[j] for j in range(i) if ordered[j].end <= span.start]
        best.append(1 + max(before, default=0))
    return max(best, default=0)


# ---------------------------------------------------------------------------- sandbox


@dataclass
class Seller:
    """A seller key and its store row data; the sandbox publishes ``jwk``."""

    key_path: Path
    key_id: str
    jwk: dict[str, str]
    pem: str


def new_seller(work: Path) -> Seller:
    from opapprove.openpayments.keys import (
        generate_private_key,
        private_key_pem,
        public_jwk,
        write_private_key,
    )

    key = generate_private_key()
    kid = f"bench-{uuid.uuid4()}"
    path = work / f"seller-{kid}.pem"
    write_private_key(path, key)
    return Seller(path, kid, public_jwk(key, kid).to_dict(), private_key_pem(key).decode("ascii"))


class SandboxProcess:
    """``bench/sandbox_server.py`` in a child process; ``.url`` is its loopback origin."""

    def __init__(
        self,
        sellers: Sequence[Seller],
        *,
        latency: float,
        wait_seconds: int = 0,
        profile: Path | None = None,
        buyer_balance: int = 10**15,
    ) -> None:
        config = {
            "latency": latency,
            "wait_seconds": wait_seconds,
            "seller_keys": [s.jwk for s in sellers],
            "buyer_balance": buyer_balance,
            "profile": str(profile) if profile else None,
        }
        self.proc = subprocess.Popen(
            [PYTHON, str(BENCH / "sandbox_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(config) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.proc.kill()
            raise RuntimeError(f"the bench sandbox did not start (it said {line!r})")
        self.url = line
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def spans(self) -> list[Span]:
        """The requests served since the last call (and forget them)."""
        data = self.http.post("/_bench/spans").json()
        return [Span.from_dict(d) for d in data]

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get("/_bench/stats").json()
        return result

    def approve(self, redirect: str) -> str:
        answer = self.http.post("/_admin/approve", json={"redirect": redirect})
        answer.raise_for_status()
        return str(answer.json()["finish_url"])

    def set_latency(self, seconds: float) -> None:
        self.http.post("/_admin/latency", json={"seconds": seconds}).raise_for_status()

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            assert self.proc.stdin
            self.proc.stdin.close()  # the server stops (and writes its profile) on EOF
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"opapprove-bench-{prefix}-") as name:
        yield Path(name)


def write_config(work: Path, base_url: str = "http://127.0.0.1:3999") -> Path:
    """A config file that isolates a run from the user's own config."""
    path = work / "config.toml"
    path.write_text(f'base_url = "{base_url}"\ntimeout = 30\n')
    return path


def clean_env(work: Path, *, user_install: bool = True) -> dict[str, str]:
    """The environment for an ``opapprove`` child, as a user's shell would have it.

    No OPAPPROVE_* from the caller, and bytecode caching on (a user's pip install has its
    .pyc files; this checkout's environment may turn writing them off). ``user_install``
    also hides trio: httpcore imports it whenever it is installed (~80 ms), and here it
    is only because selenium, a test dependency, needs it; opapprove does not.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPAPPROVE_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["OPAPPROVE_CONFIG"] = str(work / "config.toml")
    env["NO_COLOR"] = "1"
    if user_install:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(NO_TRIO), env.get("PYTHONPATH", "")) if p
        )
    return env


def timed_run(
    argv: Sequence[str], *, env: dict[str, str] | None = None, stdin: str | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, env=env, check=False, cwd=ROOT
    )
    return time.perf_counter() - t0, proc
