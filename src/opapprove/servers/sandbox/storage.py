"""SQLite persistence for ``--state FILE``: one row per record, written in one transaction."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from opapprove.servers.sandbox.records import Record, to_data

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
"""


SQLITE_HEADER = b"SQLite format 3\x00"


def check_state_file(path: Path) -> None:
    """Refuse a file that is not SQLite before anything touches it (its mode included)."""
    from opapprove.servers.sandbox.config import SandboxConfigError

    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SandboxConfigError(
            f"cannot read the state file {path}: {exc.strerror or exc}"
        ) from exc
    if head and head != SQLITE_HEADER:
        raise SandboxConfigError(
            f"{path} is not a sandbox state file (not SQLite): give a new file name, or the "
            "file an earlier `opapprove sandbox --state` made"
        )


class SqliteStorage:
    """Rows ``(kind, id, json)``; the sandbox state is small, so it loads everything at start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        check_state_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Tokens and shared secrets live here: the file is the owner's only.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
        # The lock in SandboxState serialises all use; uvicorn and test threads share it.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)

    def load(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for kind, data in self._db.execute("SELECT kind, data FROM records ORDER BY rowid"):
            out.setdefault(kind, []).append(json.loads(data))
        return out

    def write(self, saved: Iterable[Record], deleted: Iterable[tuple[str, str]] = ()) -> None:
        rows = [(r.kind, r.id, json.dumps(to_data(r), separators=(",", ":"))) for r in saved]
        gone = list(deleted)
        if not rows and not gone:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO records (kind, id, data) VALUES (?, ?, ?) "
                "ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
                rows,
            )
            self._db.executemany("DELETE FROM records WHERE kind = ? AND id = ?", gone)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
