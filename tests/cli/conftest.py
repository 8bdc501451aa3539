"""CLI test fixtures: every run gets its own store, config and XDG dirs under tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from opapprove.cli.main import app

PROCESS_TIMEOUT = 60  # seconds; only guards against a hang


@dataclass
class Cli:
    tmp: Path
    store: Path
    config: Path
    env: dict[str, str]

    def __call__(self, *args: str, input: str | None = None) -> Result:
        args = _offline(args)
        runner = CliRunner()
        return runner.invoke(
            app,
            ["--store", str(self.store), "--config", str(self.config), *args],
            input=input,
            env=self.env,
        )

    def write_config(self, text: str) -> None:
        self.config.write_text(text, encoding="utf-8")

    def subprocess_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPAPPROVE_")}
        env.update(self.env)
        return env

    def run_process(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m opapprove`` with this CLI's store, config and environment, as its
        own process: what a person's terminal runs (text output captured)."""
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            env=self.subprocess_env(),
            timeout=PROCESS_TIMEOUT,
            check=False,
        )

    def argv(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "opapprove",
            "--store",
            str(self.store),
            "--config",
            str(self.config),
            *args,
        ]


def _offline(args: tuple[str, ...]) -> tuple[str, ...]:
    """`seller add` compares the key with the wallet's JWKS; tests reach loopback only."""
    if "add" not in args or "seller" not in args or "--no-check" in args:
        return args
    wallet = args[args.index("--wallet") + 1] if "--wallet" in args[:-1] else ""
    if wallet.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        return args
    return (*args, "--no-check")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    for name in list(os.environ):
        if name.startswith("OPAPPROVE_"):
            monkeypatch.delenv(name)
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "config.toml"
    config.write_text("", encoding="utf-8")
    yield Cli(tmp=tmp_path, store=tmp_path / "data" / "opapprove.db", config=config, env=env)


def one_error_line(result: Result) -> str:
    """The stderr of a failed run: exactly one line, starting with 'error: ', no traceback."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


KeyWriter = Callable[..., Any]


@pytest.fixture(scope="module")
def flow_sandbox() -> Iterator[tuple[Any, str]]:
    """One sandbox on loopback for a test module's flow commands (see tests/cli/flow_kit)."""
    from tests.cli.flow_kit import served_sandbox

    with served_sandbox() as served:
        yield served


@pytest.fixture
def kit(cli: Cli, flow_sandbox: tuple[Any, str]) -> Any:
    """A CLI with its own store whose default seller is set up on the module's sandbox."""
    from tests.cli.flow_kit import setup_kit

    return setup_kit(cli, *flow_sandbox)
