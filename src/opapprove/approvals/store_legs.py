"""A split payment's legs: one row per seller, its own state, committed with an event.

A split grant (``Pending.leg_count`` > 0) is created with its legs in one transaction
(``create_pending(legs=...)``); from then on each leg moves through ``LegState`` on its
own, like a grant: the row and its audit event are written together, and ``paying`` is
committed durably before that leg's outgoing payment is created (docs/split-payments.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opapprove.approvals.backend import Tx
from opapprove.approvals.records import Leg, LegState
from opapprove.approvals.store_base import (
    Repository,
    StaleState,
    fetch_one,
    move_states,
    stale,
)
from opapprove.approvals.store_rows import _assignments, _leg_columns, _leg_from_row

# As DURABLE_STATES for grants: a leg never falls back from ``paying`` after a power loss.
DURABLE_LEG_STATES = frozenset({LegState.PAYING})


def leg_row(pending_id: str, number: int, fields: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The columns of leg ``number`` (from 1) of a new split grant, in ``started``."""
    return {
        "pending_id": pending_id,
        "leg": number,
        "state": str(LegState.STARTED),
        "created_at": now,
        "updated_at": now,
        "version": 1,
        **_leg_columns(fields, "create_pending(legs)"),
    }


class LegRepository(Repository):
    """The legs of split grants: read, moved from state to state, updated."""

    def legs(self, pending_id: str) -> list[Leg]:
        """A grant's legs in order (none for a single-seller grant)."""
        return self._read_all(
            "SELECT * FROM pending_legs WHERE pending_id = ? ORDER BY leg",
            (pending_id,),
            _leg_from_row,
            "reading a split payment's legs",
        )

    def get_leg(self, pending_id: str, leg: int) -> Leg | None:
        def read(conn: Tx) -> Leg | None:
            return self._fetch_leg(conn, pending_id, leg)

        return self._read(read, "reading a leg")

    def transition_leg(
        self,
        pending_id: str,
        leg: int,
        to: LegState,
        *,
        expect: LegState | Iterable[LegState],
        event: str | None = None,
        data: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Leg:
        """Move one leg from one of ``expect`` to ``to`` with ``fields``, and log it.

        One transaction: the leg, its event and the grant's ``updated_at`` (a grant whose
        legs move is not stuck). :class:`StaleState` if the leg is in another state."""
        target, expected = move_states(LegState, to, expect, fields)
        columns = _leg_columns(fields, "transition_leg")

        def txn(conn: Tx) -> Leg:
            row = conn.execute_locking(
                "SELECT state FROM pending_legs WHERE pending_id = ? AND leg = ?",
                (pending_id, leg),
            ).fetchone()
            if row is None:
                raise _no_leg(pending_id, leg)
            current = LegState(row["state"])
            if current not in expected:
                raise stale(
                    f"leg {leg} of grant {pending_id}", pending_id, current, expected, target
                )
            now = self._clock()
            self._update_leg(conn, pending_id, leg, columns, now, state=target)
            self._insert_event(
                conn,
                pending_id,
                now,
                event or f"leg_{target}",
                str(current),
                str(target),
                {"leg": leg, **(data or {})},
            )
            moved = self._fetch_leg(conn, pending_id, leg)
            assert moved is not None
            return moved

        return self._write(txn, "saving a leg's state change", durable=target in DURABLE_LEG_STATES)

    def update_leg(
        self,
        pending_id: str,
        leg: int,
        *,
        event: str | None = None,
        data: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Leg:
        """Save ``fields`` of a leg without a state change; with ``event``, also log it."""
        columns = _leg_columns(fields, "update_leg")

        def txn(conn: Tx) -> Leg:
            now = self._clock()
            if not self._update_leg(conn, pending_id, leg, columns, now):
                raise _no_leg(pending_id, leg)
            if event is not None:
                self._insert_event(
                    conn, pending_id, now, event, None, None, {"leg": leg, **(data or {})}
                )
            updated = self._fetch_leg(conn, pending_id, leg)
            assert updated is not None
            return updated

        return self._write(txn, "updating a leg")

    def record_leg_error(self, pending_id: str, leg: int, message: str) -> None:
        """A failed attempt at one leg: on the leg and on its grant (``pending list`` shows
        the grant's), with an ``error`` event; ``updated_at`` is left alone (stuck shows)."""

        def txn(conn: Tx) -> None:
            cur = conn.execute(
                "UPDATE pending_legs SET last_error = ?, attempts = attempts + 1,"
                " version = version + 1 WHERE pending_id = ? AND leg = ?",
                (message, pending_id, leg),
            )
            if cur.rowcount == 0:
                raise _no_leg(pending_id, leg)
            self._count_error(conn, pending_id, f"leg {leg}: {message}")
            self._insert_event(
                conn,
                pending_id,
                self._clock(),
                "error",
                None,
                None,
                {"leg": leg, "message": message},
            )

        self._write(txn, "recording a leg's error")

    @staticmethod
    def _fetch_leg(conn: Tx, pending_id: str, leg: int) -> Leg | None:
        return fetch_one(
            conn,
            "SELECT * FROM pending_legs WHERE pending_id = ? AND leg = ?",
            (pending_id, leg),
            _leg_from_row,
        )

    @staticmethod
    def _update_leg(
        conn: Tx,
        pending_id: str,
        leg: int,
        columns: Mapping[str, Any],
        now: float,
        *,
        state: LegState | None = None,
    ) -> bool:
        sets = _assignments(columns)
        params: list[Any] = list(columns.values())
        if state is not None:
            sets += "state = ?, "
            params.append(str(state))
        # Column names come from the Leg dataclass (checked by _leg_columns), never input.
        cur = conn.execute(
            f"UPDATE pending_legs SET {sets}version = version + 1, updated_at = ?"  # noqa: S608
            " WHERE pending_id = ? AND leg = ?",
            (*params, now, pending_id, leg),
        )
        if cur.rowcount == 0:
            return False
        conn.execute("UPDATE pending SET updated_at = ? WHERE id = ?", (now, pending_id))
        return True


def _no_leg(pending_id: str, leg: int) -> StaleState:
    return StaleState(
        f"grant {pending_id} has no leg {leg}",
        f"see its legs with `opapprove pending show {pending_id}`",
        pending_id=pending_id,
    )
