"""JSON from another party (a wallet, a client, a capture), read with a bound on nesting.

Open Payments documents nest a few levels (a page, a payment, its amounts, its metadata). A
hostile or broken server can send thousands: ``json.loads`` then raises RecursionError,
which is no ValueError and escapes every ``except ValueError``; and a document just under
Python's limit parses, then breaks whatever walks it afterwards (pydantic's serializer stops
at its own depth, the redaction at the recursion limit), far from where it came in.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


class TooDeep(ValueError):
    """JSON nested deeper than MAX_DEPTH levels."""


def loads(text: str | bytes) -> Any:
    """``json.loads``; a ValueError (``TooDeep``) also for JSON nested deeper than MAX_DEPTH."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if isinstance(data, dict | list) and _too_deep(data):
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    return data


def _too_deep(data: Any) -> bool:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False
