"""Files the CLI writes for people and tools to read: reports, JUnit XML, key files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from opapprove.cli.errors import CliError


def write_whole(path: Path, content: str | bytes) -> None:
    """Write ``path`` whole or not at all, mode 0600, into a folder that exists.

    A reader (a browser, a CI dashboard, the next run) never sees half a file: the content
    goes to a temporary file beside it, which then replaces it in one step.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(path: Path, content: str, *, what: str, hint: str) -> None:
    """``write_whole`` for a file an option named, creating its folder; a failure is one
    line saying which file."""
    target = path.expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_whole(target, content)
    except OSError as exc:
        raise CliError(f"cannot write {what} {path}: {exc.strerror or exc}", hint=hint) from exc
