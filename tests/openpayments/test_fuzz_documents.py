"""Fuzzing what servers send: wallet, key, grant, payment and page documents, statuses, bodies.

Every client operation, answered (through ``httpx.MockTransport``) with arbitrary JSON,
with valid documents that have one member replaced or removed, or with any bytes under
any status: the client returns a model or raises ``openpayments.errors.*``, nothing else.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from opapprove.openpayments import errors
from opapprove.openpayments.client import OpenPaymentsClient
from opapprove.openpayments.keys import generate_private_key, public_jwk
from opapprove.openpayments.models import (
    CreateIncomingPayment,
    CreateOutgoingPayment,
    CreateQuote,
    incoming_payment_grant,
)

FUZZ = settings(max_examples=200, deadline=None)
KEY = generate_private_key()
WALLET = "https://wallet.example/alice"
AUTH = "https://auth.wallet.example/"
RS = "https://wallet.example/op"
IP = f"{RS}/incoming-payments/ip-1"
QUOTE = f"{RS}/quotes/q-1"
OP = f"{RS}/outgoing-payments/op-1"
CONTINUE = "https://auth.wallet.example/continue/c-1"
MANAGE = "https://auth.wallet.example/token/t-1"
USD = {"value": "1234", "assetCode": "USD", "assetScale": 2}
ZERO = {"value": "0", "assetCode": "USD", "assetScale": 2}
NOW = "2026-01-01T00:00:00.000Z"
TOKEN = {
    "value": "tok",
    "manage": MANAGE,
    "expires_in": 600,
    "access": [{"type": "incoming-payment", "actions": ["create", "read"]}],
}
CONT = {"access_token": {"value": "cont"}, "uri": CONTINUE, "wait": 5}
INCOMING = {
    "id": IP,
    "walletAddress": WALLET,
    "completed": False,
    "incomingAmount": USD,
    "receivedAmount": ZERO,
    "createdAt": NOW,
    "methods": [{"type": "ilp", "ilpAddress": "test.wallet.alice", "sharedSecret": "c2VjcmV0"}],
}
OUTGOING = {
    "id": OP,
    "walletAddress": WALLET,
    "quoteId": QUOTE,
    "failed": False,
    "receiver": IP,
    "receiveAmount": USD,
    "debitAmount": USD,
    "sentAmount": ZERO,
    "createdAt": NOW,
}
PAGE_INFO = {"hasNextPage": False, "hasPreviousPage": False, "startCursor": "a", "endCursor": "b"}
DOCUMENTS: dict[str, Any] = {
    "wallet": {
        "id": WALLET,
        "publicName": "Alice",
        "assetCode": "USD",
        "assetScale": 2,
        "authServer": AUTH,
        "resourceServer": RS,
    },
    "jwks": {"keys": [public_jwk(KEY, "k1").to_dict()]},
    "pending grant": {
        "interact": {"redirect": "https://auth.wallet.example/interact/1/2", "finish": "n"},
        "continue": CONT,
    },
    "grant": {"access_token": TOKEN, "continue": CONT},
    "rotated": {"access_token": TOKEN},
    "incoming": INCOMING,
    "quote": {
        "id": QUOTE,
        "walletAddress": WALLET,
        "receiver": IP,
        "receiveAmount": USD,
        "debitAmount": USD,
        "method": "ilp",
        "createdAt": NOW,
        "expiresAt": NOW,
    },
    "outgoing": {**OUTGOING, "grantSpentDebitAmount": USD, "grantSpentReceiveAmount": USD},
    "page": {"pagination": PAGE_INFO, "result": [OUTGOING]},
    "spent": {"spentDebitAmount": USD, "spentReceiveAmount": None},
    "public incoming": {"authServer": AUTH, "receivedAmount": ZERO},
    "error": {"error": {"code": "invalid_client", "description": "could not determine client"}},
}

Call = Callable[[OpenPaymentsClient], Awaitable[Any]]


async def _all_outgoing(client: OpenPaymentsClient) -> list[Any]:
    return [p async for p in client.iter_outgoing_payments(RS, "tok", WALLET)]


OPERATIONS: dict[str, Call] = {
    "get wallet": lambda c: c.get_wallet_address(WALLET),
    "get keys": lambda c: c.get_keys(WALLET),
    "request grant": lambda c: c.request_grant(AUTH, incoming_payment_grant(WALLET)),
    "continue": lambda c: c.continue_grant(CONTINUE, "cont", "ref"),
    "poll": lambda c: c.continue_grant(CONTINUE, "cont"),
    "cancel": lambda c: c.cancel_grant(CONTINUE, "cont"),
    "rotate": lambda c: c.rotate_token(MANAGE, "tok"),
    "revoke": lambda c: c.revoke_token(MANAGE, "tok"),
    "create incoming": lambda c: c.create_incoming_payment(
        RS, "tok", CreateIncomingPayment(wallet_address=WALLET, incoming_amount=USD)
    ),
    "get incoming": lambda c: c.get_incoming_payment(IP, "tok"),
    "get public incoming": lambda c: c.get_public_incoming_payment(IP),
    "complete incoming": lambda c: c.complete_incoming_payment(IP, "tok"),
    "create quote": lambda c: c.create_quote(
        RS, "tok", CreateQuote(wallet_address=WALLET, receiver=IP)
    ),
    "get quote": lambda c: c.get_quote(QUOTE, "tok"),
    "create outgoing": lambda c: c.create_outgoing_payment(
        RS, "tok", CreateOutgoingPayment(wallet_address=WALLET, quote_id=QUOTE)
    ),
    "get outgoing": lambda c: c.get_outgoing_payment(OP, "tok"),
    "list outgoing": lambda c: c.list_outgoing_payments(RS, "tok", WALLET, first=10),
    "all outgoing": _all_outgoing,
    "spent amounts": lambda c: c.get_grant_spent_amounts(RS, "tok"),
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "0", "1234", "USD", WALLET, IP, "ilp", NOW, "-1", "1e3"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=15,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every member/item path inside a document."""
    found: list[tuple[Any, ...]] = []
    items: list[tuple[Any, Any]] = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A valid document with one member replaced by anything, or removed."""
    doc = copy.deepcopy(DOCUMENTS[draw(st.sampled_from(sorted(DOCUMENTS)))])
    paths = _paths(doc)
    if not paths:
        return doc
    path = draw(st.sampled_from(paths))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return doc


statuses = st.sampled_from([200, 201, 204, 302, 400, 401, 403, 404, 409, 429, 500, 503]) | (
    st.integers(100, 599)
)
bodies = (
    mutated_documents().map(lambda d: json.dumps(d).encode())
    | st.sampled_from(list(DOCUMENTS.values())).map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=64)
)
content_types = st.sampled_from(["application/json", "text/html", "text/plain", ""])


def _run(operation: str, status: int, body: bytes, content_type: str) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": content_type} if content_type else {}
        if 300 <= status < 400:
            headers["location"] = "https://elsewhere.example/"
        return httpx.Response(status, content=body, headers=headers)

    async def go() -> Any:
        async with OpenPaymentsClient(
            wallet_address_url=WALLET,
            key=KEY,
            key_id="k1",
            transport=httpx.MockTransport(answer),
            retries=1,
            sleep=_no_sleep,
        ) as client:
            return await OPERATIONS[operation](client)

    return asyncio.run(go())


async def _no_sleep(seconds: float) -> None:
    return None


@FUZZ
@given(
    operation=st.sampled_from(sorted(OPERATIONS)),
    status=statuses,
    body=bodies,
    content_type=content_types,
)
def test_any_answer_gives_a_model_or_an_open_payments_error(
    operation: str, status: int, body: bytes, content_type: str
) -> None:
    try:
        _run(operation, status, body, content_type)
    except errors.OpenPaymentsError as exc:
        assert str(exc) and "\n" not in exc.message
        assert exc.hint is None or "\n" not in exc.hint


@FUZZ
@given(operation=st.sampled_from(sorted(OPERATIONS)), body=mutated_documents())
def test_a_damaged_document_in_a_success_answer_is_refused_cleanly(
    operation: str, body: Any
) -> None:
    status = 204 if operation in ("cancel", "revoke") else 200
    if operation.startswith(("create", "request")) and operation != "request grant":
        status = 201
    try:
        _run(operation, status, json.dumps(body).encode(), "application/json")
    except errors.OpenPaymentsError as exc:
        assert str(exc)


def test_every_valid_document_parses_for_its_operation() -> None:
    """The fuzz starts from documents the client accepts: check they really are valid."""
    pairs = {
        "get wallet": ("wallet", 200),
        "get keys": ("jwks", 200),
        "request grant": ("pending grant", 200),
        "continue": ("grant", 200),
        "rotate": ("rotated", 200),
        "create incoming": ("incoming", 201),
        "get incoming": ("incoming", 200),
        "get public incoming": ("public incoming", 200),
        "create quote": ("quote", 201),
        "get quote": ("quote", 200),
        "create outgoing": ("outgoing", 201),
        "get outgoing": ("outgoing", 200),
        "list outgoing": ("page", 200),
        "all outgoing": ("page", 200),
        "spent amounts": ("spent", 200),
    }
    for operation, (doc, status) in pairs.items():
        assert _run(operation, status, json.dumps(DOCUMENTS[doc]).encode(), "application/json")
