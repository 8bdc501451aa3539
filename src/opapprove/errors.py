"""The error contract every layer shares: what happened, what to do, a kind and its exit code.

A leaf module (it imports nothing of opapprove) so that ``openpayments/``, ``approvals/``,
``settings`` and ``diagnostics/`` can all build on it, and the CLI reads one table.
"""

from __future__ import annotations

# Exit codes: a contract with scripts and CI, so each number keeps its meaning forever.
OK = 0
UNEXPECTED = 1
USAGE = 2
CONFIG = 3
TRANSPORT = 4
REFUSED = 5
NOT_APPROVED = 6
VERIFICATION = 7
TIMEOUT = 8
UNCHECKED = 9
INTERRUPTED = 130

MEANINGS: dict[int, str] = {
    OK: "ok",
    UNEXPECTED: "unexpected error (rerun with --debug for the traceback)",
    USAGE: "usage or bad input",
    CONFIG: "configuration (no seller, bad key, bad config file or store)",
    TRANSPORT: "wallet or network unreachable",
    REFUSED: "the wallet refused (Open Payments error response)",
    NOT_APPROVED: "approval rejected, expired or cancelled",
    VERIFICATION: "verification failed (interaction hash or signature)",
    TIMEOUT: "timed out waiting",
    UNCHECKED: "could not be checked (sig verify on a capture with a masked Authorization header)",
    INTERRUPTED: "interrupted (Ctrl-C)",
}

# Every kind of error, spelled one way, and the exit code it ends a command with.
EXIT_CODES: dict[str, int] = {
    "usage": USAGE,
    "input": USAGE,
    "file": USAGE,
    "insecure_url": USAGE,
    "wallet_address": USAGE,
    "amount": USAGE,
    "config": CONFIG,
    "store": CONFIG,
    "key": CONFIG,
    "clock": CONFIG,
    "transport": TRANSPORT,
    "wallet": REFUSED,
    "protocol": REFUSED,
    "refused": REFUSED,
    "invalid_response": REFUSED,
    "rejected": NOT_APPROVED,
    "expired": NOT_APPROVED,
    "stale": NOT_APPROVED,
    "quote_refused": NOT_APPROVED,
    "verification": VERIFICATION,
    "timeout": TIMEOUT,
    "waiting": TIMEOUT,
    "busy": UNEXPECTED,
    "open_payments": UNEXPECTED,
    "unexpected": UNEXPECTED,
    "interrupted": INTERRUPTED,
}

# What a grant's final state means for a command that waited for it (status --watch, listen).
_BY_FINAL_STATE = {
    "completed": OK,
    "rejected": NOT_APPROVED,
    "expired": NOT_APPROVED,
    "cancelled": NOT_APPROVED,
    "failed": REFUSED,
    "partially_paid": REFUSED,
}


def exit_code(kind: str | None, default: int = UNEXPECTED) -> int:
    """The exit code for an error of ``kind``; ``default`` for a kind nobody declared."""
    return EXIT_CODES.get(kind or "", default)


def for_state(state: str) -> int | None:
    """The exit code for a grant that ended in ``state``; ``None`` while it is not final."""
    return _BY_FINAL_STATE.get(str(state))


class OpapproveError(Exception):
    """Base of every error opapprove raises on purpose. ``str(err)`` is one line.

    ``hint`` is what a person can do about it; ``kind`` (a key of ``EXIT_CODES``) says what
    sort of failure it is, per class or per instance; ``pending_id`` the grant it is about,
    if any, for scripts to look at or replay (``pendingId`` in ``--json``).
    """

    kind: str = "unexpected"

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        kind: str | None = None,
        pending_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.pending_id = pending_id
        if kind is not None:
            self.kind = kind

    @property
    def exit_code(self) -> int:
        return exit_code(self.kind)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} — {self.hint}"
