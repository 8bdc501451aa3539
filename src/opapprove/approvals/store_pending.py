"""Pending grants: their rows, state transitions, audit events and leases."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opapprove.approvals.backend import Tx
from opapprove.approvals.ids import new_id
from opapprove.approvals.leases import Holder, process_gone
from opapprove.approvals.records import FINAL_STATES, Event, Pending, State
from opapprove.approvals.store_base import (
    Repository,
    _not_found,
    move_states,
    stale,
)
from opapprove.approvals.store_idempotency import Claim, claim_key
from opapprove.approvals.store_legs import leg_row
from opapprove.approvals.store_rows import (
    _assignments,
    _dumps,
    _event_from_row,
    _loads,
    _pending_columns,
    _pending_from_row,
)
from opapprove.approvals.store_webhooks import Outbox, write_outbound
from opapprove.openpayments.redaction import redact_json

# Transitions committed durably (fsync; SQLite's synchronous=FULL, PostgreSQL's
# synchronous_commit=on), which also makes every earlier commit durable: after a power loss
# a grant may fall back a step, but never from ``paying`` to ``grant_issued``, from where a
# replay would pay a second time.
DURABLE_STATES = frozenset({State.PAYING})


@dataclass(frozen=True)
class _Move:
    """One transition, as ``transition`` was asked for it."""

    pending_id: str
    target: State
    expected: tuple[State, ...]
    columns: dict[str, Any]
    event: str | None
    data: dict[str, Any] | None
    now: float


class PendingRepository(Repository):
    """Pending grants, their transitions and events, and who may work on each (leases)."""

    def create_pending(
        self,
        *,
        seller_id: str,
        offer_id: str,
        buyer_wallet: str,
        amount: str,
        note: dict[str, Any] | None = None,
        legs: Sequence[Mapping[str, Any]] = (),
        claim: Claim | None = None,
        **fields: Any,
    ) -> Pending:
        """A new pending grant in state ``started``, with a ``created`` event.

        ``note`` goes into that event's data, in the same transaction (what the caller
        asked for that has no column, e.g. the quote check's ``maxDebit``). ``legs`` make
        it a split payment: one row per seller (``Leg`` fields), written with it. ``claim``
        is the Idempotency-Key that names the grant (KeyTaken if another request has it)."""
        if legs:
            fields["leg_count"] = len(legs)
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
            self._insert_row(conn, "pending", values)
            self._insert_event(
                conn,
                pending_id,
                now,
                "created",
                None,
                str(State.STARTED),
                {**(note or {}), "seller_id": seller_id, "offer_id": offer_id, "amount": amount},
            )
            for number, leg in enumerate(legs, start=1):
                self._insert_row(conn, "pending_legs", leg_row(pending_id, number, leg, now))
            if claim is not None:
                claim_key(conn, claim, pending_id, now)
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
        return self._read_all(sql, params, _pending_from_row, "listing pending grants")

    def transition(
        self,
        pending_id: str,
        to: State,
        *,
        expect: State | Iterable[State],
        event: str | None = None,
        data: dict[str, Any] | None = None,
        outbox: Outbox | None = None,
        **fields: Any,
    ) -> Pending:
        """Move a pending grant from one of ``expect`` to ``to``, saving ``fields`` with it.

        One transaction: the row, its event and the webhook delivery ``outbox`` makes of
        the moved grant (if any) are written together or not at all.
        Raises :class:`StaleState` (nothing changed) if the grant is in another state.
        """
        target, expected = move_states(State, to, expect, fields)
        columns = _pending_columns(fields, "transition")

        def txn(conn: Tx) -> Pending:
            now = self._clock()
            # Two paths on purpose: on PostgreSQL the one statement is one round trip where
            # the steps are five with BEGIN/COMMIT (bench/RESULTS.md, section 7: what cut a
            # grant from 41 statements to 23); SQLite allows no UPDATE inside WITH, and its
            # steps are calls inside the process.
            step = self._move_at_once if conn.writing_ctes else self._move_in_steps
            moved = step(conn, _Move(pending_id, target, expected, columns, event, data, now))
            outbound = outbox(moved) if outbox is not None else None
            if outbound is not None:
                write_outbound(conn, pending_id, outbound, now)
            return moved

        if target in DURABLE_STATES or outbox is not None:
            return self._write(txn, "saving a state change", durable=target in DURABLE_STATES)
        return self.backend.write_single(txn, "saving a state change")

    def _move_in_steps(self, conn: Tx, move: _Move) -> Pending:
        """The transition as three statements: lock and check, update, append the event."""
        pending_id, target, expected, columns, now = (
            move.pending_id,
            move.target,
            move.expected,
            move.columns,
            move.now,
        )
        row = conn.execute_locking(
            "SELECT state FROM pending WHERE id = ?", (pending_id,)
        ).fetchone()
        if row is None:
            raise _not_found(pending_id)
        current = State(row["state"])
        if current not in expected:
            raise stale(f"pending grant {pending_id}", pending_id, current, expected, target)
        sets = _assignments(columns)
        moved = self._update_pending(
            conn,
            f"UPDATE pending SET {sets}state = ?, version = version + 1, updated_at = ?"  # noqa: S608
            " WHERE id = ? AND state = ?",
            (*columns.values(), str(target), now, pending_id, str(current)),
            pending_id,
        )
        assert moved is not None  # the row is locked and in state ``current``
        kind = move.event or f"{current}->{target}"
        self._insert_event(conn, pending_id, now, kind, str(current), str(target), move.data)
        return moved

    @staticmethod
    def _move_at_once(conn: Tx, move: _Move) -> Pending:
        """The same transition as one statement (PostgreSQL): one round trip, not three.

        ``old`` locks the row as the SELECT of the steps does; ``moved`` is the UPDATE when
        the row is in an expected state; ``logged`` appends the event of what moved. The
        row that comes back holds the state found, and the moved row if it moved."""
        pending_id, expected = move.pending_id, move.expected
        sets = _assignments(move.columns)
        marks = ", ".join("?" for _ in expected)
        target_text = str(move.target)
        row = conn.execute(
            "WITH old AS (SELECT id, state FROM pending WHERE id = ? FOR NO KEY UPDATE),"  # noqa: S608
            f" moved AS (UPDATE pending SET {sets}state = ?, version = pending.version + 1,"
            " updated_at = ? FROM old"
            f" WHERE pending.id = old.id AND old.state IN ({marks})"
            " RETURNING pending.*, old.state AS from_state),"
            " logged AS (INSERT INTO events (pending_id, at, kind, from_state, to_state, data)"
            " SELECT id, ?, coalesce(?, from_state || '->' || ?), from_state, ?, ? FROM moved)"
            " SELECT old.state AS found_state, moved.* FROM old LEFT JOIN moved ON true",
            (
                pending_id,
                *move.columns.values(),
                target_text,
                move.now,
                *(str(s) for s in expected),
                move.now,
                move.event,
                target_text,
                target_text,
                _dumps(redact_json(dict(move.data or {}))),
            ),
        ).fetchone()
        if row is None:
            raise _not_found(pending_id)
        if row["id"] is None:
            found = State(row["found_state"])
            raise stale(f"pending grant {pending_id}", pending_id, found, expected, move.target)
        return _pending_from_row(row)

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
            sets = _assignments(columns)
            sql = f"UPDATE pending SET {sets}version = version + 1, updated_at = ? WHERE id = ?"  # noqa: S608
            params = (*columns.values(), now, pending_id)
            if event is not None and conn.writing_ctes:
                # The row and its event in one statement (PostgreSQL): write_single sends it
                # without BEGIN/COMMIT, one round trip where a transaction takes four
                # (bench/RESULTS.md, section 7). SQLite cannot put the UPDATE in a WITH.
                clean = _dumps(redact_json(dict(data or {})))
                row = conn.execute(
                    f"WITH updated AS ({sql} RETURNING *),"  # noqa: S608
                    " logged AS (INSERT INTO events (pending_id, at, kind, data)"
                    " SELECT id, ?, ?, ? FROM updated) SELECT * FROM updated",
                    (*params, now, event, clean),
                ).fetchone()
                if row is None:
                    raise _not_found(pending_id)
                return _pending_from_row(row)
            updated = self._update_pending(conn, sql, params, pending_id)
            if updated is None:
                raise _not_found(pending_id)
            if event is not None:
                self._insert_event(conn, pending_id, now, event, None, None, data)
            return updated

        return self.backend.write_single(txn, "updating a pending grant")

    def record_error(self, pending_id: str, message: str) -> None:
        """Note a failed attempt: ``last_error``, ``attempts + 1`` and an ``error`` event.

        ``updated_at`` is left alone so a grant that keeps failing still shows as stuck.
        """

        def txn(conn: Tx) -> None:
            if not self._count_error(conn, pending_id, message):
                raise _not_found(pending_id)
            self._insert_event(
                conn, pending_id, self._clock(), "error", None, None, {"message": message}
            )

        self._write(txn, "recording an error")

    def add_event(self, pending_id: str, kind: str, data: dict[str, Any] | None = None) -> Event:
        """Append to a pending grant's audit trail; credentials in ``data`` are redacted."""

        def txn(conn: Tx) -> Event:
            at = self._clock()
            if conn.returning:
                # One statement, the grant's existence checked in it, on both backends
                # (write_single sends it on PostgreSQL without BEGIN/COMMIT). The steps
                # below are for a SQLite older than 3.35, without RETURNING (RHEL 9: 3.34).
                clean = redact_json(dict(data or {}))
                row = conn.execute(
                    "INSERT INTO events (pending_id, at, kind, data) SELECT ?, ?, ?, ?"
                    " WHERE EXISTS (SELECT 1 FROM pending WHERE id = ?) RETURNING id",
                    (pending_id, at, kind, _dumps(clean), pending_id),
                ).fetchone()
                if row is None:
                    raise _not_found(pending_id)
                return Event(int(row["id"]), pending_id, at, kind, None, None, clean)
            if conn.execute("SELECT 1 FROM pending WHERE id = ?", (pending_id,)).fetchone() is None:
                raise _not_found(pending_id)
            return self._insert_event(conn, pending_id, at, kind, None, None, data)()

        return self.backend.write_single(txn, "adding an event")

    def creation_note(self, pending_id: str) -> dict[str, Any]:
        """The data of the grant's ``created`` event: create_pending's ``note`` and its ids.

        One row, where ``events`` would read the whole trail (the quote check asks for it
        on every grant of a bulk replay)."""

        def read(conn: Tx) -> dict[str, Any]:
            row = conn.execute(
                "SELECT data FROM events WHERE pending_id = ? AND kind = 'created'"
                " ORDER BY id LIMIT 1",
                (pending_id,),
            ).fetchone()
            note: dict[str, Any] = (_loads(row["data"]) if row is not None else None) or {}
            return note

        return self._read(read, "reading a pending grant's events")

    def events(self, pending_id: str) -> list[Event]:
        return self._read_all(
            "SELECT * FROM events WHERE pending_id = ? ORDER BY id",
            (pending_id,),
            _event_from_row,
            "reading events",
        )

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
        at = self._clock() if now is None else now
        # The usual case, a free lease (or this attempt's own): one statement, which taking
        # it again after a dropped connection leaves as it was.
        taken = self._write_one(
            "UPDATE pending SET lease_holder = ?, lease_until = ?, lease_host = ?,"
            " lease_pid = ? WHERE id = ?"
            " AND (lease_holder IS NULL OR lease_holder = ? OR lease_until IS NULL)",
            (who.id, at + seconds, who.host, who.pid, pending_id, who.id),
            "taking a lease",
        )
        if taken:
            return True

        def txn(conn: Tx) -> bool:
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

        self._write_one(
            "UPDATE pending SET lease_holder = NULL, lease_until = NULL, lease_host = NULL,"
            " lease_pid = NULL WHERE id = ? AND lease_holder = ?",
            (pending_id, who),
            "releasing a lease",
        )
