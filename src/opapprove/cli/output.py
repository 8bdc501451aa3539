"""The only way the CLI writes: results on stdout, diagnostics on stderr, JSON or rich.

rich is imported on first use, so commands that fail early or print JSON never pay for it.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opapprove.cli.errors import ErrorReport
from opapprove.openpayments.redaction import redact_json

if TYPE_CHECKING:
    from rich.console import Console

Render = Callable[["Console"], None]

# What a server's text (a wallet's error description, its publicName, a body under --trace)
# must not bring to a terminal: control characters and escape sequences (clear the screen,
# retitle the window, write the clipboard, move the cursor back over what was printed) and
# the bidirectional overrides that reorder what is read. Tab and newline stay.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """``text`` with each character a terminal would act on instead of show as ``?``."""
    return _UNSAFE.sub("?", text)


def _console(file: Any) -> Console:
    from rich.console import Console
    from rich.text import Text

    class SafeConsole(Console):
        # Every str printed (and every str cell of a table) becomes Text here; rich strips
        # only a few control characters (BEL, BS, VT, FF, CR) and lets ESC through.
        def render_str(self, text: str, **kwargs: Any) -> Text:
            return super().render_str(terminal_safe(text), **kwargs)

    return SafeConsole(file=file, highlight=False, soft_wrap=True)


def _json_default(value: Any) -> Any:
    # Paths, enums, datetimes and the like: their text is what a script wants.
    return str(value)


_SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def contract(data: Any, *, _keep: frozenset[str] | None = None) -> Any:
    """The one JSON contract: camelCase keys, ISO-8601 UTC times for ``*_at`` epoch values.

    Keys that are data rather than names (a grant state counted per state) stay as spelled.
    """
    if _keep is None:
        from opapprove.approvals.records import State

        _keep = frozenset(str(s) for s in State)
    if isinstance(data, list):
        return [contract(item, _keep=_keep) for item in data]
    if not isinstance(data, dict):
        return data
    out: dict[Any, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or key in _keep or not _SNAKE.fullmatch(key):
            out[key] = contract(value, _keep=_keep)
            continue
        if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
            value = iso(value)
        out[_camel(key)] = contract(value, _keep=_keep)
    return out


def iso(ts: float | None) -> str | None:
    """An epoch time as the contract spells it: ``2026-01-31T12:00:00Z``."""
    if ts is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
            self._out = _console(sys.stdout)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = _console(sys.stderr)
        return self._err

    def _safe(self, data: Any) -> Any:
        return data if self.show_secrets else redact_json(data)

    def result(
        self,
        data: dict[str, Any],
        render: Render | None = None,
        *,
        ok: bool = True,
        exit_code: int = 0,
    ) -> None:
        """The command's answer: one JSON document with ``--json``, else ``render`` for people.

        ``ok=False`` is for a command that ran but found a problem (``wallet check``);
        ``exit_code`` is the code the command is about to exit with (the JSON's ``exitCode``).
        """
        if self.json_mode:
            doc = contract({"ok": ok, **self._safe(data), "exitCode": exit_code})
            sys.stdout.write(dumps(doc) + "\n")
            sys.stdout.flush()
        elif render is not None:
            render(self.out)
        else:
            self.out.print_json(dumps(self._safe(data)))

    def event(self, data: dict[str, Any]) -> None:
        """One JSON line per event (``listen``), flushed at once so pipes see it live."""
        sys.stdout.write(dumps(self._safe(data)) + "\n")
        sys.stdout.flush()

    def live(self) -> bool:
        """Whether spinners and progress bars may be drawn: a person watches stderr."""
        return not self.json_mode and sys.stderr.isatty()

    @contextmanager
    def waiting(self, text: str) -> Iterator[Callable[[str], None]]:
        """A spinner with the elapsed time on stderr while a wait lasts; nothing when not a
        terminal. Yields a function that changes the text."""
        if not self.live():
            yield lambda _text: None
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.err,
            transient=True,
        )
        with bar:
            task = bar.add_task(text, total=None)
            yield lambda new: bar.update(task, description=new)

    @contextmanager
    def progress(self, text: str, total: int) -> Iterator[Callable[[bool], None]]:
        """A progress bar on stderr for long work: done / total, rate, time left, failures.

        Yields ``advance(failed)``; nothing is drawn when not a terminal."""
        if not self.live() or total <= 1:
            yield lambda _failed: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        started = time.monotonic()
        failed = 0
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[failed]}"),
            console=self.err,
            transient=True,
        )
        with bar:
            task = bar.add_task(text, total=total, rate="", failed="")

            def advance(was_failure: bool) -> None:
                nonlocal failed
                failed += was_failure
                done = bar.tasks[0].completed + 1
                rate = done / max(time.monotonic() - started, 1e-6)
                bar.update(
                    task,
                    advance=1,
                    rate=f"{rate:.1f}/s",
                    failed=f"{failed} failed" if failed else "",
                )

            yield advance

    def info(self, message: str) -> None:
        """Progress for people, on stderr; silent with ``--json`` so stderr stays for errors."""
        if not self.json_mode:
            self.err.print(message, markup=False)

    def warn(self, message: str) -> None:
        self._stderr_line(f"warning: {message}")

    def error(self, report: ErrorReport) -> None:
        if self.json_mode:
            sys.stdout.write(dumps(contract(report.to_json())) + "\n")
            sys.stdout.flush()
        self._stderr_line(report.line())

    def raw_stderr(self, text: str) -> None:
        text = terminal_safe(text)
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()

    def _stderr_line(self, text: str) -> None:
        # Plain write: an error line must come out even if rich is what failed.
        sys.stderr.write(terminal_safe(text) + "\n")
        sys.stderr.flush()
