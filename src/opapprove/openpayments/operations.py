"""Each Open Payments operation the client performs, said once: its operationId, the server
that answers it, its HTTP method and success status, and how its answer is read and checked.

The client's methods only say where to send and what; everything an answer must be is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
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
    """An operation whose answer has no body (a 204).

    Most operations are a GET of the resource server answering 200: those are the defaults,
    so an entry states only where it differs.
    """

    name: str
    _: KW_ONLY
    server: Kind = "resource"
    method: Literal["GET", "POST", "DELETE"] = "GET"
    expected: int = 200


@dataclass(frozen=True)
class Returning(Operation, Generic[M]):
    """An operation that answers with a document: ``parse`` reads it into ``M``, ``what``
    names it in errors, and ``check`` (run only when the client validates) holds its parts
    against each other."""

    parse: Callable[[Any], M]
    what: str
    check: Check[M] | None = None


def _listing(
    name: str, model: type[models.Page[P]], what: str, check: Check[P]
) -> Returning[models.Page[P]]:
    """A list: a GET answering a page (``model``), each item checked as a read of it is."""

    def check_page(response: httpx.Response, page: models.Page[P]) -> None:
        for item in page.result:
            check(response, item)

    return Returning(name, model.model_validate, what, check_page)


def _create(
    name: str, parse: Callable[[Any], M], what: str, check: Check[M] | None = None
) -> Returning[M]:
    """A create: a POST to the resource server, answering 201 with what it made."""
    return Returning(name, parse, what, check, method="POST", expected=201)


GET_WALLET_ADDRESS = Returning(
    "get-wallet-address", models.WalletAddress.model_validate, "wallet address", server="wallet"
)
GET_KEYS = Returning(
    "get-wallet-address-keys", models.JWKS.model_validate, "key set", server="wallet"
)

REQUEST_GRANT = Returning(
    "post-request", models.parse_grant_response, "grant", server="auth", method="POST"
)
CONTINUE_GRANT = Returning(
    "post-continue", models.parse_continue_response, "continuation", server="auth", method="POST"
)
CANCEL_GRANT = Operation("delete-continue", server="auth", method="DELETE", expected=204)
ROTATE_TOKEN = Returning(
    "post-token", models.RotatedToken.model_validate, "rotated token", server="auth", method="POST"
)
REVOKE_TOKEN = Operation("delete-token", server="auth", method="DELETE", expected=204)

CREATE_INCOMING_PAYMENT = _create(
    "create-incoming-payment",
    models.IncomingPaymentWithMethods.model_validate,
    "incoming payment",
    partial(check_incoming, created=True),
)
GET_INCOMING_PAYMENT = Returning(
    "get-incoming-payment",
    models.IncomingPaymentWithMethods.model_validate,
    "incoming payment",
    check_incoming,
)
GET_PUBLIC_INCOMING_PAYMENT = Returning(
    "get-incoming-payment", models.PublicIncomingPayment.model_validate, "public incoming payment"
)
COMPLETE_INCOMING_PAYMENT = Returning(
    "complete-incoming-payment",
    models.IncomingPayment.model_validate,
    "incoming payment",
    partial(check_incoming, completed=True),
    method="POST",
)
LIST_INCOMING_PAYMENTS = _listing(
    "list-incoming-payments",
    models.Page[models.IncomingPayment],
    "incoming payment page",
    check_incoming,
)

CREATE_QUOTE = _create("create-quote", models.Quote.model_validate, "quote")
GET_QUOTE = Returning("get-quote", models.Quote.model_validate, "quote")

CREATE_OUTGOING_PAYMENT = _create(
    "create-outgoing-payment",
    models.OutgoingPaymentWithSpentAmounts.model_validate,
    "outgoing payment",
    check_outgoing,
)
GET_OUTGOING_PAYMENT = Returning(
    "get-outgoing-payment",
    models.OutgoingPayment.model_validate,
    "outgoing payment",
    check_outgoing,
)
LIST_OUTGOING_PAYMENTS = _listing(
    "list-outgoing-payments",
    models.Page[models.OutgoingPayment],
    "outgoing payment page",
    check_outgoing,
)
GET_GRANT_SPENT_AMOUNTS = Returning(
    "get-outgoing-payment-grant", models.GrantSpentAmounts.model_validate, "grant spent amounts"
)
