"""Checking opapprove's webhook signature: ``Opapprove-Signature: t=<unix>,v1=<hex>``.

``v1`` is HMAC-SHA256 with the shared secret over ``f"{t}.{body}"``; a timestamp more than
five minutes away is refused, so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TOLERANCE_SECONDS = 300


def signature_ok(body: bytes, header: str | None, secret: str, *, now: float | None = None) -> bool:
    if not header or not secret:
        return False
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return any(hmac.compare_digest(expected, given) for given in signatures)
