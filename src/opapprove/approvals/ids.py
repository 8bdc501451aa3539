"""Pending grant ids: 26-character, time-ordered, like a ULID.

48 bits of milliseconds then 80 random bits, in Crockford base32. Ids sort by creation
time as plain strings, so `ORDER BY id` is creation order and ids are safe in URLs.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# The longest id (of a grant, an offer, a seller) taken from outside; ours are 26.
MAX_ID_CHARS = 200
_RANDOM_BITS = 80
_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(now: float | None = None) -> str:
    """A new id; ids made later in this process always sort after earlier ones.

    With ``now`` the id is made for that time and leaves the ordering state alone.
    """
    global _last_ms, _last_random
    if now is not None:
        rand = int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")
        return _encode((int(now * 1000) << _RANDOM_BITS) | rand)
    ms = int(time.time() * 1000)
    with _lock:
        if ms <= _last_ms:
            # Same millisecond (or the clock stepped back): count up so order still holds.
            ms = _last_ms
            rand = (_last_random + 1) & ((1 << _RANDOM_BITS) - 1)
        else:
            rand = int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")
        _last_ms, _last_random = ms, rand
    return _encode((ms << _RANDOM_BITS) | rand)


def plausible(text: str) -> bool:
    """Whether ``text`` from outside (a URL, a body, argv) can be an id: printable, short,
    and encodable (no NUL, which PostgreSQL cannot store, no lone surrogate, which SQLite
    cannot, no escape sequence for a terminal that shows it)."""
    return (
        0 < len(text) <= MAX_ID_CHARS
        and text.isprintable()
        and text.encode("utf-8", "replace").decode("utf-8") == text
    )
