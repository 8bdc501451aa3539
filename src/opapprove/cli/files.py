"""Files the CLI writes for people and tools to read: reports, JUnit XML, key files."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from opapprove.cli.errors import CliError


def write_whole(path: Path, content: str | bytes, *, private: bool = True) -> None:
    """Write ``path`` whole or not at all, into a folder that exists.

    A reader (a browser, a CI dashboard, the next run) never sees half a file: the content
    goes to a temporary file beside it, which then replaces it in one step. A private file
    (a key) is 0600; any other (a report with no secret in it) gets what the umask allows,
    so a CI uploader running as another user can read it.
    """
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(path: Path, content: str, *, what: str, hint: str) -> None:
    """``write_whole`` for a report an option named (readable as the umask allows), creating
    its folder; a failure is one line saying which file."""
    target = path.expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_whole(target, content, private=False)
    except OSError as exc:
        raise CliError(f"cannot write {what} {path}: {exc.strerror or exc}", hint=hint) from exc
