"""Webhook deliveries: each marketplace event, written before it is sent, and its attempts.

A delivery is written in the same transaction as the transition it announces (the
outbox: :class:`Outbound`, see ``PendingRepository.transition``), so a crash after that
commit cannot lose it; senders then only send rows already written. Each attempt is
claimed first (:meth:`WebhookRepository.claim_webhook_attempt`) and the delivery held by its
sender until it is delivered or let go, so of several senders in several processes (a
listener, a ``pending replay`` sweeping) only one sends it at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opapprove.approvals.backend import StoreError, Tx
from opapprove.approvals.records import Pending, WebhookDelivery
from opapprove.approvals.store_base import Repository, fetch_one
from opapprove.approvals.store_rows import _delivery_from_row


@dataclass(frozen=True)
class Outbound:
    """A webhook delivery a transition writes with itself: its event type and body.

    An event is one ``event_type`` for one pending grant (with ``same_body``, one body: for
    events that may recur with new content); one already written is not written again."""

    event_type: str
    body: str
    same_body: bool = False


# What a transition announces, from the grant as the transition leaves it (None: nothing).
Outbox = Callable[[Pending], Outbound | None]


def _existing(conn: Tx, pending_id: str, out: Outbound) -> Any:
    sql = "SELECT * FROM webhook_deliveries WHERE pending_id = ? AND event_type = ?"
    params: tuple[Any, ...] = (pending_id, out.event_type)
    if out.same_body:
        sql += " AND body = ?"
        params = (*params, out.body)
    return conn.execute(sql + " ORDER BY id LIMIT 1", params).fetchone()


_BY_ID = "SELECT * FROM webhook_deliveries WHERE id = ?"


def _no_delivery(delivery_id: int) -> StoreError:
    return StoreError(f"no webhook delivery {delivery_id} in the store", None)


_OUTBOUND = (
    "INSERT INTO webhook_deliveries (pending_id, event_type, body, created_at)"
    " SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM webhook_deliveries"
    " WHERE pending_id = ? AND event_type = ?)"
)
_OUTBOUND_SAME_BODY = _OUTBOUND[:-1] + " AND body = ?)"


def write_outbound(conn: Tx, pending_id: str, out: Outbound, now: float) -> None:
    """Inside a transition (the grant's row locked): the delivery, unless written before.

    One statement, whether or not it was (the check costs no round trip of its own)."""
    sql = _OUTBOUND_SAME_BODY if out.same_body else _OUTBOUND
    key = (pending_id, out.event_type, *((out.body,) if out.same_body else ()))
    conn.execute(sql, (pending_id, out.event_type, out.body, now, *key))


class WebhookRepository(Repository):
    """Webhook deliveries and their attempts (each attempt also an event of its grant)."""

    def add_webhook_delivery(
        self, pending_id: str, event_type: str, body: str, *, same_body: bool = False
    ) -> tuple[WebhookDelivery, bool]:
        """The delivery of one event, written before it is sent; ``(delivery, created)``.

        If it exists already (written by its transition, or by an earlier call), that row
        comes back with ``created`` False.
        """
        out = Outbound(event_type, body, same_body)

        def txn(conn: Tx) -> tuple[WebhookDelivery, bool]:
            # The grant's row lock makes a second process asking at once wait, then find ours.
            conn.execute_locking("SELECT 1 FROM pending WHERE id = ?", (pending_id,))
            row = _existing(conn, pending_id, out)
            if row is not None:
                return _delivery_from_row(row), False
            delivery_id = conn.insert(
                "INSERT INTO webhook_deliveries (pending_id, event_type, body, created_at)"
                " VALUES (?, ?, ?, ?)",
                (pending_id, event_type, body, self._clock()),
            )
            return self._fetch_delivery(conn, delivery_id), True

        return self._write(txn, "saving a webhook delivery")

    @staticmethod
    def _fetch_delivery(conn: Tx, delivery_id: int) -> WebhookDelivery:
        found = fetch_one(conn, _BY_ID, (delivery_id,), _delivery_from_row)
        if found is None:
            raise _no_delivery(delivery_id)
        return found

    def get_webhook_delivery(self, delivery_id: int) -> WebhookDelivery | None:
        return self._read_one(
            _BY_ID, (delivery_id,), _delivery_from_row, "reading a webhook delivery"
        )

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
        return self._read_all(sql, params, _delivery_from_row, "listing webhook deliveries")

    def claim_webhook_attempt(
        self, delivery: WebhookDelivery, *, hold_for: float, continuing: bool = False
    ) -> WebhookDelivery | None:
        """Count the next attempt at sending ``delivery`` before it is made, and hold the
        delivery for ``hold_for`` seconds; the delivery with that attempt counted, or
        ``None`` if it was delivered, another sender holds it, or another sender counted
        an attempt since ``delivery`` was read. ``continuing``: the holder's next attempt.
        """

        def txn(conn: Tx) -> WebhookDelivery | None:
            now = self._clock()
            cur = conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, sending_until = ?"
                " WHERE id = ? AND attempts = ? AND delivered_at IS NULL"
                " AND (sending_until IS NULL OR sending_until <= ? OR ? = 1)",
                (now + hold_for, delivery.id, delivery.attempts, now, int(continuing)),
            )
            if cur.rowcount == 0:
                return None
            return self._fetch_delivery(conn, delivery.id)

        return self._write(txn, "claiming a webhook attempt")

    def record_webhook_attempt(
        self,
        delivery_id: int,
        *,
        delivered: bool,
        error: str | None = None,
        data: dict[str, Any] | None = None,
        hold_for: float | None = None,
    ) -> WebhookDelivery:
        """What came of an attempt (counted by :meth:`claim_webhook_attempt`), logged as a
        ``webhook_attempt`` event in the same transaction. ``hold_for``: the sender will
        try again within that many seconds (else it lets the delivery go)."""

        def txn(conn: Tx) -> WebhookDelivery:
            now = self._clock()
            cur = conn.execute(
                "UPDATE webhook_deliveries SET last_error = ?,"
                " delivered_at = CASE WHEN ? = 1 THEN coalesce(delivered_at, ?)"
                " ELSE delivered_at END, sending_until = ?"
                " WHERE id = ?",
                (
                    error,
                    int(delivered),
                    now,
                    None if hold_for is None else now + hold_for,
                    delivery_id,
                ),
            )
            if cur.rowcount == 0:
                raise _no_delivery(delivery_id)
            delivery = self._fetch_delivery(conn, delivery_id)
            if delivery.pending_id is not None:
                event = {"delivery": delivery_id, "type": delivery.event_type, **(data or {})}
                self._insert_event(
                    conn, delivery.pending_id, now, "webhook_attempt", None, None, event
                )
            return delivery

        return self._write(txn, "recording a webhook attempt")
