"""The store in a PostgreSQL database: connecting, checking it is ours, migrations, retries.

Every process (listeners on several machines, support staff's terminals) keeps one
connection. A transaction that changes a grant first locks its row (``SELECT ... FOR NO
KEY UPDATE``, see :attr:`PostgresTx.execute_locking`), so two writers of one grant take turns as
SQLite's one write lock makes them, while writers of different grants run side by side.

Durability mirrors the SQLite store: commits do not wait for the server's disk
(``synchronous_commit = off``: a server crash may lose the last fraction of a second,
a process crash loses nothing), except the durable ones (the move to ``paying``), which
also flush every earlier commit.

A connection that drops (a restarted server, a killed backend, a network blip) is opened
again and the transaction retried, as long as the drop came before COMMIT was sent; a drop
during COMMIT leaves it unknown whether the change was saved, which is said in one line
(``pending replay`` carries on from whatever was saved).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from opapprove.approvals.backend import Cursor, OneConnection, StoreError, Tx, jitter, newer_schema
from opapprove.approvals.postgres_migrations import APPLICATION, META_TABLE, MIGRATIONS
from opapprove.approvals.store_errors import Meaning, explained
from opapprove.openpayments.redaction import redact_text
from opapprove.paths import DatabaseURL

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

CONNECT_TIMEOUT = 10  # seconds, per attempt to reach the server
RECONNECT_FOR = 20.0  # seconds to keep trying after a drop: a server restart takes a few
_LOCK_RETRIES = 8  # deadlocks and serialization failures: the transaction is run again
_MIGRATION_LOCK = 0x6F704170  # pg_advisory_xact_lock key ('opAp'), held while migrating
# SQLSTATEs worth running the whole transaction again for.
_RETRY_STATES = frozenset({"40001", "40P01", "55P03"})

# What the server's refusal of a new connection means, tried in this order.
_LOGIN_MEANINGS = (
    Meaning(
        "password authentication failed|no password supplied",
        "PostgreSQL refused the login to store {where}: wrong user or password",
        "check the user and password in the URL (or PGPASSWORD, ~/.pgpass)",
    ),
    Meaning(
        "database .*does not exist",
        "store {where}: the database {db} does not exist",
        "create it first: createdb -h {host} {db}",
    ),
    Meaning(
        "role .*does not exist",
        "PostgreSQL refused the login to store {where}: no such user",
        "check the user in the URL, or create it: createuser NAME",
    ),
)


class PostgresTx:
    """A :class:`Tx` over a psycopg connection: ``?`` placeholders become ``%s``.

    No pipelining: psycopg's pipeline mode runs in Python, and cost more CPU here than the
    round trips it saves on a loopback or LAN connection (bench/store_backends.py).
    """

    returning = True
    writing_ctes = True
    _sql: dict[str, str] = {}  # noqa: RUF012 - a cache shared by every connection

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def _query(self, sql: str) -> str:
        query = self._sql.get(sql)
        if query is None:
            query = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return query

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        cursor: Cursor = self.conn.execute(self._query(sql).encode(), params or None)
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.cursor().executemany(self._query(sql).encode(), rows)

    def execute_locking(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        # NO KEY: other transactions may still insert events that reference the row.
        return self.execute(sql + " FOR NO KEY UPDATE", params)

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        return self.insert_later(sql, params)()

    def insert_later(self, sql: str, params: Sequence[Any]) -> Callable[[], int]:
        cursor = self.execute(sql + " RETURNING id", params)
        return lambda: int(cursor.fetchone()["id"])


class _CommitUnknown(Exception):
    """The connection dropped while COMMIT was on its way: saved or not, nobody knows."""


class PostgresBackend(OneConnection["psycopg.Connection[Any]"]):
    """The store in one PostgreSQL database (or one schema of it, via ``search_path``)."""

    kind = "postgresql"

    def __init__(self, url: DatabaseURL) -> None:
        super().__init__(str(url), "Store(url)")
        self.url = url
        self.migrated_from: int | None = None
        self._conn = self._connect()
        try:
            self._check_and_migrate()
        except BaseException:
            self.close()
            raise

    # -- connecting -----------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg
        from psycopg.rows import dict_row

        try:
            conn = psycopg.connect(
                self.url.secret(),
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=CONNECT_TIMEOUT,
                application_name="opapprove",
            )
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None
        try:
            conn.execute(b"SET synchronous_commit = off")
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc, "setting up the connection") from None
        return conn

    def _connect_error(self, exc: Exception) -> StoreError:
        text = _first_line(exc)
        url = self.url
        known = explained(text, _LOGIN_MEANINGS, where=self.where, host=url.host, db=url.database)
        return known or StoreError(
            f"cannot reach the PostgreSQL server of store {self.where}: {text}",
            f"check the host and port, and that the server runs (pg_isready -h {url.host})",
        )

    def _reconnect(self) -> psycopg.Connection[Any]:
        """A new connection after a drop, trying for a while (a server restart takes seconds)."""
        old, self._conn = self._conn, None
        if old is not None:
            old.close()
        deadline = time.monotonic() + RECONNECT_FOR
        pause = 0.1
        while True:
            try:
                self._conn = self._connect()
                return self._conn
            except StoreError as exc:
                if time.monotonic() + pause > deadline:
                    raise StoreError(
                        f"lost the connection to store {self.where} and could not connect "
                        f"again for {RECONNECT_FOR:.0f} s ({exc.message})",
                        "check the server, then run the command again: what was saved stays, "
                        "and `opapprove pending replay` carries on from there",
                    ) from None
            time.sleep(pause * jitter())
            pause = min(pause * 2, 2.0)

    # -- is it ours, and which version ---------------------------------------------------

    def _state(self, conn: psycopg.Connection[Any]) -> tuple[str | None, int, int | None]:
        """(schema, tables of other programs there, our version or None if not a store)."""
        row = conn.execute(
            b"SELECT current_schema() AS schema,"
            b" (SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            b"  AND tablename <> %s) AS others,"
            b" (SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            b"  AND tablename = %s) AS ours",
            (META_TABLE, META_TABLE),
        ).fetchone()
        assert row is not None
        if not row["ours"]:
            return row["schema"], int(row["others"]), None
        meta = {
            r["key"]: r["value"]
            for r in conn.execute(f"SELECT key, value FROM {META_TABLE}".encode()).fetchall()  # noqa: S608
        }
        if meta.get("application") != APPLICATION:
            return row["schema"], int(row["others"]) + 1, None
        return row["schema"], int(row["others"]), int(meta.get("schema_version", "0"))

    def _check(self, schema: str | None, others: int, version: int | None) -> None:
        if schema is None:
            raise StoreError(
                f"store {self.where}: no schema to work in (the search_path names none that "
                "exists)",
                "create the schema (CREATE SCHEMA name), or fix options=-csearch_path in the URL",
            )
        if version is None and others:
            raise StoreError(
                f"store {self.where}: the database holds {others} table(s) of another program "
                f"in schema {schema}, not an opapprove store; it was left untouched",
                "give opapprove a database of its own (createdb opapprove), or a schema of "
                "its own: add ?options=-csearch_path%3Dopapprove to the URL",
            )
        if version is not None and version > len(MIGRATIONS):
            raise newer_schema(self.where, version, len(MIGRATIONS))

    def _check_and_migrate(self) -> None:
        import psycopg

        conn = self.connection()
        try:
            schema, others, version = self._state(conn)
            self._check(schema, others, version)
            self.migrated_from = version or 0
            if version == len(MIGRATIONS):
                return
            with conn.transaction():
                # Every process may open a new store at once: one migrates, the others wait.
                conn.execute(b"SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                schema, others, version = self._state(conn)
                self._check(schema, others, version)
                start = version or 0
                for number in range(start, len(MIGRATIONS)):
                    for statement in MIGRATIONS[number]:
                        conn.execute(statement.encode())
                conn.execute(
                    f"UPDATE {META_TABLE} SET value = %s WHERE key = 'schema_version'".encode(),  # noqa: S608
                    (str(len(MIGRATIONS)),),
                )
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"store {self.where}: the user may not change the schema ({_first_line(exc)})",
                "run `opapprove store migrate` once as the database's owner, or grant this "
                "user CREATE on the schema",
            ) from None
        except psycopg.Error as exc:
            raise self._error(exc, "upgrading its schema") from None

    # -- transactions -----------------------------------------------------------------------

    def _error(self, exc: Exception, what: str) -> StoreError:
        import psycopg

        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return StoreError(
                f"store {self.where}: the user may not do this while {what} ({_first_line(exc)})",
                "grant the user SELECT, INSERT, UPDATE and DELETE on the store's tables "
                "(`opapprove doctor` lists what is missing)",
            )
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return StoreError(
                f"store {self.where} cannot be written: the server is read-only (a standby?)",
                "point --store at the primary server",
            )
        return StoreError(f"store {self.where}: {what} failed: {_first_line(exc)}", None)

    def _run(self, fn: Callable[[psycopg.Connection[Any]], T], what: str) -> T:
        """Run ``fn``; again on a new connection after a drop, or after a deadlock."""
        import psycopg

        lock_tries = 0
        while True:
            with self._lock:
                conn = self._conn or self._reconnect()
                try:
                    return fn(conn)
                except _CommitUnknown as exc:
                    self._reconnect()
                    raise StoreError(
                        f"lost the connection to store {self.where} while committing "
                        f"({what}); the change may or may not be saved",
                        "run `opapprove pending replay` for the grant: it carries on from "
                        "whatever was saved, and never pays twice",
                    ) from exc.__cause__
                except psycopg.Error as exc:
                    if isinstance(exc, psycopg.OperationalError) and (conn.broken or conn.closed):
                        self._reconnect()  # raises when the server stays away
                        continue
                    if exc.sqlstate not in _RETRY_STATES or lock_tries >= _LOCK_RETRIES:
                        raise self._error(exc, what) from None
                    lock_tries += 1
            time.sleep(min(0.02 * 2**lock_tries, 1.0) * jitter())

    def write(self, fn: Callable[[Tx], T], what: str, *, durable: bool = False) -> T:
        import psycopg

        def attempt(conn: psycopg.Connection[Any]) -> T:
            tx = PostgresTx(conn)
            conn.execute(b"BEGIN")
            try:
                if durable:
                    conn.execute(b"SET LOCAL synchronous_commit = on")
                result = fn(tx)
            except BaseException:
                if not (conn.broken or conn.closed):
                    try:
                        conn.execute(b"ROLLBACK")
                    except psycopg.Error:
                        pass  # the server ends the transaction with the connection anyway
                raise
            try:
                conn.execute(b"COMMIT")
            except psycopg.OperationalError as exc:
                if conn.broken or conn.closed:
                    raise _CommitUnknown() from exc
                raise
            return result

        return self._run(attempt, what)

    def write_single(self, fn: Callable[[Tx], T], what: str) -> T:
        import psycopg

        def attempt(conn: psycopg.Connection[Any]) -> T:
            if _spoke_while_idle(conn):
                # An idle connection the server wrote on has been ended by it (a restart,
                # pg_terminate_backend: the "terminating connection" notice, then EOF).
                # Nothing was sent yet, so a new connection may carry the statement.
                self._reconnect()
                conn = self.connection()
            try:
                return fn(PostgresTx(conn))
            except psycopg.OperationalError as exc:
                if (conn.broken or conn.closed) and exc.sqlstate is None:
                    # Dropped with no word from the server: it may have committed.
                    raise _CommitUnknown() from exc
                raise  # the server ended the statement (so it did not commit): run again

        return self._run(attempt, what)

    def write_one(self, sql: str, params: Sequence[Any], what: str) -> int:
        # Autocommit: the statement is its own transaction. The store's single statements
        # are idempotent (upserts, deletes, giving a lease back), so after a drop that
        # leaves it unknown whether one ran, running it again is right.
        return self._run(lambda conn: PostgresTx(conn).execute(sql, params).rowcount, what)

    def read(self, fn: Callable[[Tx], T], what: str) -> T:
        return self._run(lambda conn: fn(PostgresTx(conn)), what)

    def schema_version(self) -> int:
        def read(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'".encode()  # noqa: S608
            ).fetchone()
            return int(row["value"]) if row else 0

        return self._run(read, "reading its version")

    def privileges(self) -> dict[str, list[str]]:
        """For each table of the store, the privileges the user lacks (doctor's check)."""
        from opapprove.approvals.postgres_migrations import TABLES

        wanted = ("SELECT", "INSERT", "UPDATE", "DELETE")

        def read(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
            missing: dict[str, list[str]] = {}
            for table in TABLES:
                row = conn.execute(
                    b"SELECT "
                    + b", ".join(
                        f"has_table_privilege(%s, '{p}') AS {p.lower()}".encode() for p in wanted
                    ),
                    (table,) * len(wanted),
                ).fetchone()
                assert row is not None
                lacking = [p for p in wanted if not row[p.lower()]]
                if lacking:
                    missing[table] = lacking
            return missing

        return self._run(read, "checking privileges")


def _spoke_while_idle(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server sent something on the idle connection (nothing is expected)."""
    import select

    try:
        fd = conn.fileno()
    except Exception:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return redact_text(text[0]) if text else type(exc).__name__
