"""Which operation a request is: Open Payments operationIds, plus names for the sandbox's pages.

Fault rules can name an operation instead of a path pattern.
"""

from __future__ import annotations

import re


def _pattern(path: str) -> re.Pattern[str]:
    """``path`` as the routes write it, each ``{placeholder}`` standing for one segment."""
    parts = re.split(r"\{\w+\}", path)
    return re.compile("^" + "[^/]+".join(re.escape(part) for part in parts) + "$")


ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, _pattern(path), operation)
    for method, path, operation in [
        ("POST", "/auth", "post-request"),
        ("POST", "/auth/continue/{id}", "post-continue"),
        ("DELETE", "/auth/continue/{id}", "delete-continue"),
        ("POST", "/auth/token/{id}", "post-token"),
        ("DELETE", "/auth/token/{id}", "delete-token"),
        ("GET", "/interact/{id}/{nonce}", "interaction-start"),
        ("POST", "/interact/{id}/{nonce}/accept", "interaction-accept"),
        ("POST", "/interact/{id}/{nonce}/reject", "interaction-reject"),
        ("GET", "/interact/{id}/{nonce}/finish", "interaction-finish"),
        ("POST", "/op/incoming-payments", "create-incoming-payment"),
        ("GET", "/op/incoming-payments", "list-incoming-payments"),
        ("GET", "/op/incoming-payments/{id}", "get-incoming-payment"),
        ("POST", "/op/incoming-payments/{id}/complete", "complete-incoming-payment"),
        ("POST", "/op/quotes", "create-quote"),
        ("GET", "/op/quotes/{id}", "get-quote"),
        ("POST", "/op/outgoing-payments", "create-outgoing-payment"),
        ("GET", "/op/outgoing-payments", "list-outgoing-payments"),
        ("GET", "/op/outgoing-payments/{id}", "get-outgoing-payment"),
        ("GET", "/op/outgoing-payment-grant", "get-outgoing-payment-grant"),
        ("GET", "/_admin/{action}", "admin"),
        ("POST", "/_admin/{action}", "admin"),
        ("DELETE", "/_admin/{action}", "admin"),
        ("GET", "/{name}/jwks.json", "get-wallet-address-keys"),
        ("GET", "/{name}/page", "wallet-address-page"),
        ("GET", "/{name}", "get-wallet-address"),
    ]
]


def operation_name(method: str, path: str) -> str | None:
    for m, pattern, op in ROUTES:
        if m == method and pattern.match(path):
            return op
    return None
