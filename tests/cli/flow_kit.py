"""A served sandbox plus a CLI whose default seller is set up on it (tests/cli and tests/e2e).

tests/cli shares one sandbox per module (each test has its own store); tests/e2e gets a
fresh sandbox per test, since it moves the sandbox's clock.

The sandbox's clock starts at the real time (so expiries printed by the CLI make sense)
and is a FakeClock the test advances to expire interactions and quotes.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opapprove.approvals.store import Store
from opapprove.cli.main import main
from opapprove.openpayments.keys import write_private_key
from tests.cli.conftest import Cli
from tests.ports import free_port
from tests.sandbox_fixtures import FakeClock, Sandbox, ServedWallets, make_sandbox


@dataclass
class Kit(ServedWallets):
    cli: Cli
    box: Sandbox
    url: str
    key_path: Path
    listen_port: int

    @property
    def listener(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def approve(self, redirect: str, *, reject: bool = False) -> str:
        """What a person's click on the consent page does; returns the finish URL."""
        url: str = self.box.state.approve(redirect, reject=reject)
        return url

    def payments(self) -> list[Any]:
        """The sandbox's outgoing payments for this test's grants (the sandbox may be shared)."""
        if not self.cli.store.exists():
            return []
        with Store(self.cli.store) as store:
            mine = {p.id for p in store.list_pending()}
        return [
            p
            for p in self.box.state.outgoing_payments()
            if (p.metadata or {}).get("pendingId") in mine
        ]

    # -- the CLI in this process (CliRunner) ----------------------------------------------
    def start(self, offer: str = "o1", amount: str = "12.34", *extra: str) -> dict[str, Any]:
        result = self.cli(
            "--json",
            "quote",
            "start",
            "--offer",
            offer,
            "--buyer",
            self.buyer,
            "--amount",
            amount,
            *extra,
        )
        assert result.exit_code == 0, result.output
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc

    # -- the CLI as a subprocess ------------------------------------------------------------
    def run(self, *args: str, stdin: str | None = None, timeout: float = 60) -> Proc:
        done = subprocess.run(
            self.cli.argv(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.cli.subprocess_env(),
            timeout=timeout,
            check=False,
        )
        proc = Proc(args, done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.cli.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.cli.subprocess_env(),
        )

    def start_sub(self, offer: str = "o1", amount: str = "12.34") -> dict[str, Any]:
        proc = self.run(
            "--json", "quote", "start", "--offer", offer, "--buyer", self.buyer, "--amount", amount
        )
        assert proc.code == 0, proc.stderr
        return proc.json()


@dataclass
class Proc:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.stdout)
        return doc

    def error_line(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("error: "), lines[0]
        return lines[0]


@contextmanager
def served_sandbox(**overrides: Any) -> Iterator[tuple[Sandbox, str]]:
    """A fresh sandbox on loopback, its clock set to now; spec-checked when it closes."""
    box = make_sandbox(**overrides)
    if isinstance(box.clock, FakeClock):  # a test may bring the real clock instead
        box.clock.now = time.time()
    with box.served() as server:
        yield box, server.url
    box.recorder.assert_clean()
    box.state.close()


def setup_kit(cli: Cli, box: Sandbox, url: str) -> Kit:
    """The default seller added with `opapprove seller add`; base_url on a free port."""
    key_path = cli.tmp / "seller-key.pem"
    write_private_key(key_path, box.key)
    port = free_port()
    cli.write_config(f'base_url = "http://127.0.0.1:{port}"\nlisten_port = {port}\n')
    code = main(
        [
            "--store",
            str(cli.store),
            "--config",
            str(cli.config),
            "seller",
            "add",
            "default-seller",
            "--wallet",
            f"{url}/seller",
            "--key-id",
            box.key_id,
            "--key",
            str(key_path),
        ]
    )
    assert code == 0
    return Kit(cli, box, url, key_path, port)


@contextmanager
def flow_kit(cli: Cli, **overrides: Any) -> Iterator[Kit]:
    with served_sandbox(**overrides) as (box, url):
        yield setup_kit(cli, box, url)
