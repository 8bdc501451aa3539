"""Rows <-> records: the one mapping between the store's columns and the record types.

JSON documents are kept as text, ``poll`` as an integer, times as seconds since the epoch:
the same on SQLite and PostgreSQL, so the repositories read rows the same way on both.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, TypeVar

from opapprove.approvals.backend import Row
from opapprove.approvals.records import (
    LEG_FIELDS,
    LEG_JSON_FIELDS,
    LEG_MANAGED_FIELDS,
    PENDING_FIELDS,
    PENDING_JSON_FIELDS,
    PENDING_MANAGED_FIELDS,
    CachedGrant,
    Event,
    Leg,
    LegState,
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


def _columns(
    fields: Mapping[str, Any],
    caller: str,
    *,
    record: str = "Pending",
    known: tuple[str, ...] = PENDING_FIELDS,
    managed: frozenset[str] = PENDING_MANAGED_FIELDS,
    json_fields: frozenset[str] = PENDING_JSON_FIELDS,
) -> dict[str, Any]:
    """Validate caller-supplied record fields and turn them into column values."""
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise TypeError(f"{caller}() got unknown {record} fields: {', '.join(unknown)}")
    taken = sorted(set(fields) & managed)
    if taken:
        raise TypeError(f"{caller}() cannot set {', '.join(taken)}: the store manages them")
    columns: dict[str, Any] = {}
    for name, value in fields.items():
        if name in json_fields:
            columns[name] = None if value is None else _dumps(value)
        elif name == "poll":
            columns[name] = int(bool(value))
        else:
            columns[name] = value
    return columns


def _assignments(columns: Iterable[str]) -> str:
    """``name = ?, `` for each column, the start of an UPDATE's SET (the names checked by
    ``_columns`` against a record's fields, never input)."""
    return "".join(f"{name} = ?, " for name in columns)


def _pending_columns(fields: Mapping[str, Any], caller: str) -> dict[str, Any]:
    return _columns(fields, caller)


def _leg_columns(fields: Mapping[str, Any], caller: str) -> dict[str, Any]:
    return _columns(
        fields,
        caller,
        record="Leg",
        known=LEG_FIELDS,
        managed=LEG_MANAGED_FIELDS,
        json_fields=LEG_JSON_FIELDS,
    )


def _row_values(
    row: Row, fields: tuple[str, ...], json_fields: frozenset[str], state: type[Any]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in fields:
        value = row[name]
        if name in json_fields:
            value = _loads(value)
        elif name == "state":
            value = state(value)
        elif name == "poll":
            value = bool(value)
        values[name] = value
    return values


def _pending_from_row(row: Row) -> Pending:
    return Pending(**_row_values(row, PENDING_FIELDS, PENDING_JSON_FIELDS, State))


def _leg_from_row(row: Row) -> Leg:
    return Leg(**_row_values(row, LEG_FIELDS, LEG_JSON_FIELDS, LegState))


@cache
def _field_names(cls: type[Any]) -> tuple[str, ...]:
    # Asked for every row read (a bulk replay reads thousands): dataclasses.fields each time
    # rebuilt the list.
    return tuple(f.name for f in dataclasses.fields(cls))


def _record(cls: type[R], row: Row, **json_defaults: Any) -> R:
    """A record whose fields are the row's columns of the same names; the columns named in
    ``json_defaults`` hold JSON text (decoded, or that default when empty)."""
    values = {name: row[name] for name in _field_names(cls)}  # type: ignore[arg-type]
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
