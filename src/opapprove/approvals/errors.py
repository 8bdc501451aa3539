"""The one error the approval flow raises (what happened, what to do, its kind), and the one
way the flow turns a wallet's error into it."""

from __future__ import annotations

from collections.abc import Awaitable

from opapprove.errors import OpapproveError
from opapprove.openpayments.errors import OpenPaymentsError, ResponseError, TransportError


class FlowError(OpapproveError):
    """``kind`` is one of ``opapprove.errors.EXIT_CODES`` (``protocol`` unless said)."""

    kind = "protocol"
    # The wallet's answer behind the error, when one was (set by :func:`translated`).
    status: int | None = None
    code: str | None = None


def translated(
    exc: OpapproveError,
    what: str | None,
    *,
    kind: str | None = None,
    hint: str | None = None,
    pending_id: str | None = None,
) -> FlowError:
    """``exc`` (an openpayments error) as the flow reports it, the one way it does.

    The message is ``what: <exc's message>`` (the message alone without ``what``), the hint
    ``exc``'s unless one is given, the wallet's status and error code are kept; the kind is
    the caller's, else ``transport`` for a wallet that did not answer, ``wallet`` for its
    refusal, ``protocol`` for the rest.
    """
    if kind is None:
        kind = (
            "transport"
            if isinstance(exc, TransportError)
            else "wallet"
            if isinstance(exc, ResponseError)
            else "protocol"
        )
    err = FlowError(
        f"{what}: {exc.message}" if what else exc.message,
        hint=hint or exc.hint,
        kind=kind,
        pending_id=pending_id,
    )
    err.status, err.code = getattr(exc, "status", None), getattr(exc, "code", None)
    return err


def answer_of(exc: OpenPaymentsError) -> str:
    """A wallet's refusal or silence in a few words, for an event's notes."""
    if isinstance(exc, ResponseError):
        return f"{exc.status} {exc.description or exc.code or ''}".strip()
    return f"unreachable: {exc.message}"


async def quietly(call: Awaitable[None]) -> str:
    """``ok``, or what the wallet answered instead: for steps whose failure changes nothing."""
    try:
        await call
    except (ResponseError, TransportError) as exc:
        return answer_of(exc)
    return "ok"
