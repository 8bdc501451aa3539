"""The only way the CLI writes: results on stdout, diagnostics on stderr, JSON or rich.

rich is imported on first use, so commands that fail early or print JSON never pay for it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opapprove.cli.errors import ErrorReport
from opapprove.openpayments.redaction import redact_json

if TYPE_CHECKING:
    from rich.console import Console

Render = Callable[["Console"], None]


def _json_default(value: Any) -> Any:
    # Paths, enums, datetimes and the like: their text is what a script wants.
    return str(value)


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=_json_default)


class Output:
    def __init__(self, *, json_mode: bool = False, show_secrets: bool = False) -> None:
        self.json_mode = json_mode
        self.show_secrets = show_secrets
        self._out: Console | None = None
        self._err: Console | None = None

    @property
    def out(self) -> Console:
        if self._out is None:
            from rich.console import Console

            self._out = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            from rich.console import Console

            self._err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        return self._err

    def _safe(self, data: Any) -> Any:
        return data if self.show_secrets else redact_json(data)

    def result(
        self, data: dict[str, Any], render: Render | None = None, *, ok: bool = True
    ) -> None:
        """The command's answer: one JSON document with ``--json``, else ``render`` for people.

        ``ok=False`` is for a command that ran but found a problem (``wallet check``).
        """
        if self.json_mode:
            sys.stdout.write(dumps({"ok": ok, **self._safe(data)}) + "\n")
            sys.stdout.flush()
        elif render is not None:
            render(self.out)
        else:
            self.out.print_json(dumps(self._safe(data)))

    def event(self, data: dict[str, Any]) -> None:
        """One JSON line per event (``listen``), flushed at once so pipes see it live."""
        sys.stdout.write(dumps(self._safe(data)) + "\n")
        sys.stdout.flush()

    def info(self, message: str) -> None:
        """Progress for people, on stderr; silent with ``--json`` so stderr stays for errors."""
        if not self.json_mode:
            self.err.print(message, markup=False)

    def warn(self, message: str) -> None:
        self._stderr_line(f"warning: {message}")

    def error(self, report: ErrorReport) -> None:
        if self.json_mode:
            sys.stdout.write(dumps(report.to_json()) + "\n")
            sys.stdout.flush()
        self._stderr_line(report.line())

    def raw_stderr(self, text: str) -> None:
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()

    def _stderr_line(self, text: str) -> None:
        # Plain write: an error line must come out even if rich is what failed.
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
