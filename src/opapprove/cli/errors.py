"""Turning any exception into one line for people, one JSON object for machines, and an exit code.

Only exception *classes* are looked at here; heavy modules are imported lazily and only if
they are already loaded (an error from a module that was never imported cannot occur).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from opapprove.cli import exitcodes
from opapprove.cli.redact import redact_json, redact_text


class CliError(Exception):
    """An error the CLI itself detects (bad option combination, missing seller, file exists)."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        kind: str = "usage",
        exit_code: int = exitcodes.USAGE,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.kind = kind
        self.exit_code = exit_code


def config_error(message: str, hint: str | None = None) -> CliError:
    return CliError(message, hint=hint, kind="configuration", exit_code=exitcodes.CONFIG)


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
        return {"ok": False, "error": err, "exit_code": self.exit_code}


def _loaded(module: str) -> Any:
    return sys.modules.get(module)


def _text(value: object) -> str:
    return str(value) if value is not None else ""


def classify(exc: BaseException) -> ErrorReport:
    """Map an exception to what the user sees. Unknown exceptions are 'unexpected' (exit 1)."""
    if isinstance(exc, CliError):
        return ErrorReport(exc.message, exc.hint, exc.kind, exc.exit_code)

    click_exc = _click_usage(exc)
    if click_exc is not None:
        return click_exc

    report = _from_openpayments(exc)
    if report is not None:
        return report

    for name in ("opapprove.approvals.errors", "opapprove.approvals.flow"):
        module = _loaded(name)
        if module is not None and isinstance(exc, getattr(module, "FlowError", ())):
            status = getattr(exc, "status", None)
            code = getattr(exc, "code", None)
            pending_id = getattr(exc, "pending_id", None)
            return ErrorReport(
                _text(getattr(exc, "message", exc)),
                getattr(exc, "hint", None),
                _text(getattr(exc, "kind", "flow")) or "flow",
                int(getattr(exc, "exit_code", exitcodes.UNEXPECTED)),
                status=status if isinstance(status, int) else None,
                code=code if isinstance(code, str) else None,
                # Scripts need the grant to look at (or replay) after a failed step.
                details={"pendingId": pending_id} if pending_id else {},
            )

    settings = _loaded("opapprove.settings")
    if settings is not None and isinstance(exc, getattr(settings, "SettingsError", ())):
        return ErrorReport(
            _text(getattr(exc, "message", exc)),
            getattr(exc, "hint", None),
            "configuration",
            exitcodes.CONFIG,
        )

    store = _loaded("opapprove.approvals.store")
    if store is not None and isinstance(exc, getattr(store, "StoreError", ())):
        return ErrorReport(
            _text(getattr(exc, "message", exc)),
            getattr(exc, "hint", None),
            "store",
            exitcodes.CONFIG,
        )

    if isinstance(exc, KeyboardInterrupt):
        return ErrorReport("interrupted", None, "interrupted", exitcodes.INTERRUPTED)
    if isinstance(exc, PermissionError | FileNotFoundError | IsADirectoryError):
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


def _from_openpayments(exc: BaseException) -> ErrorReport | None:
    errors = _loaded("opapprove.openpayments.errors")
    if errors is None or not isinstance(exc, errors.OpenPaymentsError):
        return None
    message, hint = exc.message, exc.hint
    client = _loaded("opapprove.openpayments.client")
    if client is not None and isinstance(exc, client.GrantTimeout):
        return ErrorReport(message, hint, "timeout", exitcodes.TIMEOUT)
    urls = _loaded("opapprove.openpayments.urls")
    if urls is not None and isinstance(exc, urls.InsecureUrlError):
        return ErrorReport(message, hint, "insecure_url", exitcodes.USAGE)
    if isinstance(exc, errors.TransportError):
        return ErrorReport(message, hint, "transport", exitcodes.TRANSPORT)
    if isinstance(exc, errors.ResponseError):
        kind = "invalid_response" if isinstance(exc, errors.InvalidResponse) else "refused"
        return ErrorReport(
            message,
            hint,
            kind,
            exitcodes.REFUSED,
            status=exc.status,
            code=exc.code,
            details=dict(exc.details or {}),
        )
    if isinstance(exc, errors.KeyLoadError):
        return ErrorReport(message, hint, "key", exitcodes.CONFIG)
    if isinstance(exc, errors.SignatureError | errors.InteractionHashError):
        return ErrorReport(message, hint, "verification", exitcodes.VERIFICATION)
    if isinstance(exc, errors.WalletAddressError):
        return ErrorReport(message, hint, "wallet_address", exitcodes.USAGE)
    if isinstance(exc, errors.AmountError):
        return ErrorReport(message, hint, "amount", exitcodes.USAGE)
    return ErrorReport(message, hint, "open_payments", exitcodes.UNEXPECTED)
