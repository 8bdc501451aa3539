"""What the flow caches in the store: non-interactive grants and wallet address documents."""

from __future__ import annotations

from typing import Any

from opapprove.approvals.backend import Tx
from opapprove.approvals.records import CachedGrant
from opapprove.approvals.store_base import Repository
from opapprove.approvals.store_rows import _dumps, _grant_from_row, _loads


class CacheRepository(Repository):
    """Cached grants (until they expire) and wallet address documents (for a while)."""

    def get_cached_grant(
        self, key: str, *, now: float | None = None, margin: float = 30.0
    ) -> CachedGrant | None:
        """The cached grant for ``key`` if it is still good for at least ``margin`` seconds."""

        grant = self._read_one(
            "SELECT * FROM cached_grants WHERE key = ?",
            (key,),
            _grant_from_row,
            "reading a cached grant",
        )
        if grant is None:
            return None
        at = self._clock() if now is None else now
        if grant.expires_at is not None and grant.expires_at - margin <= at:
            return None
        return grant

    def put_cached_grant(self, grant: CachedGrant) -> None:
        self._write_one(
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
            "caching a grant",
        )

    def drop_cached_grant(self, key: str) -> None:
        self._write_one(
            "DELETE FROM cached_grants WHERE key = ?", (key,), "dropping a cached grant"
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
        self._write_one(
            "INSERT INTO wallet_documents (url, document, fetched_at) VALUES (?, ?, ?)"
            " ON CONFLICT (url) DO UPDATE SET document = excluded.document,"
            " fetched_at = excluded.fetched_at",
            (url, _dumps(document), at),
            "caching a wallet document",
        )

    def drop_wallet_document(self, url: str) -> None:
        self._write_one(
            "DELETE FROM wallet_documents WHERE url = ?",
            (url,),
            "dropping a cached wallet document",
        )
