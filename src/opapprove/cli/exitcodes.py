"""The exit codes as the CLI documents them; the numbers and the kind table live in
``opapprove.errors`` (one table for every layer)."""

from __future__ import annotations

from opapprove.errors import (
    CONFIG,
    INTERRUPTED,
    MEANINGS,
    NOT_APPROVED,
    OK,
    REFUSED,
    TIMEOUT,
    TRANSPORT,
    UNCHECKED,
    UNEXPECTED,
    USAGE,
    VERIFICATION,
    exit_code,
    for_state,
)

__all__ = [
    "CONFIG",
    "INTERRUPTED",
    "MEANINGS",
    "NOT_APPROVED",
    "OK",
    "REFUSED",
    "TIMEOUT",
    "TRANSPORT",
    "UNCHECKED",
    "UNEXPECTED",
    "USAGE",
    "VERIFICATION",
    "epilog",
    "exit_code",
    "for_state",
]


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
