"""Idempotency keys of ``listen --api``'s quote start: which grant a key's first request
stored, and the answer it got.

A key is claimed in the transaction that stores its grant (:meth:`claim_key`, called by
``create_pending``), so a key never names a grant that was not stored, and two requests
with one key cannot both store one: the second's transaction fails as a whole. The answer
is written once the request is answered; a key without one (its request is still running,
or crashed) names the grant a retry carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opapprove.approvals.backend import Row, StoreError, Tx
from opapprove.approvals.store_base import Repository
from opapprove.approvals.store_rows import _dumps, _loads

# How long a key is kept (Stripe's 24 h): a retry later than this is a new request.
KEEP_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class Claim:
    """A request's key: ``scope`` is its caller, ``request_hash`` what it asked for."""

    scope: str
    key: str
    request_hash: str


@dataclass(frozen=True)
class IdempotencyKey(Claim):
    """A claim as stored: the grant its first request stored, and that request's answer
    (``status``, ``answer``) once it was given."""

    pending_id: str
    status: int | None
    answer: dict[str, Any] | None
    created_at: float


class KeyTaken(StoreError):
    """Another request stored a grant under this key first (nothing of this one was kept)."""


def _key_from_row(row: Row) -> IdempotencyKey:
    answer = row["answer"]
    return IdempotencyKey(
        scope=row["scope"],
        key=row["key"],
        request_hash=row["request_hash"],
        pending_id=row["pending_id"],
        status=row["status"],
        answer=None if answer is None else _loads(answer),
        created_at=row["created_at"],
    )


def claim_key(conn: Tx, claim: Claim, pending_id: str, now: float) -> None:
    """Inside the transaction storing grant ``pending_id``: the key names it, or KeyTaken
    (which rolls the grant back with it). Keys past KEEP_SECONDS are removed first."""
    conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (now - KEEP_SECONDS,))
    added = conn.execute(
        "INSERT INTO idempotency_keys (scope, key, request_hash, pending_id, created_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO NOTHING",
        (claim.scope, claim.key, claim.request_hash, pending_id, now),
    ).rowcount
    if not added:
        raise KeyTaken(
            f"Idempotency-Key {claim.key!r} was taken by another request meanwhile",
            "retry with the same key to get that request's answer",
        )


class IdempotencyRepository(Repository):
    """The keys (at most KEEP_SECONDS old) and their answers."""

    def get_idempotency_key(
        self, scope: str, key: str, *, now: float | None = None
    ) -> IdempotencyKey | None:
        found = self._read_one(
            "SELECT * FROM idempotency_keys WHERE scope = ? AND key = ?",
            (scope, key),
            _key_from_row,
            "reading an idempotency key",
        )
        at = self._clock() if now is None else now
        if found is None or at - found.created_at > KEEP_SECONDS:
            return None
        return found

    def keep_answer(self, scope: str, key: str, status: int, answer: dict[str, Any]) -> bool:
        """Store the key's answer, unless it has one already; whether it was stored."""
        return (
            self._write_one(
                "UPDATE idempotency_keys SET status = ?, answer = ?"
                " WHERE scope = ? AND key = ? AND answer IS NULL",
                (status, _dumps(answer), scope, key),
                "keeping an idempotency key's answer",
            )
            > 0
        )
