"""Webhook deliveries: each marketplace event, written before it is sent, and its attempts."""

from __future__ import annotations

from typing import Any

from opapprove.approvals.backend import StoreError, Tx
from opapprove.approvals.records import WebhookDelivery
from opapprove.approvals.store_base import Repository
from opapprove.approvals.store_rows import _delivery_from_row


class WebhookRepository(Repository):
    """Webhook deliveries and their attempts (each attempt also an event of its grant)."""

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
