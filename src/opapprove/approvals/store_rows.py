"""Rows <-> records: the one mapping between the store's columns and the record types.

JSON documents are kept as text, ``poll`` as an integer, times as seconds since the epoch:
the same on SQLite and PostgreSQL, so the repositories read rows the same way on both.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, TypeVar

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

R = TypeVar("R")


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


def _record(cls: type[R], row: Row, **json_defaults: Any) -> R:
    """A record whose fields are the row's columns of the same names; the columns named in
    ``json_defaults`` hold JSON text (decoded, or that default when empty)."""
    values = {f.name: row[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name, default in json_defaults.items():
        values[name] = _loads(values[name]) or default
    return cls(**values)


def _event_from_row(row: Row) -> Event:
    return _record(Event, row, data={})


def _seller_from_row(row: Row) -> Seller:
    return _record(Seller, row)


def _grant_from_row(row: Row) -> CachedGrant:
    return _record(CachedGrant, row, access=[])


def _delivery_from_row(row: Row) -> WebhookDelivery:
    return _record(WebhookDelivery, row)
