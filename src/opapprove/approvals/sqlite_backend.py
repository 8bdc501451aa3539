"""The store in one SQLite file: opening, header checks, migrations, durability, retries.

One file in WAL mode, shared by every opapprove process on the machine. Each write is one
short ``BEGIN IMMEDIATE`` transaction, retried while another process holds the write lock,
so concurrent processes wait for each other instead of failing with "database is locked".
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from opapprove.approvals.backend import OneConnection, StoreError, Tx, jitter, newer_schema
from opapprove.approvals.migrations import APPLICATION_ID, MIGRATIONS
from opapprove.approvals.store_errors import Meaning, explained

T = TypeVar("T")

SQLITE_MAGIC = b"SQLite format 3\x00"
SYNC_NORMAL = "NORMAL"
SYNC_FULL = "FULL"
BUSY_TIMEOUT_MS = 10_000
# On top of SQLite's own 10 s busy wait: a few more tries with growing pauses.
_RETRIES = 6


class _Connection(sqlite3.Connection):
    """A sqlite3 connection that is also a :class:`Tx`: no wrapper on the hot path."""

    returning = sqlite3.sqlite_version_info >= (3, 35, 0)
    writing_ctes = False

    def execute_locking(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.execute(sql, params)  # BEGIN IMMEDIATE already holds the write lock

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        row_id = self.execute(sql, params).lastrowid
        assert row_id is not None
        return row_id

    def insert_later(self, sql: str, params: Sequence[Any]) -> Callable[[], int]:
        row_id = self.insert(sql, params)
        return lambda: row_id


_BUSY = "locked|busy"  # SQLITE_BUSY, SQLITE_LOCKED: another connection has the lock
# What SQLite's error messages mean, tried in this order.
_MEANINGS = (
    Meaning(
        _BUSY,
        "store {path} stayed locked by another process while {what}",
        "try again; if it keeps happening, look for a hung opapprove process",
    ),
    Meaning(
        "readonly|read-only",
        "store {path} cannot be written: {text}",
        "check that this user may write the file and its folder",
    ),
    Meaning(
        "not a database|malformed",
        "store {path} is damaged or not a SQLite database ({text})",
        "restore it from a backup, or point --store at another file",
    ),
    Meaning(
        "unable to open",
        "cannot open store {path}: {text}",
        "check the path and that this user may read and write it",
    ),
)


def _is_busy(exc: sqlite3.Error) -> bool:
    return re.search(_BUSY, str(exc), re.IGNORECASE) is not None


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, the database's write lock taken at BEGIN: committed at the
    end of the block, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SQLiteBackend(OneConnection[_Connection]):
    """The store in one SQLite file. Safe to share between threads and processes."""

    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), "Store(path)")
        self.path = path
        self.migrated_from: int | None = 0  # the schema version the file had when opened
        self._conn = self._open()

    # -- opening ----------------------------------------------------------------------

    def _open(self) -> _Connection:
        path = self.path
        if path.is_dir():
            raise StoreError(
                f"store {path} is a directory, not a file",
                "give the path of a file, e.g. --store ~/opapprove.db",
            )
        self._create_file()
        self._check_header()
        try:
            conn = sqlite3.connect(
                str(path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
                factory=_Connection,
            )
        except sqlite3.Error as exc:
            raise self._error(exc, "opening it") from exc
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            # Before anything writes: switching to WAL rewrites the header of someone else's file.
            self._retrying(lambda: self._check_ours(conn), "reading it")
            self._retrying(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone(), "setup")
            # No fsync per commit: safe against process crashes, and a bulk replay stops
            # waiting on the disk six times a grant. Power loss may roll back the last few
            # commits; the one that guards money is synced anyway (durable writes).
            conn.execute(f"PRAGMA synchronous = {SYNC_NORMAL}")
            self._retrying(lambda: self._migrate(conn), "upgrading its schema")
        except BaseException:
            conn.close()
            raise
        self._match_sidecar_modes()
        return conn

    def _create_file(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder for store {path}: {exc.strerror or exc}",
                "choose another place with --store or OPAPPROVE_STORE",
            ) from exc
        try:
            # Created 0600 before SQLite sees it: the store holds access tokens.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            raise StoreError(
                f"cannot create store {path}: {exc.strerror or exc}",
                "choose another place with --store or OPAPPROVE_STORE",
            ) from exc
        os.close(fd)

    def _check_header(self) -> None:
        try:
            with self.path.open("rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(
                f"cannot read store {self.path}: {exc.strerror or exc}",
                "check the path and that this user may read and write it",
            ) from exc
        # A prefix is fine: another process may be writing a brand-new store's first page.
        if head != SQLITE_MAGIC[: len(head)]:
            raise StoreError(
                f"{self.path} is not an opapprove store (it is not a SQLite database); "
                "it was left untouched",
                "point --store or OPAPPROVE_STORE at another file",
            )

    def _check_ours(self, conn: sqlite3.Connection) -> None:
        # One statement, so one snapshot: another process may be creating the schema now.
        version, app_id, tables = conn.execute(
            "SELECT (SELECT user_version FROM pragma_user_version),"
            " (SELECT application_id FROM pragma_application_id),"
            " (SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%')"
        ).fetchone()
        fresh = version == 0 and app_id == 0 and tables == 0
        if not fresh and app_id != APPLICATION_ID:
            raise StoreError(
                f"{self.path} is a SQLite database of some other program, not an opapprove "
                "store; it was left untouched",
                "point --store or OPAPPROVE_STORE at another file",
            )
        if version > len(MIGRATIONS):
            raise newer_schema(self.where, version, len(MIGRATIONS))

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _immediate(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            self.migrated_from = version
            if version > len(MIGRATIONS):
                raise newer_schema(self.where, version, len(MIGRATIONS))
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
            if version < len(MIGRATIONS):
                conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        if version == 0:
            self._chmod(self.path, 0o600)

    def _match_sidecar_modes(self) -> None:
        try:
            mode = self.path.stat().st_mode & 0o777
        except OSError:
            return
        for suffix in ("-wal", "-shm"):
            self._chmod(self.path.with_name(self.path.name + suffix), mode)

    @staticmethod
    def _chmod(path: Path, mode: int) -> None:
        try:
            if path.exists() and path.stat().st_mode & 0o777 != mode:
                os.chmod(path, mode)
        except OSError:
            pass  # not ours to change (another user's file); SQLite will still work

    # -- transactions -----------------------------------------------------------------

    def _error(self, exc: sqlite3.Error, what: str) -> StoreError:
        text = str(exc)
        known = explained(text, _MEANINGS, path=self.path, what=what)
        return known or StoreError(f"store {self.path}: {what} failed: {text}", None)

    def _retrying(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` under the lock, again after a pause while SQLite says locked/busy."""
        for attempt in range(_RETRIES):
            with self._lock:
                try:
                    return fn()
                except sqlite3.OperationalError as exc:
                    self._rollback_quietly()
                    if not _is_busy(exc) or attempt + 1 == _RETRIES:
                        raise self._error(exc, what) from exc
                except sqlite3.Error as exc:
                    raise self._error(exc, what) from exc
            time.sleep(min(0.05 * 2**attempt, 1.0) * jitter())
        raise AssertionError("unreachable")

    def _rollback_quietly(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the transaction is gone either way; the next BEGIN starts clean

    def write(self, fn: Callable[[Tx], T], what: str, *, durable: bool = False) -> T:
        def attempt() -> T:
            conn = self.connection()
            if durable:
                conn.execute(f"PRAGMA synchronous = {SYNC_FULL}")
            try:
                with _immediate(conn):
                    result = fn(conn)
            finally:
                if durable:
                    conn.execute(f"PRAGMA synchronous = {SYNC_NORMAL}")
            return result

        return self._retrying(attempt, what)

    def write_single(self, fn: Callable[[Tx], T], what: str) -> T:
        return self.write(fn, what)

    def write_one(self, sql: str, params: Sequence[Any], what: str) -> int:
        return self.write(lambda conn: conn.execute(sql, params).rowcount, what)

    def read(self, fn: Callable[[Tx], T], what: str) -> T:
        return self._retrying(lambda: fn(self.connection()), what)

    def schema_version(self) -> int:
        version: int = self.read(
            lambda c: c.execute("PRAGMA user_version").fetchone()[0], "reading its version"
        )
        return version
