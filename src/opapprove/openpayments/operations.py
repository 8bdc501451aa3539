"""Each Open Payments operation the client performs, said once: its operationId, the server
that answers it, its HTTP method and success status, and how its answer is read and checked.

The client's methods only say where to send and what; everything an answer must be is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Literal, TypeVar

import httpx

from opapprove.openpayments import models
from opapprove.openpayments.error_hints import Kind
from opapprove.openpayments.responses import check_incoming, check_outgoing

M = TypeVar("M")
P = TypeVar("P", models.IncomingPayment, models.OutgoingPayment)

Check = Callable[[httpx.Response, M], None]


@dataclass(frozen=True)
class Operation:
    """An operation whose answer has no body (a 204)."""

    name: str
    server: Kind
    method: Literal["GET", "POST", "DELETE"]
    expected: int


@dataclass(frozen=True)
class Returning(Operation, Generic[M]):
    """An operation that answers with a document: ``parse`` reads it into ``M``, ``what``
    names it in errors, and ``check`` (run only when the client validates) holds its parts
    against each other."""

    parse: Callable[[Any], M]
    what: str
    check: Check[M] | None = None


def _each(check: Check[P]) -> Check[models.Page[P]]:
    def check_page(response: httpx.Response, page: models.Page[P]) -> None:
        for item in page.result:
            check(response, item)

    return check_page


GET_WALLET_ADDRESS = Returning(
    "get-wallet-address",
    "wallet",
    "GET",
    200,
    models.WalletAddress.model_validate,
    "wallet address",
)
GET_KEYS = Returning(
    "get-wallet-address-keys", "wallet", "GET", 200, models.JWKS.model_validate, "key set"
)

REQUEST_GRANT = Returning("post-request", "auth", "POST", 200, models.parse_grant_response, "grant")
CONTINUE_GRANT = Returning(
    "post-continue", "auth", "POST", 200, models.parse_continue_response, "continuation"
)
CANCEL_GRANT = Operation("delete-continue", "auth", "DELETE", 204)
ROTATE_TOKEN = Returning(
    "post-token", "auth", "POST", 200, models.RotatedToken.model_validate, "rotated token"
)
REVOKE_TOKEN = Operation("delete-token", "auth", "DELETE", 204)

CREATE_INCOMING_PAYMENT = Returning(
    "create-incoming-payment",
    "resource",
    "POST",
    201,
    models.IncomingPaymentWithMethods.model_validate,
    "incoming payment",
    partial(check_incoming, created=True),
)
GET_INCOMING_PAYMENT = Returning(
    "get-incoming-payment",
    "resource",
    "GET",
    200,
    models.IncomingPaymentWithMethods.model_validate,
    "incoming payment",
    check_incoming,
)
GET_PUBLIC_INCOMING_PAYMENT = Returning(
    "get-incoming-payment",
    "resource",
    "GET",
    200,
    models.PublicIncomingPayment.model_validate,
    "public incoming payment",
)
COMPLETE_INCOMING_PAYMENT = Returning(
    "complete-incoming-payment",
    "resource",
    "POST",
    200,
    models.IncomingPayment.model_validate,
    "incoming payment",
    partial(check_incoming, completed=True),
)
LIST_INCOMING_PAYMENTS = Returning(
    "list-incoming-payments",
    "resource",
    "GET",
    200,
    models.Page[models.IncomingPayment].model_validate,
    "incoming payment page",
    _each(check_incoming),
)

CREATE_QUOTE = Returning(
    "create-quote", "resource", "POST", 201, models.Quote.model_validate, "quote"
)
GET_QUOTE = Returning("get-quote", "resource", "GET", 200, models.Quote.model_validate, "quote")

CREATE_OUTGOING_PAYMENT = Returning(
    "create-outgoing-payment",
    "resource",
    "POST",
    201,
    models.OutgoingPaymentWithSpentAmounts.model_validate,
    "outgoing payment",
    check_outgoing,
)
GET_OUTGOING_PAYMENT = Returning(
    "get-outgoing-payment",
    "resource",
    "GET",
    200,
    models.OutgoingPayment.model_validate,
    "outgoing payment",
    check_outgoing,
)
LIST_OUTGOING_PAYMENTS = Returning(
    "list-outgoing-payments",
    "resource",
    "GET",
    200,
    models.Page[models.OutgoingPayment].model_validate,
    "outgoing payment page",
    _each(check_outgoing),
)
GET_GRANT_SPENT_AMOUNTS = Returning(
    "get-outgoing-payment-grant",
    "resource",
    "GET",
    200,
    models.GrantSpentAmounts.model_validate,
    "grant spent amounts",
)
