"""What every repository of the store shares: its backend, its clock, and the audit trail.

The repositories (``store_sellers``, ``store_pending``, ``store_caches``,
``store_webhooks``) are mixins of :class:`opapprove.approvals.store.Store`; each writes its
SQL once, for both backends, through :class:`~opapprove.approvals.backend.Tx`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from opapprove.approvals.backend import Backend, Row, StoreError, Tx
from opapprove.approvals.records import Event, LegState, Pending, State
from opapprove.approvals.store_rows import _dumps, _pending_from_row
from opapprove.openpayments.redaction import redact_json

T = TypeVar("T")
# A grant's state or a leg's: both move by the same rules (from one of ``expect`` only).
S = TypeVar("S", State, LegState)


class StaleState(StoreError):
    """The pending grant is not in the state the caller expected (someone moved it on).

    ``current`` is its state now, or ``None`` if there is no such pending grant.
    """

    current: State | None = None


class PendingNotFound(StaleState):
    """There is no pending grant with that id (``current`` is ``None``)."""


def expected_states(kind: type[S], expect: S | Iterable[S]) -> tuple[S, ...]:
    """``expect`` (one state of ``kind``, or several) as a tuple of at least one state."""
    if isinstance(expect, str):
        return (kind(expect),)
    states = tuple(kind(s) for s in expect)
    if not states:
        raise TypeError("expect must name at least one state")
    return states


def move_states(
    kind: type[S], to: S, expect: S | Iterable[S], fields: dict[str, Any]
) -> tuple[S, tuple[S, ...]]:
    """A transition's target and expected states, as ``kind``. A move to ``completed``
    also clears ``last_error`` (unless ``fields`` set it): a paid grant's or leg's earlier
    trouble is history (the event trail keeps it), not its state."""
    target = kind(to)
    if target == kind.COMPLETED:
        fields.setdefault("last_error", None)
    return target, expected_states(kind, expect)


def stale(what: str, pending_id: str, found: S, expected: tuple[S, ...], target: S) -> StaleState:
    """``what`` (a grant, or one of its legs) is in ``found``, none of ``expected``."""
    err = StaleState(
        f"{what} is {found}, not {' or '.join(str(s) for s in expected)},"
        f" so it cannot become {target}",
        f"another process may have moved it on; see `opapprove pending show {pending_id}`",
        pending_id=pending_id,
    )
    if isinstance(found, State):  # a leg's state says nothing of its grant's
        err.current = found
    return err


def _not_found(pending_id: str) -> PendingNotFound:
    return PendingNotFound(
        f"no pending grant {pending_id} in the store",
        "check the id with `opapprove pending list`",
        pending_id=pending_id,
    )


def fetch_one(conn: Tx, sql: str, params: Sequence[Any], record: Callable[[Row], T]) -> T | None:
    """Inside a transaction: the row one SELECT by key finds, as a record (``None``: none)."""
    row = conn.execute(sql, params).fetchone()
    return None if row is None else record(row)


class Repository:
    """The base of the store's repositories: the backend's calls and the shared helpers."""

    backend: Backend
    _clock: Callable[[], float]

    def _write(self, fn: Callable[[Tx], T], what: str, *, durable: bool = False) -> T:
        return self.backend.write(fn, what, durable=durable)

    def _write_one(self, sql: str, params: Sequence[Any], what: str) -> int:
        return self.backend.write_one(sql, params, what)

    def _read(self, fn: Callable[[Tx], T], what: str) -> T:
        return self.backend.read(fn, what)

    def _read_all(
        self, sql: str, params: Sequence[Any], record: Callable[[Row], T], what: str
    ) -> list[T]:
        """Every row of one SELECT, each as a record."""
        return self._read(lambda conn: [record(r) for r in conn.execute(sql, params)], what)

    def _read_one(
        self, sql: str, params: Sequence[Any], record: Callable[[Row], T], what: str
    ) -> T | None:
        """The row one SELECT by key finds, as a record (``None``: no such row)."""
        return self._read(lambda conn: fetch_one(conn, sql, params, record), what)

    def _update_pending(
        self, conn: Tx, sql: str, params: Sequence[Any], pending_id: str
    ) -> Pending | None:
        """Run an UPDATE of one pending grant; the row as it is now (``None``: no such row).

        One statement where the database can return the row it changed (``RETURNING``)."""
        if conn.returning:
            rows = conn.execute(sql + " RETURNING *", params).fetchall()
            return _pending_from_row(rows[0]) if rows else None
        if conn.execute(sql, params).rowcount == 0:
            return None
        return self._fetch_pending(conn, pending_id)

    @staticmethod
    def _insert_row(conn: Tx, table: str, values: Mapping[str, Any]) -> None:
        """INSERT one row; ``table`` and the column names are the store's own (from a
        record's dataclass, checked by ``store_rows``), never input."""
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        conn.execute(
            f"INSERT INTO {table} ({names}) VALUES ({marks})",  # noqa: S608
            tuple(values.values()),
        )

    @staticmethod
    def _count_error(conn: Tx, pending_id: str, message: str) -> bool:
        """A failed attempt on the grant: ``last_error`` and ``attempts + 1``; whether the
        grant exists. ``updated_at`` is left alone so a grant that keeps failing shows as stuck.
        """
        cur = conn.execute(
            "UPDATE pending SET last_error = ?, attempts = attempts + 1,"
            " version = version + 1 WHERE id = ?",
            (message, pending_id),
        )
        return cur.rowcount > 0

    @staticmethod
    def _fetch_pending(conn: Tx, pending_id: str) -> Pending | None:
        return fetch_one(
            conn, "SELECT * FROM pending WHERE id = ?", (pending_id,), _pending_from_row
        )

    @staticmethod
    def _insert_event(
        conn: Tx,
        pending_id: str,
        at: float,
        kind: str,
        from_state: str | None,
        to_state: str | None,
        data: Mapping[str, Any] | None,
    ) -> Callable[[], Event]:
        """Append an event; the event (with its new id) once asked for.

        Most callers never ask: on PostgreSQL the INSERT then goes out with the statements
        after it instead of waiting for its id."""
        clean = redact_json(dict(data or {}))
        event_id = conn.insert_later(
            "INSERT INTO events (pending_id, at, kind, from_state, to_state, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (pending_id, at, kind, from_state, to_state, _dumps(clean)),
        )
        return lambda: Event(event_id(), pending_id, at, kind, from_state, to_state, clean)
