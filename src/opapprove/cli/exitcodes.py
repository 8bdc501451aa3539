"""Exit codes: a contract with scripts and CI, so each number keeps its meaning forever."""

from __future__ import annotations

OK = 0
UNEXPECTED = 1
USAGE = 2
CONFIG = 3
TRANSPORT = 4
REFUSED = 5
NOT_APPROVED = 6
VERIFICATION = 7
TIMEOUT = 8
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
}


# What a grant's final state means for a command that waited for it (status --watch, listen).
_BY_FINAL_STATE = {
    "completed": OK,
    "rejected": NOT_APPROVED,
    "expired": NOT_APPROVED,
    "cancelled": NOT_APPROVED,
    "failed": REFUSED,
}


def for_state(state: str) -> int | None:
    """The exit code for a grant that ended in ``state``; ``None`` while it is not final."""
    return _BY_FINAL_STATE.get(str(state))


def epilog() -> str:
    # "\b" stops click from re-wrapping the table into one paragraph.
    lines = ["\b", "Exit codes:"]
    lines += [f"  {code}  {text}" for code, text in MEANINGS.items()]
    lines += [
        "\b",
        "Global options (--json, --debug, --trace, --trace-file, --show-secrets, --config,",
        "--store) may also be given after the command.",
    ]
    return "\n".join(lines)
