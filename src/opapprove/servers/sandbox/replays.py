"""Signatures already accepted: an exact replay of a state-changing request is refused.

Rafiki keeps no such memory (a captured request can be sent again verbatim). The sandbox
remembers the signature of each accepted request that creates something (a grant, an
incoming payment, a quote, an outgoing payment) for as long as its ``created`` would still
be accepted, so a replay inside the freshness window is refused and one outside it fails
the window check. Other requests are not remembered: Ed25519 signatures are deterministic
and ``created`` has one-second resolution, so a client that polls, cancels twice or reads a
payment twice within a second sends byte-identical requests, and Rafiki's answer to the
repeat (401 "invalid grant", 409 "wrong state"...) must reach it; none of those can act twice.
"""

from __future__ import annotations

import threading

# How long a signature is remembered when the freshness window is off (Rafiki's leniency).
DEFAULT_MEMORY = 300.0
GUARDED_OPERATIONS = frozenset(
    {"post-request", "create-incoming-payment", "create-quote", "create-outgoing-payment"}
)


class ReplayGuard:
    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, signature: str, *, now: float, memory: float) -> bool:
        """Record ``signature``; False when it was already accepted within ``memory`` s."""
        with self._lock:
            if len(self._seen) > 1024:
                self._seen = {s: t for s, t in self._seen.items() if now - t <= memory}
            seen_at = self._seen.get(signature)
            if seen_at is not None and now - seen_at <= memory:
                return False
            self._seen[signature] = now
            return True
