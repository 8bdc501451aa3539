"""Which operation a request is: Open Payments operationIds, plus names for the sandbox's pages.

Fault rules can name an operation instead of a path pattern.
"""

from __future__ import annotations

import re

_ID = r"[^/]+"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(f"^{p}$"), op)
    for m, p, op in [
        ("POST", "/auth", "post-request"),
        ("POST", f"/auth/continue/{_ID}", "post-continue"),
        ("DELETE", f"/auth/continue/{_ID}", "delete-continue"),
        ("POST", f"/auth/token/{_ID}", "post-token"),
        ("DELETE", f"/auth/token/{_ID}", "delete-token"),
        ("GET", f"/interact/{_ID}/{_ID}", "interaction-start"),
        ("POST", f"/interact/{_ID}/{_ID}/accept", "interaction-accept"),
        ("POST", f"/interact/{_ID}/{_ID}/reject", "interaction-reject"),
        ("GET", f"/interact/{_ID}/{_ID}/finish", "interaction-finish"),
        ("POST", "/op/incoming-payments", "create-incoming-payment"),
        ("GET", "/op/incoming-payments", "list-incoming-payments"),
        ("GET", f"/op/incoming-payments/{_ID}", "get-incoming-payment"),
        ("POST", f"/op/incoming-payments/{_ID}/complete", "complete-incoming-payment"),
        ("POST", "/op/quotes", "create-quote"),
        ("GET", f"/op/quotes/{_ID}", "get-quote"),
        ("POST", "/op/outgoing-payments", "create-outgoing-payment"),
        ("GET", "/op/outgoing-payments", "list-outgoing-payments"),
        ("GET", f"/op/outgoing-payments/{_ID}", "get-outgoing-payment"),
        ("GET", "/op/outgoing-payment-grant", "get-outgoing-payment-grant"),
        ("GET", f"/_admin/{_ID}", "admin"),
        ("POST", f"/_admin/{_ID}", "admin"),
        ("DELETE", f"/_admin/{_ID}", "admin"),
        ("GET", f"/{_ID}/jwks.json", "get-wallet-address-keys"),
        ("GET", f"/{_ID}/page", "wallet-address-page"),
        ("GET", f"/{_ID}", "get-wallet-address"),
    ]
]


def operation_name(method: str, path: str) -> str | None:
    for m, pattern, op in ROUTES:
        if m == method and pattern.match(path):
            return op
    return None
