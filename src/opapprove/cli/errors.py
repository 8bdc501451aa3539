"""Turning any exception into one line for people, one JSON object for machines, and an exit code.

Every error raised on purpose is an ``OpapproveError``: its kind and exit code come from the
one table in ``opapprove.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opapprove.approvals.errors import FlowError
from opapprove.cli import exitcodes
from opapprove.errors import OpapproveError
from opapprove.openpayments.errors import ResponseError
from opapprove.openpayments.redaction import redact_json, redact_text


class CliError(OpapproveError):
    """An error the CLI itself detects (bad option combination, missing seller, file exists).

    ``exit_code`` is the kind's unless given (a wallet check's report may carry its own).
    """

    kind = "usage"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        kind: str = "usage",
        exit_code: int | None = None,
        pending_id: str | None = None,
    ) -> None:
        super().__init__(message, hint, kind=kind, pending_id=pending_id)
        self._exit_code = exit_code

    @property
    def exit_code(self) -> int:
        return super().exit_code if self._exit_code is None else self._exit_code


def config_error(message: str, hint: str | None = None) -> CliError:
    return CliError(message, hint=hint, kind="config")


def unknown_pending(pending_id: str, missing_store: Path | None = None) -> CliError:
    """``missing_store``: the store path when there is no store file there at all."""
    if missing_store is not None:
        # A store path that does not exist is more often a wrong --store or config than an
        # unknown id: the grant is in the store it was started with.
        return CliError(
            f"unknown pendingId {pending_id!r}: there is no store at {missing_store}",
            hint="point --store (or OPAPPROVE_STORE, or store in the config) at the store the"
            " grant was started with",
            pending_id=pending_id,
        )
    return CliError(
        f"unknown pendingId {pending_id!r}",
        hint="list grants with `opapprove pending list`",
        pending_id=pending_id,
    )


@dataclass
class ErrorReport:
    """What the user sees about one failure."""

    message: str
    hint: str | None
    kind: str
    exit_code: int
    status: int | None = None
    code: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f" — {self.hint}"
        # One line, always: embedded newlines from servers would break scripts reading stderr.
        return redact_text(" ".join(text.split()))

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {
            "message": redact_text(self.message),
            "hint": redact_text(self.hint) if self.hint else None,
            "kind": self.kind,
        }
        if self.status is not None:
            err["status"] = self.status
        if self.code is not None:
            err["code"] = self.code
        if self.details:
            err["details"] = redact_json(self.details)
        doc: dict[str, Any] = {"ok": False, "error": err, "exitCode": self.exit_code}
        pending_id = self.details.get("pendingId")
        if isinstance(pending_id, str):
            doc["pendingId"] = pending_id  # a field of its own, not only inside the message
        return doc


def interrupted(resume: tuple[str, str] | None) -> ErrorReport:
    """Ctrl-C: which grant was being waited on, and the command that carries on waiting."""
    if resume is None:
        return ErrorReport("interrupted", None, "interrupted", exitcodes.INTERRUPTED)
    pending_id, command = resume
    return ErrorReport(
        f"interrupted; grant {pending_id} is still open",
        f"resume with `{command}`",
        "interrupted",
        exitcodes.INTERRUPTED,
        details={"pendingId": pending_id},
    )


def classify(exc: BaseException) -> ErrorReport:
    """Map an exception to what the user sees. Unknown exceptions are 'unexpected' (exit 1)."""
    if isinstance(exc, OpapproveError):
        return _from_own(exc)

    click_exc = _click_usage(exc)
    if click_exc is not None:
        return click_exc

    if isinstance(exc, KeyboardInterrupt):
        return ErrorReport("interrupted", None, "interrupted", exitcodes.INTERRUPTED)
    # Any file the OS refused (permissions, a read-only file system, a full disk) is the
    # user's to fix, not a bug: say which file.
    if isinstance(exc, PermissionError | FileNotFoundError | IsADirectoryError) or (
        isinstance(exc, OSError) and getattr(exc, "filename", None)
    ):
        name = getattr(exc, "filename", None) or ""
        return ErrorReport(
            f"{exc.strerror or exc}: {name}".rstrip(": "),
            "check the path and its permissions",
            "file",
            exitcodes.USAGE,
        )
    return ErrorReport(
        f"unexpected {type(exc).__name__}: {exc}".rstrip(": "),
        "rerun with --debug for the traceback, and report it",
        "unexpected",
        exitcodes.UNEXPECTED,
    )


def _click_usage(exc: BaseException) -> ErrorReport | None:
    from typer import _click
    from typer.exceptions import Abort

    if isinstance(exc, _click.exceptions.UsageError):
        hint = "see --help"
        ctx = exc.ctx
        if ctx is not None:
            hint = f"see '{ctx.command_path} --help'"
        return ErrorReport(exc.format_message().rstrip("."), hint, "usage", exitcodes.USAGE)
    if isinstance(exc, _click.exceptions.ClickException):
        return ErrorReport(exc.format_message(), None, "usage", exc.exit_code)
    if isinstance(exc, Abort):
        return ErrorReport("aborted", None, "interrupted", exitcodes.INTERRUPTED)
    return None


def _from_own(exc: OpapproveError) -> ErrorReport:
    report = ErrorReport(exc.message, exc.hint, exc.kind, exc.exit_code)
    if isinstance(exc, ResponseError):
        report.status, report.code, report.details = exc.status, exc.code, dict(exc.details)
    elif isinstance(exc, FlowError):
        report.status, report.code = exc.status, exc.code
    if isinstance(exc, FlowError | CliError) and exc.pending_id:
        # Scripts need the grant to look at (or replay) after a failed step.
        report.details = {"pendingId": exc.pending_id}
    return report
