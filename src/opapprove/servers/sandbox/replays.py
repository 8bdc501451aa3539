"""Signatures already accepted: an exact replay of a state-changing request is refused.

Rafiki keeps no such memory (a captured request can be sent again verbatim). The sandbox
remembers each accepted POST or DELETE signature for as long as its ``created`` would still
be accepted, so a replay inside the freshness window is refused and one outside it fails
the window check. GETs are not remembered: Ed25519 signatures are deterministic and
``created`` has one-second resolution, so a client polling a payment twice in a second
sends byte-identical requests, and replaying a read changes nothing.
"""

from __future__ import annotations

import threading

# How long a signature is remembered when the freshness window is off (Rafiki's leniency).
DEFAULT_MEMORY = 300.0
GUARDED_METHODS = frozenset({"POST", "DELETE", "PUT", "PATCH"})


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
