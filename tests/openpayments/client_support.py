"""Shared pieces of the client tests: a test key, spec-shaped documents, a way to run a call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opapprove.openpayments.client import Exchange, OpenPaymentsClient
from opapprove.openpayments.signatures import VerifiedSignature, verify_request

T = TypeVar("T")

# RFC 8032 test 1, the key of the signature test vectors in open-payments.md §2.
KEY = Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
KID = "test-key-1"
CREATED = 1700000000

CLIENT_WALLET = "https://wallet.example/client"
ALICE = "https://ilp.wallet.example/alice"
AUTH = "https://auth.wallet.example/tenant-1"
RS = "https://ilp.wallet.example/tenant-1"
IP_ID = f"{RS}/incoming-payments/7b7a1c5e-1f0d-4d7c-9a57-1f2a3b4c5d6e"
QUOTE_ID = f"{RS}/quotes/ab03296b-0c8b-4776-b94e-7ee27d868d4d"
OP_ID = f"{RS}/outgoing-payments/8c68d3cc-0a0f-4216-98b4-4fa44a6c88cf"
CONTINUE_URI = "https://auth.wallet.example/continue/4CF492MLVMSW9MKMXKHQ"
MANAGE = "https://auth.wallet.example/token/dd17a202-9982-4ed9-ae31-564947fb6379"
ACCESS_TOKEN = "OS9M2PMHKUR64TB8N6BW7OZB8CDFONP219RP1LT0"
CONTINUE_TOKEN = "33OMUKMKSKU80UPRY5NM"
SHARED_SECRET = "1c7eaXa4rd2fFOBl1iydvCT1tV5TbM3RW1WLCafu_JA"


def usd(value: int | str) -> dict[str, Any]:
    return {"value": str(value), "assetCode": "USD", "assetScale": 2}


WALLET_DOC = {
    "id": ALICE,
    "publicName": "Alice",
    "assetCode": "USD",
    "assetScale": 2,
    "authServer": AUTH,
    "resourceServer": RS,
}
JWKS_DOC = {
    "keys": [
        {
            "kid": KID,
            "alg": "EdDSA",
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        }
    ]
}
CONTINUE_DOC = {"access_token": {"value": CONTINUE_TOKEN}, "uri": CONTINUE_URI, "wait": 5}
PENDING_DOC = {
    "interact": {
        "redirect": "https://auth.wallet.example/interact/4CF492MLVMSW9MKMXKHQ/abc",
        "finish": "4105340a-05eb-4290-8739-f9e2b463bfa7",
    },
    "continue": CONTINUE_DOC,
}
ACCESS_TOKEN_DOC = {
    "value": ACCESS_TOKEN,
    "manage": MANAGE,
    "expires_in": 600,
    "access": [
        {
            "type": "outgoing-payment",
            "actions": ["create", "read"],
            "identifier": ALICE,
            "limits": {"debitAmount": usd(2600)},
        }
    ],
}
GRANT_DOC = {"access_token": ACCESS_TOKEN_DOC, "continue": CONTINUE_DOC}
POLL_PENDING_DOC = {"continue": CONTINUE_DOC}
INCOMING_DOC = {
    "id": IP_ID,
    "walletAddress": ALICE,
    "incomingAmount": usd(2500),
    "receivedAmount": usd(0),
    "completed": False,
    "metadata": {"externalRef": "INV-1"},
    "createdAt": "2025-03-12T23:20:50.520Z",
}
INCOMING_WITH_METHODS_DOC = {
    **INCOMING_DOC,
    "methods": [
        {"type": "ilp", "ilpAddress": "test.wallet.alice.abc", "sharedSecret": SHARED_SECRET}
    ],
}
PUBLIC_INCOMING_DOC = {"authServer": AUTH, "receivedAmount": usd(0)}
COMPLETED_DOC = {**INCOMING_DOC, "completed": True}
QUOTE_DOC = {
    "id": QUOTE_ID,
    "walletAddress": ALICE,
    "receiver": IP_ID,
    "receiveAmount": usd(2500),
    "debitAmount": usd(2600),
    "method": "ilp",
    "createdAt": "2025-03-12T23:20:50.520Z",
    "expiresAt": "2025-03-12T23:25:50.520Z",
}
OUTGOING_DOC = {
    "id": OP_ID,
    "walletAddress": ALICE,
    "quoteId": QUOTE_ID,
    "failed": False,
    "receiver": IP_ID,
    "receiveAmount": usd(2500),
    "debitAmount": usd(2600),
    "sentAmount": usd(0),
    "createdAt": "2025-03-12T23:20:50.520Z",
}
OUTGOING_WITH_SPENT_DOC = {
    **OUTGOING_DOC,
    "grantSpentDebitAmount": usd(2600),
    "grantSpentReceiveAmount": usd(2500),
}
SPENT_DOC = {"spentDebitAmount": usd(2600), "spentReceiveAmount": None}


def page(result: list[dict[str, Any]], *, end: str | None = None, more: bool = False) -> Any:
    info: dict[str, Any] = {"hasNextPage": more, "hasPreviousPage": False}
    if end is not None:
        info.update(startCursor=f"start-{end}", endCursor=end)
    return {"pagination": info, "result": result}


def gnap_error(code: str, description: str) -> dict[str, Any]:
    return {"error": {"code": code, "description": description}}


def rs_error(status: int, description: str, **details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": str(status), "description": description}
    if details:
        error["details"] = details
    return {"error": error}


def make_client(**kwargs: Any) -> tuple[OpenPaymentsClient, list[Exchange]]:
    exchanges: list[Exchange] = []
    options: dict[str, Any] = {
        "wallet_address_url": CLIENT_WALLET,
        "key": KEY,
        "key_id": KID,
        "clock": lambda: CREATED,
        "retry_backoff": 0.0,
        "on_exchange": exchanges.append,
    }
    options.update(kwargs)
    return OpenPaymentsClient(**options), exchanges


def run(call: Callable[[OpenPaymentsClient], Awaitable[T]], **kwargs: Any) -> T:
    """Run one client call in a fresh event loop, closing the client afterwards."""
    client, _ = make_client(**kwargs)
    return run_with(client, call)


def run_with(client: OpenPaymentsClient, call: Callable[[OpenPaymentsClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with client:
            return await call(client)

    return asyncio.run(main())


def verify(request: httpx.Request) -> VerifiedSignature:
    """Check the request's signature the way Rafiki does, with the test key's public half."""
    public = KEY.public_key()
    return verify_request(
        request.method,
        str(request.url),
        request.headers,
        request.content,
        lambda kid: public if kid == KID else None,
    )


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None
