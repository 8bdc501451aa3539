"""Finds Node.js and the pinned @interledger packages that the interop tests run against.

Without them the tests skip locally, but fail in CI (CI=true), where a skip would hide
that nothing was checked against the official code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.missing_parts import skip_or_fail

INTEROP_DIR = Path(__file__).resolve().parent
NODE_MODULES = INTEROP_DIR / "node_modules"
REQUIRED_PACKAGES = ("@interledger/http-signature-utils", "@interledger/open-payments")
HOW_TO_FIX = "install Node.js 20 and run `npm ci` in tests/interop (make test does)"
NODE_TIMEOUT_S = 120


@dataclass(frozen=True)
class NodeEnv:
    node: str
    directory: Path

    def run_script(self, script: str, payload: Any, *, timeout: float = NODE_TIMEOUT_S) -> Any:
        """Run ``script`` (a file in tests/interop) with ``payload`` as JSON on stdin."""
        proc = subprocess.run(
            [self.node, str(self.directory / script)],
            input=json.dumps(payload).encode("utf-8"),
            capture_output=True,
            cwd=self.directory,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"node {script} exited {proc.returncode}:\n"
                f"{proc.stderr.decode('utf-8', 'replace')[-4000:]}"
            )
        return json.loads(proc.stdout)


def _missing_reason() -> str | None:
    node = shutil.which("node")
    if node is None:
        return f"node is not on PATH: {HOW_TO_FIX}"
    for package in REQUIRED_PACKAGES:
        if not (NODE_MODULES / package / "package.json").is_file():
            return f"{package} is not in tests/interop/node_modules: {HOW_TO_FIX}"
    return None


@pytest.fixture(scope="session")
def node_env() -> NodeEnv:
    reason = _missing_reason()
    if reason is not None:
        skip_or_fail(reason, tests="the interop tests")
    node = shutil.which("node")
    assert node is not None
    return NodeEnv(node=node, directory=INTEROP_DIR)


@pytest.fixture(scope="session")
def sigtool(node_env: NodeEnv) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Run a batch of sign/verify/stringify ops through the official package in one node call."""

    def run(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = node_env.run_script("sigtool.mjs", ops)
        assert isinstance(results, list) and len(results) == len(ops)
        return results

    return run
