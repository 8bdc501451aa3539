"""The payments service over HTTP, as the seed's ``jobs/services`` calls it (stdlib only).

PAYMENTS_SERVICE_URL is ``opapprove listen --api``; every call carries its bearer token.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from django.conf import settings

TIMEOUT = 60


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if settings.PAYMENTS_SERVICE_TOKEN:
        headers["Authorization"] = f"Bearer {settings.PAYMENTS_SERVICE_TOKEN}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:
        return 0, {"success": False, "error": f"payments service unreachable: {exc}"}
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def get_wallet_profile(wallet_address: str) -> dict[str, Any]:
    """The wallet address document, fetched to check the address before anything starts."""
    request = urllib.request.Request(wallet_address, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            doc = json.loads(response.read())
    except (OSError, ValueError) as exc:
        return {"success": False, "error": str(exc)}
    ok = isinstance(doc, dict) and "authServer" in doc and "assetCode" in doc
    return {"success": ok, "wallet": doc}


def start_quote(
    *, offer_id: str, seller_id: str, buyer_wallet_address_url: str, amount: str
) -> dict[str, Any]:
    url = f"{settings.PAYMENTS_SERVICE_URL}/offers/{urllib.parse.quote(offer_id)}/quotes/start"
    status, data = _request(
        "POST",
        url,
        {
            "sellerId": seller_id,
            "buyerWalletAddressUrl": buyer_wallet_address_url,
            "amount": amount,
        },
    )
    if not isinstance(data, dict) or not data.get("success"):
        error = data.get("error") if isinstance(data, dict) else f"HTTP {status}"
        return {"success": False, "error": error}
    return {"success": True, "payment_url": data["paymentUrl"], "pending_id": data["pendingId"]}


def finish(params: dict[str, str]) -> int:
    """Hand the wallet's redirect to the payments service; its HTTP status (200: paid)."""
    query = urllib.parse.urlencode(params)
    status, _ = _request("GET", f"{settings.PAYMENTS_SERVICE_URL}/payments/finish?{query}")
    return status
