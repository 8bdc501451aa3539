"""The store: sellers, pending grants and their events, cached grants, webhook deliveries.

:class:`Store` is the repositories (``store_sellers``, ``store_pending``, ``store_legs``,
``store_caches``, ``store_webhooks``, ``store_idempotency``) over one backend
(``backend.py``): a SQLite file (``sqlite_backend.py``), the zero-set-up default, or a
PostgreSQL database (``postgres_backend.py``) that listeners and support staff on several
machines share. Each write is one transaction; a state change, its audit event and the
webhook delivery that announces it are written in the same one. The rows' types are in
``records.py`` (``State`` is importable from here too, as the README's example does).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from opapprove.approvals import records
from opapprove.approvals.backend import Backend, StoreError
from opapprove.approvals.records import State
from opapprove.approvals.sqlite_backend import SQLiteBackend
from opapprove.approvals.store_base import PendingNotFound, StaleState
from opapprove.approvals.store_caches import CacheRepository
from opapprove.approvals.store_idempotency import IdempotencyRepository
from opapprove.approvals.store_legs import LegRepository
from opapprove.approvals.store_pending import DURABLE_STATES, PendingRepository
from opapprove.approvals.store_sellers import SellerRepository
from opapprove.approvals.store_webhooks import Outbound, Outbox, WebhookRepository
from opapprove.paths import DatabaseURL, StoreLocation, store_location

__all__ = [
    "DURABLE_STATES",
    "Outbound",
    "Outbox",
    "PendingNotFound",
    "StaleState",
    "State",
    "Store",
    "StoreError",
]

# The row types this module exported before they were imported from records.py alone: still
# importable from here for code written against the old face, with a warning saying where.
_MOVED_TO_RECORDS = frozenset(
    [
        "CachedGrant",
        "Event",
        "FINAL_STATES",
        "Leg",
        "LegState",
        "Pending",
        "Seller",
        "WebhookDelivery",
    ]
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_RECORDS:
        warnings.warn(
            f"import {name} from opapprove.approvals.records, not from its store module",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(records, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_backend(location: StoreLocation | str) -> Backend:
    """The backend for a store location: a SQLite file, or a postgresql:// database."""
    where = store_location(location)
    if isinstance(where, DatabaseURL):
        from opapprove.approvals.postgres_backend import PostgresBackend

        return PostgresBackend(where)
    return SQLiteBackend(where.expanduser())


class Store(
    SellerRepository,
    PendingRepository,
    LegRepository,
    CacheRepository,
    WebhookRepository,
    IdempotencyRepository,
):
    """The opapprove store: a SQLite file or a PostgreSQL database, one API over both.

    Safe to share between threads and processes (and, on PostgreSQL, machines).
    """

    def __init__(
        self, location: StoreLocation | str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.backend: Backend = open_backend(location)
        self.location: StoreLocation = (
            self.backend.path
            if isinstance(self.backend, SQLiteBackend)
            else store_location(location)
        )
        self._clock = clock

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
