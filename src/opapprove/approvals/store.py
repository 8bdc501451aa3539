"""The store: sellers, pending grants and their events, cached grants, webhook deliveries.

The repositories over one backend (``backend.py``): a SQLite file (``sqlite_backend.py``),
the zero-set-up default, or a PostgreSQL database (``postgres_backend.py``) that listeners
and support staff on several machines share. Each write is one transaction; a state
change and its audit event are written in the same one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from opapprove.approvals.backend import Backend, Row, StoreError, Tx
from opapprove.approvals.ids import new_id
from opapprove.approvals.leases import Holder, process_gone
from opapprove.approvals.records import (
    FINAL_STATES,
    PENDING_FIELDS,
    PENDING_JSON_FIELDS,
    PENDING_MANAGED_FIELDS,
    CachedGrant,
    Event,
    Pending,
    Seller,
    State,
)
from opapprove.approvals.sqlite_backend import SQLiteBackend
from opapprove.openpayments.redaction import redact_json
from opapprove.paths import DatabaseURL, StoreLocation, store_location

__all__ = [
    "FINAL_STATES",
    "CachedGrant",
    "Event",
    "Pending",
    "PendingNotFound",
    "Seller",
    "StaleState",
    "State",
    "Store",
    "StoreError",
    "WebhookDelivery",
]

T = TypeVar("T")

# Transitions committed durably (fsync; SQLite's synchronous=FULL, PostgreSQL's
# synchronous_commit=on), which also makes every earlier commit durable: after a power loss
# a grant may fall back a step, but never from ``paying`` to ``grant_issued``, from where a
# replay would pay a second time.
DURABLE_STATES = frozenset({State.PAYING})


class StaleState(StoreError):
    """The pending grant is not in the state the caller expected (someone moved it on).

    ``current`` is its state now, or ``None`` if there is no such pending grant.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        pending_id: str = "",
        current: State | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.pending_id = pending_id
        self.current = current


class PendingNotFound(StaleState):
    """There is no pending grant with that id (``current`` is ``None``)."""


def _not_found(pending_id: str) -> PendingNotFound:
    return PendingNotFound(
        f"no pending grant {pending_id} in the store",
        "check the id with `opapprove pending list`",
        pending_id=pending_id,
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _expected_states(expect: State | Iterable[State]) -> tuple[State, ...]:
    if isinstance(expect, str):
        return (State(expect),)
    states = tuple(State(s) for s in expect)
    if not states:
        raise TypeError("expect must name at least one state")
    return states


def _pending_columns(fields: Mapping[str, Any], caller: str) -> dict[str, Any]:
    """Validate caller-supplied Pending fields and turn them into column values."""
    unknown = sorted(set(fields) - set(PENDING_FIELDS))
    if unknown:
        raise TypeError(f"{caller}() got unknown Pending fields: {', '.join(unknown)}")
    managed = sorted(set(fields) & PENDING_MANAGED_FIELDS)
    if managed:
        raise TypeError(f"{caller}() cannot set {', '.join(managed)}: the store manages them")
    columns: dict[str, Any] = {}
    for name, value in fields.items():
        if name in PENDING_JSON_FIELDS:
            columns[name] = None if value is None else _dumps(value)
        elif name == "poll":
            columns[name] = int(bool(value))
        else:
            columns[name] = value
    return columns


def _pending_from_row(row: Row) -> Pending:
    values: dict[str, Any] = {}
    for name in PENDING_FIELDS:
        value = row[name]
        if name in PENDING_JSON_FIELDS:
            value = _loads(value)
        elif name == "state":
            value = State(value)
        elif name == "poll":
            value = bool(value)
        values[name] = value
    return Pending(**values)


def _event_from_row(row: Row) -> Event:
    return Event(
        id=row["id"],
        pending_id=row["pending_id"],
        at=row["at"],
        kind=row["kind"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        data=_loads(row["data"]) or {},
    )


def _seller_from_row(row: Row) -> Seller:
    return Seller(
        id=row["id"],
        wallet_address_url=row["wallet_address_url"],
        key_id=row["key_id"],
        private_key_path=row["private_key_path"],
        created_at=row["created_at"],
    )


def _grant_from_row(row: Row) -> CachedGrant:
    return CachedGrant(
        key=row["key"],
        auth_server=row["auth_server"],
        access_token=row["access_token"],
        manage_url=row["manage_url"],
        expires_at=row["expires_at"],
        access=_loads(row["access"]) or [],
        created_at=row["created_at"],
    )


def open_backend(location: StoreLocation | str) -> Backend:
    """The backend for a store location: a SQLite file, or a postgresql:// database."""
    where = store_location(location)
    if isinstance(where, DatabaseURL):
        from opapprove.approvals.postgres_backend import PostgresBackend

        return PostgresBackend(where)
    return SQLiteBackend(where.expanduser())


class Store:
    """The opapprove store: a SQLite file or a PostgreSQL database, one API over both.

    Safe to share between threads and processes (and, on PostgreSQL, machines).
    """

    def __init__(
        self, location: StoreLocation | str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.backend = open_backend(location)
        self.location: StoreLocation = (
            self.backend.path
            if isinstance(self.backend, SQLiteBackend)
            else store_location(location)
        )
        self._clock = clock
        self._write = self.backend.write
        self._read = self.backend.read

    @classmethod
    def open(
        cls, location: StoreLocation | str, *, clock: Callable[[], float] = time.time
    ) -> Store:
        return cls(location, clock=clock)

    @property
    def path(self) -> Path:
        """The SQLite file (a PostgreSQL store has none: see ``location``)."""
        if not isinstance(self.location, Path):
            raise AttributeError(f"store {self.location} is a database, not a file")
        return self.location

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.location)!r})"

    def _connection(self) -> Any:
        """The SQLite connection (tests look at its pragmas)."""
        assert isinstance(self.backend, SQLiteBackend)
        return self.backend.connection()

    def schema_version(self) -> int:
        return self.backend.schema_version()

    # -- sellers ----------------------------------------------------------------------

    def add_seller(self, seller: Seller, *, replace: bool = False) -> Seller:
        """Save a seller; an existing id is an error unless ``replace``."""

        def txn(conn: Tx) -> Seller:
            row = (
                seller.id,
                seller.wallet_address_url,
                seller.key_id,
                seller.private_key_path,
                seller.created_at,
            )
            if replace:
                conn.execute(
                    "INSERT INTO sellers (id, wallet_address_url, key_id, private_key_path,"
                    " created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                    " wallet_address_url = excluded.wallet_address_url,"
                    " key_id = excluded.key_id, private_key_path = excluded.private_key_path,"
                    " created_at = excluded.created_at",
                    row,
                )
            else:
                added = conn.execute(
                    "INSERT INTO sellers (id, wallet_address_url, key_id, private_key_path,"
                    " created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    row,
                )
                if added.rowcount == 0:
                    raise StoreError(
                        f"seller {seller.id!r} already exists",
                        "replace it explicitly, or choose another seller id",
                    )
            return seller

        return self._write(txn, "saving a seller")

    def get_seller(self, seller_id: str) -> Seller | None:
        def read(conn: Tx) -> Seller | None:
            row = conn.execute("SELECT * FROM sellers WHERE id = ?", (seller_id,)).fetchone()
            return None if row is None else _seller_from_row(row)

        return self._read(read, "reading a seller")

    def list_sellers(self) -> list[Seller]:
        def read(conn: Tx) -> list[Seller]:
            rows = conn.execute("SELECT * FROM sellers ORDER BY id").fetchall()
            return [_seller_from_row(r) for r in rows]

        return self._read(read, "listing sellers")

    def remove_seller(self, seller_id: str) -> bool:
        def txn(conn: Tx) -> bool:
            return conn.execute("DELETE FROM sellers WHERE id = ?", (seller_id,)).rowcount > 0

        return self._write(txn, "removing a seller")

    # -- pending grants -----------------------------------------------------------------

    @staticmethod
    def _fetch_pending(conn: Tx, pending_id: str) -> Pending | None:
        row = conn.execute("SELECT * FROM pending WHERE id = ?", (pending_id,)).fetchone()
        return None if row is None else _pending_from_row(row)

    @staticmethod
    def _insert_event(
        conn: Tx,
        pending_id: str,
        at: float,
        kind: str,
        from_state: str | None,
        to_state: str | None,
        data: Mapping[str, Any] | None,
    ) -> Event:
        clean = redact_json(dict(data or {}))
        event_id = conn.insert(
            "INSERT INTO events (pending_id, at, kind, from_state, to_state, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (pending_id, at, kind, from_state, to_state, _dumps(clean)),
        )
        return Event(event_id, pending_id, at, kind, from_state, to_state, clean)

    def create_pending(
        self,
        *,
        seller_id: str,
        offer_id: str,
        buyer_wallet: str,
        amount: str,
        **fields: Any,
    ) -> Pending:
        """A new pending grant in state ``started``, with a ``created`` event."""
        columns = _pending_columns(fields, "create_pending")

        def txn(conn: Tx) -> Pending:
            now = self._clock()
            pending_id = new_id()  # real time even under a test clock: ids stay ordered
            values: dict[str, Any] = {
                "id": pending_id,
                "seller_id": seller_id,
                "offer_id": offer_id,
                "buyer_wallet": buyer_wallet,
                "amount": amount,
                "state": str(State.STARTED),
                "created_at": now,
                "updated_at": now,
                "version": 1,
                **columns,
            }
            names = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            # Column names come from the Pending dataclass (checked above), never from input.
            conn.execute(
                f"INSERT INTO pending ({names}) VALUES ({marks})",  # noqa: S608
                tuple(values.values()),
            )
            self._insert_event(
                conn,
                pending_id,
                now,
                "created",
                None,
                str(State.STARTED),
                {"seller_id": seller_id, "offer_id": offer_id, "amount": amount},
            )
            created = self._fetch_pending(conn, pending_id)
            assert created is not None
            return created

        return self._write(txn, "creating a pending grant")

    def get_pending(self, pending_id: str) -> Pending | None:
        return self._read(lambda c: self._fetch_pending(c, pending_id), "reading a pending grant")

    def list_pending(
        self,
        *,
        states: Iterable[State] | None = None,
        since: float | None = None,
        stuck_after: float | None = None,
        now: float | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Pending]:
        """Pending grants, oldest first unless ``newest_first``.

        ``since``: created at or after. ``stuck_after``: not final and not changed (no
        transition or update) for that many seconds before ``now``.
        """
        clauses: list[str] = []
        params: list[Any] = []
        if states is not None:
            wanted = sorted({str(State(s)) for s in states})
            if not wanted:
                return []
            clauses.append(f"state IN ({', '.join('?' for _ in wanted)})")
            params.extend(wanted)
        if since is not None:
            clauses.append("created_at >= ?")
            params.append(since)
        if stuck_after is not None:
            finals = sorted(str(s) for s in FINAL_STATES)
            clauses.append(f"state NOT IN ({', '.join('?' for _ in finals)})")
            params.extend(finals)
            clauses.append("updated_at < ?")
            params.append((self._clock() if now is None else now) - stuck_after)
        sql = "SELECT * FROM pending"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        order = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY created_at {order}, id {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))

        def read(conn: Tx) -> list[Pending]:
            return [_pending_from_row(r) for r in conn.execute(sql, params).fetchall()]

        return self._read(read, "listing pending grants")

    def transition(
        self,
        pending_id: str,
        to: State,
        *,
        expect: State | Iterable[State],
        event: str | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Pending:
        """Move a pending grant from one of ``expect`` to ``to``, saving ``fields`` with it.

        One transaction: the row and its event are written together or not at all.
        Raises :class:`StaleState` (nothing changed) if the grant is in another state.
        """
        target = State(to)
        expected = _expected_states(expect)
        if target == State.COMPLETED:
            # A paid grant's earlier trouble is history (the event trail keeps it), not its state.
            fields.setdefault("last_error", None)
        columns = _pending_columns(fields, "transition")

        def txn(conn: Tx) -> Pending:
            row = conn.execute_locking(
                "SELECT state FROM pending WHERE id = ?", (pending_id,)
            ).fetchone()
            if row is None:
                raise _not_found(pending_id)
            current = State(row["state"])
            if current not in expected:
                raise StaleState(
                    f"pending grant {pending_id} is {current}, not "
                    f"{' or '.join(str(s) for s in expected)}, so it cannot become {target}",
                    f"another process may have moved it on; see `opapprove pending show "
                    f"{pending_id}`",
                    pending_id=pending_id,
                    current=current,
                )
            now = self._clock()
            sets = "".join(f"{name} = ?, " for name in columns)
            conn.execute(
                f"UPDATE pending SET {sets}state = ?, version = version + 1, updated_at = ?"  # noqa: S608
                " WHERE id = ? AND state = ?",
                (*columns.values(), str(target), now, pending_id, str(current)),
            )
            self._insert_event(
                conn,
                pending_id,
                now,
                event or f"{current}->{target}",
                str(current),
                str(target),
                data,
            )
            moved = self._fetch_pending(conn, pending_id)
            assert moved is not None
            return moved

        return self._write(txn, "saving a state change", durable=target in DURABLE_STATES)

    def update(
        self,
        pending_id: str,
        *,
        event: str | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Pending:
        """Save ``fields`` without a state change; with ``event``, also log it."""
        columns = _pending_columns(fields, "update")

        def txn(conn: Tx) -> Pending:
            now = self._clock()
            sets = "".join(f"{name} = ?, " for name in columns)
            cur = conn.execute(
                f"UPDATE pending SET {sets}version = version + 1, updated_at = ?"  # noqa: S608
                " WHERE id = ?",
                (*columns.values(), now, pending_id),
            )
            if cur.rowcount == 0:
                raise _not_found(pending_id)
            if event is not None:
                self._insert_event(conn, pending_id, now, event, None, None, data)
            updated = self._fetch_pending(conn, pending_id)
            assert updated is not None
            return updated

        return self._write(txn, "updating a pending grant")

    def record_error(self, pending_id: str, message: str) -> None:
        """Note a failed attempt: ``last_error``, ``attempts + 1`` and an ``error`` event.

        ``updated_at`` is left alone so a grant that keeps failing still shows as stuck.
        """

        def txn(conn: Tx) -> None:
            cur = conn.execute(
                "UPDATE pending SET last_error = ?, attempts = attempts + 1,"
                " version = version + 1 WHERE id = ?",
                (message, pending_id),
            )
            if cur.rowcount == 0:
                raise _not_found(pending_id)
            self._insert_event(
                conn, pending_id, self._clock(), "error", None, None, {"message": message}
            )

        self._write(txn, "recording an error")

    def add_event(self, pending_id: str, kind: str, data: dict[str, Any] | None = None) -> Event:
        """Append to a pending grant's audit trail; credentials in ``data`` are redacted."""

        def txn(conn: Tx) -> Event:
            if conn.execute("SELECT 1 FROM pending WHERE id = ?", (pending_id,)).fetchone() is None:
                raise _not_found(pending_id)
            return self._insert_event(conn, pending_id, self._clock(), kind, None, None, data)

        return self._write(txn, "adding an event")

    def events(self, pending_id: str) -> list[Event]:
        def read(conn: Tx) -> list[Event]:
            rows = conn.execute(
                "SELECT * FROM events WHERE pending_id = ? ORDER BY id", (pending_id,)
            ).fetchall()
            return [_event_from_row(r) for r in rows]

        return self._read(read, "reading events")

    def acquire_lease(
        self,
        pending_id: str,
        holder: str | Holder,
        seconds: float,
        *,
        now: float | None = None,
    ) -> bool:
        """Take (or extend) the right to work on a grant; False if another holder has it.

        ``holder`` names one attempt (a plain string is an attempt of this process). A lease
        held by another attempt is taken when it has run out, or at once when its holder's
        process on this host is gone; taking over a lease is logged as ``lease_taken_over``.
        """
        who = holder if isinstance(holder, Holder) else Holder(holder)

        def txn(conn: Tx) -> bool:
            at = self._clock() if now is None else now
            # Locked: of two processes (on any machines) asking at once, the second waits,
            # then sees the first one's lease.
            row = conn.execute_locking(
                "SELECT lease_holder, lease_until, lease_host, lease_pid FROM pending WHERE id = ?",
                (pending_id,),
            ).fetchone()
            if row is None:
                raise _not_found(pending_id)
            current = row["lease_holder"]
            free = current is None or current == who.id or row["lease_until"] is None
            ran_out = not free and row["lease_until"] <= at
            gone = not free and not ran_out and process_gone(row["lease_host"], row["lease_pid"])
            if not (free or ran_out or gone):
                return False
            conn.execute(
                "UPDATE pending SET lease_holder = ?, lease_until = ?, lease_host = ?,"
                " lease_pid = ? WHERE id = ?",
                (who.id, at + seconds, who.host, who.pid, pending_id),
            )
            if current is not None and current != who.id:
                why = "holder process gone" if gone else "lease ran out"
                taken = {"from": current, "host": row["lease_host"], "pid": row["lease_pid"]}
                self._insert_event(
                    conn, pending_id, at, "lease_taken_over", None, None, {**taken, "why": why}
                )
            return True

        return self._write(txn, "taking a lease")

    def release_lease(self, pending_id: str, holder: str | Holder) -> None:
        """Give the lease back; a no-op unless ``holder`` holds it."""
        who = holder.id if isinstance(holder, Holder) else holder

        def txn(conn: Tx) -> None:
            conn.execute(
                "UPDATE pending SET lease_holder = NULL, lease_until = NULL, lease_host = NULL,"
                " lease_pid = NULL WHERE id = ? AND lease_holder = ?",
                (pending_id, who),
            )

        self._write(txn, "releasing a lease")

    # -- cached non-interactive grants ----------------------------------------------------

    def get_cached_grant(
        self, key: str, *, now: float | None = None, margin: float = 30.0
    ) -> CachedGrant | None:
        """The cached grant for ``key`` if it is still good for at least ``margin`` seconds."""

        def read(conn: Tx) -> CachedGrant | None:
            row = conn.execute("SELECT * FROM cached_grants WHERE key = ?", (key,)).fetchone()
            return None if row is None else _grant_from_row(row)

        grant = self._read(read, "reading a cached grant")
        if grant is None:
            return None
        at = self._clock() if now is None else now
        if grant.expires_at is not None and grant.expires_at - margin <= at:
            return None
        return grant

    def put_cached_grant(self, grant: CachedGrant) -> None:
        def txn(conn: Tx) -> None:
            conn.execute(
                "INSERT INTO cached_grants (key, auth_server, access_token, manage_url,"
                " expires_at, access, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET auth_server = excluded.auth_server,"
                " access_token = excluded.access_token, manage_url = excluded.manage_url,"
                " expires_at = excluded.expires_at, access = excluded.access,"
                " created_at = excluded.created_at",
                (
                    grant.key,
                    grant.auth_server,
                    grant.access_token,
                    grant.manage_url,
                    grant.expires_at,
                    _dumps(grant.access),
                    grant.created_at,
                ),
            )

        self._write(txn, "caching a grant")

    def drop_cached_grant(self, key: str) -> None:
        self._write(
            lambda c: c.execute("DELETE FROM cached_grants WHERE key = ?", (key,)),
            "dropping a cached grant",
        )

    # -- wallet address documents ----------------------------------------------------------

    def get_wallet_document(self, url: str, *, max_age: float, now: float | None = None) -> Any:
        """The document fetched for ``url`` at most ``max_age`` seconds ago, else ``None``."""

        def read(conn: Tx) -> Any:
            return conn.execute(
                "SELECT document, fetched_at FROM wallet_documents WHERE url = ?", (url,)
            ).fetchone()

        row = self._read(read, "reading a cached wallet document")
        at = self._clock() if now is None else now
        if row is None or not 0 <= at - row["fetched_at"] < max_age:
            return None
        return _loads(row["document"])

    def put_wallet_document(self, url: str, document: Any, *, now: float | None = None) -> None:
        at = self._clock() if now is None else now
        self._write(
            lambda c: c.execute(
                "INSERT INTO wallet_documents (url, document, fetched_at) VALUES (?, ?, ?)"
                " ON CONFLICT (url) DO UPDATE SET document = excluded.document,"
                " fetched_at = excluded.fetched_at",
                (url, _dumps(document), at),
            ),
            "caching a wallet document",
        )

    def drop_wallet_document(self, url: str) -> None:
        self._write(
            lambda c: c.execute("DELETE FROM wallet_documents WHERE url = ?", (url,)),
            "dropping a cached wallet document",
        )

    # -- webhook deliveries ---------------------------------------------------------------

    def add_webhook_delivery(
        self, pending_id: str, event_type: str, body: str, *, same_body: bool = False
    ) -> tuple[WebhookDelivery, bool]:
        """The delivery of one event, written before it is sent; ``(delivery, created)``.

        An event is one ``event_type`` for one pending grant (with ``same_body``, one body:
        for events that may recur with new content). If it exists already, that row comes
        back with ``created`` False, so whoever asks second sends nothing.
        """

        def txn(conn: Tx) -> tuple[WebhookDelivery, bool]:
            # The grant's row lock makes a second process asking at once wait, then find ours.
            conn.execute_locking("SELECT 1 FROM pending WHERE id = ?", (pending_id,))
            sql = "SELECT * FROM webhook_deliveries WHERE pending_id = ? AND event_type = ?"
            params: tuple[Any, ...] = (pending_id, event_type)
            if same_body:
                sql += " AND body = ?"
                params = (*params, body)
            row = conn.execute(sql + " ORDER BY id LIMIT 1", params).fetchone()
            if row is not None:
                return _delivery_from_row(row), False
            delivery_id = conn.insert(
                "INSERT INTO webhook_deliveries (pending_id, event_type, body, created_at)"
                " VALUES (?, ?, ?, ?)",
                (pending_id, event_type, body, self._clock()),
            )
            created = conn.execute(
                "SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            return _delivery_from_row(created), True

        return self._write(txn, "saving a webhook delivery")

    def get_webhook_delivery(self, delivery_id: int) -> WebhookDelivery | None:
        def read(conn: Tx) -> WebhookDelivery | None:
            row = conn.execute(
                "SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            return None if row is None else _delivery_from_row(row)

        return self._read(read, "reading a webhook delivery")

    def webhook_deliveries(
        self, *, pending_id: str | None = None, undelivered: bool = False
    ) -> list[WebhookDelivery]:
        """Deliveries, oldest first; only one grant's, or only those not yet delivered."""
        clauses: list[str] = []
        params: list[Any] = []
        if pending_id is not None:
            clauses.append("pending_id = ?")
            params.append(pending_id)
        if undelivered:
            clauses.append("delivered_at IS NULL")
        sql = "SELECT * FROM webhook_deliveries"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_at, id"

        def read(conn: Tx) -> list[WebhookDelivery]:
            return [_delivery_from_row(r) for r in conn.execute(sql, params).fetchall()]

        return self._read(read, "listing webhook deliveries")

    def record_webhook_attempt(
        self,
        delivery_id: int,
        *,
        delivered: bool,
        error: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> WebhookDelivery:
        """Count one sending attempt and log it as a ``webhook_attempt`` event, together."""

        def txn(conn: Tx) -> WebhookDelivery:
            now = self._clock()
            cur = conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = ?,"
                " delivered_at = CASE WHEN ? = 1 THEN coalesce(delivered_at, ?)"
                " ELSE delivered_at END"
                " WHERE id = ?",
                (error, int(delivered), now, delivery_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"no webhook delivery {delivery_id} in the store", None)
            row = conn.execute(
                "SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            delivery = _delivery_from_row(row)
            if delivery.pending_id is not None:
                event = {"delivery": delivery_id, "type": delivery.event_type, **(data or {})}
                self._insert_event(
                    conn, delivery.pending_id, now, "webhook_attempt", None, None, event
                )
            return delivery

        return self._write(txn, "recording a webhook attempt")


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook event for the marketplace, as sent (or still to send)."""

    id: int
    pending_id: str | None
    event_type: str
    body: str
    attempts: int
    delivered_at: float | None
    last_error: str | None
    created_at: float

    @property
    def delivered(self) -> bool:
        return self.delivered_at is not None


def _delivery_from_row(row: Row) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        pending_id=row["pending_id"],
        event_type=row["event_type"],
        body=row["body"],
        attempts=row["attempts"],
        delivered_at=row["delivered_at"],
        last_error=row["last_error"],
        created_at=row["created_at"],
    )
