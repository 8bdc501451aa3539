"""The seam between the store's repositories and a database: SQLite or PostgreSQL.

The repositories (``store.py``) write their SQL once, with ``?`` placeholders and rows read
by column name, and run it inside :meth:`Backend.write` (one transaction, retried while
another process holds a lock) or :meth:`Backend.read`. A backend owns everything else:
opening, checking the file or database is ours, migrations, durability, retries, and
turning driver errors into one-line :class:`StoreError`\\ s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from opapprove.errors import OpapproveError

T = TypeVar("T")


class StoreError(OpapproveError):
    """The store cannot do what was asked. ``str(err)`` is one line: what, why, what to do."""

    kind = "store"


class Row(Protocol):
    def __getitem__(self, key: str) -> Any: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Tx(Protocol):
    """One open transaction (or one read). Rows are read by column name."""

    # Whether ``INSERT``/``UPDATE ... RETURNING`` works (PostgreSQL; SQLite from 3.35).
    returning: bool
    # Whether a WITH clause may hold UPDATE and INSERT (PostgreSQL): several writes that
    # depend on each other go to the server as one statement, one round trip.
    writing_ctes: bool

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def execute_locking(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """A SELECT of rows the transaction is about to change, locking them until it ends.

        A row lock on PostgreSQL (other writers of those rows wait); on SQLite a plain
        SELECT, as the write transaction already holds the database's one write lock."""
        ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT into a table with an ``id`` column; the new row's id."""
        ...

    def insert_later(self, sql: str, params: Sequence[Any]) -> Callable[[], int]:
        """:meth:`insert`, not waiting for the id until it is asked for."""
        ...


class Backend(Protocol):
    """What the repositories need from a database."""

    kind: str  # "sqlite" or "postgresql"
    where: str  # the store for messages: a path, or a URL with its password masked
    migrated_from: int | None  # the schema version found on opening (before migrating)

    def write(self, fn: Callable[[Tx], T], what: str, *, durable: bool = False) -> T:
        """Run ``fn`` in one transaction and commit; ``durable`` waits for the disk."""
        ...

    def write_single(self, fn: Callable[[Tx], T], what: str) -> T:
        """:meth:`write` of an ``fn`` that writes with one statement where the backend has
        writing CTEs (``Tx.writing_ctes``, PostgreSQL): that statement runs without BEGIN
        and COMMIT, a transaction by itself, one round trip in all. A drop while it is on
        its way that leaves it unknown whether it ran is a StoreError, never a rerun."""
        ...

    def write_one(self, sql: str, params: Sequence[Any], what: str) -> int:
        """One idempotent statement that is a whole transaction; the rows it changed.

        On PostgreSQL it runs without BEGIN and COMMIT around it: one round trip, not three;
        being idempotent, it is simply run again after a dropped connection."""
        ...

    def read(self, fn: Callable[[Tx], T], what: str) -> T: ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class OneConnection(Generic[C]):
    """What both backends hold: one connection, shared by the process's threads under one
    lock, and closed once."""

    def __init__(self, where: str, reopen: str) -> None:
        self.where = where
        self._reopen = reopen  # how a caller opens the store again, for the closed error
        self._lock = threading.RLock()
        self._conn: C | None = None

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def connection(self) -> C:
        if self._conn is None:
            raise StoreError(f"store {self.where} is closed", f"open it again with {self._reopen}")
        return self._conn


def jitter() -> float:
    """A factor in [0.5, 1.5) that spreads out the retries of processes that collided."""
    import os

    return 0.5 + int.from_bytes(os.urandom(2), "big") / 65535


def newer_schema(where: str, version: int, known: int) -> StoreError:
    return StoreError(
        f"store {where} has schema version {version}, newer than this opapprove knows ({known})",
        "upgrade opapprove, or use another store",
    )
