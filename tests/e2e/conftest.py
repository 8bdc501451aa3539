"""End-to-end: the CLI as a subprocess, over real loopback HTTP, against a served sandbox."""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.cli.conftest import Cli
from tests.cli.conftest import cli as cli  # the per-test store, config and XDG dirs
from tests.cli.flow_kit import Kit, flow_kit


@pytest.fixture
def kit(cli: Cli) -> Iterator[Kit]:
    with flow_kit(cli) as k:
        yield k


class Lines:
    """A subprocess's stdout, line by line, without ever blocking the test forever."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, wanted: Callable[[str], bool], timeout: float = 30) -> str:
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no matching line; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"the process ended first; saw {self.seen}")
            self.seen.append(line)
            if wanted(line):
                return line

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        """Wait for the exit; return (code, the rest of stdout, stderr)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        rest: list[str] = []
        while (line := self._queue.get(timeout=5)) is not None:
            rest.append(line)
        self.seen.extend(rest)
        assert self.proc.stderr is not None
        stderr = self.proc.stderr.read()
        assert "Traceback" not in stderr, stderr
        return code, "\n".join(rest), stderr
