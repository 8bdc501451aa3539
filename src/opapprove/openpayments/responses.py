"""A server's answer checked: its status, its body against the spec's shapes, and the
amounts of a payment against each other. Each failure is an ``errors.OpenPaymentsError``
with a hint; the client calls these on every answer (the consistency checks only with
``validate``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import ValidationError

from opapprove.openpayments import errors, jsontext
from opapprove.openpayments.error_hints import (
    INCONSISTENT_HINT,
    INVALID_RESPONSE_HINT,
    REDIRECT_HINT,
    hint_for,
    one_line,
    parse_error_body,
)
from opapprove.openpayments.models import IncomingPayment, OutgoingPayment, Page

if TYPE_CHECKING:
    # operations names these checks in its table.
    from opapprove.openpayments.operations import Operation

M = TypeVar("M")


def check_status(
    op: Operation,
    response: httpx.Response,
    *,
    validate: bool,
    key_id: str | None,
    client: str | None,
) -> None:
    """Raise the error an answer's status means: a redirect, an error answer, or (with
    ``validate``) a success other than the one the operation answers. ``client`` is the
    wallet the request was signed as, for the hints."""
    method = op.method
    status = response.status_code
    url = str(response.request.url)
    error_cls = errors.GrantError if op.server == "auth" else errors.ResourceError
    text = response.content.decode("utf-8", "replace")
    if 300 <= status < 400:
        location = response.headers.get("location", "nowhere")
        raise error_cls(
            f"{method} {url} answered {status}, a redirect to {location}",
            method=method,
            url=url,
            status=status,
            body=text,
            hint=REDIRECT_HINT,
        )
    if not 200 <= status < 300:
        code, description, details = parse_error_body(response.content)
        # Rafiki's resource server puts the status itself in `code` ("400"): say it once.
        shown_code = None if code == str(status) else code
        summary = " ".join(part for part in (shown_code, description) if part) or (
            response.reason_phrase or "error"
        )
        raise error_cls(
            f"{method} {url} failed: {status} {one_line(summary)}",
            method=method,
            url=url,
            status=status,
            code=code,
            description=description,
            details=details,
            body=text,
            hint=hint_for(op, status, code, description, key_id, client),
        )
    if validate and status != op.expected:
        raise invalid(response, f" answered {status}; {op.name} answers {op.expected}")


def parse_body(response: httpx.Response, parse: Callable[[Any], M], what: str) -> M:
    """The answer's JSON body through ``parse``; ``what`` names it in the error."""
    try:
        data = jsontext.loads(response.content)
    except jsontext.TooDeep as exc:
        raise invalid(response, f" answered {response.status_code} with {exc}") from None
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        raise invalid(
            response,
            f" answered {response.status_code} with a body that is not JSON ({kind})",
            hint=REDIRECT_HINT if "html" in kind else INVALID_RESPONSE_HINT,
        ) from None
    try:
        return parse(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        ]
        raise invalid(
            response,
            f": the {what} does not match the Open Payments spec ({len(problems)}"
            f" problem{'s' if len(problems) != 1 else ''}; {problems[0]})",
            problems=problems,
        ) from None
    except ValueError as exc:
        raise invalid(
            response,
            f": the {what} does not match the Open Payments spec ({exc})",
            problems=[str(exc)],
        ) from None


def inconsistent(response: httpx.Response, problem: str) -> errors.InvalidResponse:
    """An answer that contradicts itself (``problem`` says how)."""
    return invalid(response, f": {problem}", problems=[problem], hint=INCONSISTENT_HINT)


def invalid(
    response: httpx.Response,
    says: str,
    *,
    problems: list[str] | None = None,
    hint: str = INVALID_RESPONSE_HINT,
) -> errors.InvalidResponse:
    """The error for an answer that is not what the spec says: "METHOD URL" + ``says``."""
    method, url = response.request.method, str(response.request.url)
    return errors.InvalidResponse(
        f"{method} {url}{says}",
        method=method,
        url=url,
        status=response.status_code,
        details={"errors": problems} if problems is not None else None,
        body=response.content.decode("utf-8", "replace"),
        hint=hint,
    )


def check_incoming(
    response: httpx.Response,
    payment: IncomingPayment,
    *,
    created: bool = False,
    completed: bool = False,
) -> None:
    received = payment.received_amount
    if payment.incoming_amount is not None and not payment.incoming_amount.same_asset(received):
        raise inconsistent(
            response, "the incoming payment's incomingAmount and receivedAmount differ in asset"
        )
    if created and (int(received.value) != 0 or payment.completed):
        raise inconsistent(
            response, "a new incoming payment must have received 0 and not be completed"
        )
    if completed and not payment.completed:
        raise inconsistent(response, "the completed incoming payment is not completed")


def check_outgoing(response: httpx.Response, payment: OutgoingPayment) -> None:
    debit, sent = payment.debit_amount, payment.sent_amount
    if not debit.same_asset(sent):
        raise inconsistent(
            response, "the outgoing payment's debitAmount and sentAmount differ in asset"
        )
    if int(sent.value) > int(debit.value):
        raise inconsistent(response, "the outgoing payment sent more than its debitAmount")
    if int(sent.value) == int(debit.value) and payment.failed:
        raise inconsistent(
            response, "the outgoing payment sent its whole debitAmount but is marked failed"
        )


def next_cursor(
    page: Page[Any], seen: set[str], operation: str, resource_server: str
) -> str | None:
    """The cursor of the page after ``page``, or None; a server that loops is refused."""
    info = page.pagination
    if not info.has_next_page:
        return None
    cursor = info.end_cursor
    if cursor is None or cursor in seen:
        raise errors.InvalidResponse(
            f"{operation} at {resource_server} says there is a next page but gives "
            + ("no endCursor" if cursor is None else f"the same endCursor {cursor!r} again"),
            method="GET",
            url=resource_server,
            status=200,
            hint=INCONSISTENT_HINT,
        )
    seen.add(cursor)
    return cursor
