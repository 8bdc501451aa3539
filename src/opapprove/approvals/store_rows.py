"""Rows <-> records: the one mapping between the store's columns and the record types.

JSON documents are kept as text, ``poll`` as an integer, times as seconds since the epoch:
the same on SQLite and PostgreSQL, so the repositories read rows the same way on both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opapprove.approvals.backend import Row
from opapprove.approvals.records import (
    PENDING_FIELDS,
    PENDING_JSON_FIELDS,
    PENDING_MANAGED_FIELDS,
    CachedGrant,
    Event,
    Pending,
    Seller,
    State,
    WebhookDelivery,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


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
