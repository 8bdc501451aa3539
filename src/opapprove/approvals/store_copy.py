"""Copying a whole store between backends: a SQLite file into PostgreSQL, and back.

Both stores are opened (so migrated) to this opapprove's schema, so their tables and
columns are the same (``postgres_migrations`` translates the SQLite ones). The rows are
written to the destination in one transaction: a copy that fails part-way writes nothing.
The destination must be empty: a copy never merges into, or overwrites, another store.
"""

from __future__ import annotations

from typing import Any

from opapprove.approvals.backend import StoreError, Tx
from opapprove.approvals.postgres_migrations import IDENTITY_TABLES, TABLES
from opapprove.approvals.store import Store


def count_rows(store: Store) -> dict[str, int]:
    """How many rows each table of the store holds."""

    def read(tx: Tx) -> dict[str, int]:
        return {
            table: int(tx.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"])  # noqa: S608
            for table in TABLES
        }

    return store.backend.read(read, "counting rows")


def copy_store(source: Store, destination: Store) -> dict[str, int]:
    """Copy every row of ``source`` into the empty ``destination``; rows copied per table."""
    if source.schema_version() != destination.schema_version():
        raise StoreError(
            f"store {source.location} is at schema v{source.schema_version()} and "
            f"{destination.location} at v{destination.schema_version()}",
            "run `opapprove store migrate` on both with this opapprove first",
        )
    already = {t: n for t, n in count_rows(destination).items() if n}
    if already:
        held = ", ".join(f"{n} {t}" for t, n in already.items())
        raise StoreError(
            f"store {destination.location} is not empty ({held}); nothing was copied",
            "copy into a new, empty store (a new database, schema or file)",
        )

    # One write transaction on the source as well: on SQLite it holds the write lock, so
    # nothing changes between reading one table and the next.
    def read(tx: Tx) -> dict[str, list[dict[str, Any]]]:
        return {
            table: [dict(row) for row in tx.execute(f"SELECT * FROM {table}").fetchall()]  # noqa: S608
            for table in TABLES
        }

    rows = source.backend.write(read, "reading the store to copy")

    def write(tx: Tx) -> None:
        for table in TABLES:
            if not rows[table]:
                continue
            names = list(rows[table][0])
            sql = (
                f"INSERT INTO {table} ({', '.join(names)})"  # noqa: S608 - names are our columns
                f" VALUES ({', '.join('?' for _ in names)})"
            )
            tx.executemany(sql, [tuple(r[n] for n in names) for r in rows[table]])
        if destination.backend.kind == "postgresql":
            # Rows came with their ids: new ones must be numbered after them.
            for table in IDENTITY_TABLES:
                tx.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608
                    f" coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                )

    destination.backend.write(write, "writing the copy", durable=True)
    return {table: len(rows[table]) for table in TABLES}
