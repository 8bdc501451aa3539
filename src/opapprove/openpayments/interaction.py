"""The GNAP interaction finish hash (Rafiki's form) and its tolerant, constant-time check."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from opapprove.openpayments.errors import InteractionHashError

# Firefox's Accept for a page: what a buyer's browser sends to the approval URL (Rafiki's
# interact URL answers 406 to text/html alone).
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
)


def finish_hash(client_nonce: str, server_nonce: str, interact_ref: str, grant_url: str) -> str:
    """SHA-256 over the four values joined by newlines, standard base64 with padding."""
    base = f"{client_nonce}\n{server_nonce}\n{interact_ref}\n{grant_url}"
    return base64.b64encode(hashlib.sha256(base.encode("utf-8")).digest()).decode("ascii")


def _normalise(value: str) -> str:
    return value.strip().replace("-", "+").replace("_", "/").rstrip("=")


def hash_matches(
    received: str, client_nonce: str, server_nonce: str, interact_ref: str, grant_url: str
) -> bool:
    """Accept standard or url-safe base64, padded or not (the docs and Rafiki disagree)."""
    expected = _normalise(finish_hash(client_nonce, server_nonce, interact_ref, grant_url))
    got = _normalise(received)
    return hmac.compare_digest(expected.encode("ascii"), got.encode("ascii", "replace"))


def verify_finish_hash(
    received: str | None, client_nonce: str, server_nonce: str, interact_ref: str, grant_url: str
) -> None:
    if not received:
        raise InteractionHashError(
            "the finish redirect carries no hash",
            hint="a real wallet always sends one; do not finish a redirect you cannot verify",
        )
    if not hash_matches(received, client_nonce, server_nonce, interact_ref, grant_url):
        raise InteractionHashError(
            "the finish redirect's hash does not match this grant",
            hint="the redirect was forged, altered, or belongs to another grant; nothing was paid",
        )


def new_nonce() -> str:
    """An unguessable client nonce for ``interact.finish.nonce``."""
    return secrets.token_urlsafe(24)
