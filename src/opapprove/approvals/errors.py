"""The one error the approval flow raises: what happened, what to do, and an exit code."""

from __future__ import annotations

# Exit codes by kind; the CLI documents the same numbers (cli/exitcodes.py).
EXIT_CODES = {
    "input": 2,
    "config": 3,
    "transport": 4,
    "wallet": 5,
    "protocol": 5,
    "rejected": 6,
    "expired": 6,
    "stale": 6,
    "verification": 7,
    "timeout": 8,
    "waiting": 8,
    "busy": 1,
}


class FlowError(Exception):
    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        kind: str = "protocol",
        status: int | None = None,
        code: str | None = None,
        pending_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.kind = kind
        self.status = status
        self.code = code
        self.pending_id = pending_id

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.kind, 1)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} — {self.hint}"
