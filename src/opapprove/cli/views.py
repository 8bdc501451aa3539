"""How a pending grant looks to people and to scripts: amounts, ages, times, one JSON shape.

Every flow command (``quote start``, ``finish``, ``status``, ``pending``) shows a grant
through ``pending_json``, so a script reads the same keys whichever command it ran.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opapprove.cli.errors import CliError
from opapprove.cli.output import iso

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from rich.console import Console

    from opapprove.approvals.records import Leg, Pending

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def amount(data: Any) -> str | None:
    """A wire amount as ``"12.34 USD"``; ``None`` when there is none."""
    if not data:
        return None
    from opapprove.openpayments.money import format_wire

    return format_wire(data)


def clock_time(ts: float) -> str:
    """Local wall-clock time for event lines (``14:02:17``)."""
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def age(seconds: float) -> str:
    """``95`` → ``"1m 35s"``: short, two units at most."""
    s = max(0, int(seconds))
    for unit, size, smaller, smaller_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if s >= size:
            rest = (s % size) // smaller_size
            return f"{s // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{s}s"


def parse_since(text: str, now: float) -> float:
    """``--since``: an ISO time (``2026-01-31T12:00``, UTC unless it says otherwise) or a
    duration back from now (``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``)."""
    raw = text.strip()
    parts = _DURATION.findall(raw)
    if parts and _DURATION.sub("", raw).strip() == "":
        return now - sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in parts)
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"--since {text!r} is neither a duration nor an ISO time",
            hint="use e.g. --since 2h, --since 30m, or --since 2026-01-31T12:00:00Z",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_states(values: list[str] | None) -> list[Any] | None:
    """``--state`` values as States; a wrong name is a usage error that lists the right ones."""
    if not values:
        return None
    from opapprove.approvals.records import State

    names = [v.strip().lower() for value in values for v in value.split(",") if v.strip()]
    known = [str(s) for s in State]
    wrong = [n for n in names if n not in known]
    if wrong:
        raise CliError(
            f"unknown state {wrong[0]!r}",
            hint="states: " + ", ".join(known),
        )
    return [State(n) for n in names]


def _resource(url: str | None, **fields: Any) -> dict[str, Any] | None:
    """An Open Payments resource a grant made, as ``--json`` shows it: ``null`` until it
    exists, then its URL as ``id`` and what the grant knows of it."""
    return {"id": url, **fields} if url else None


def _incoming(pending: Pending) -> dict[str, Any] | None:
    stored = pending.incoming_payment or {}
    received = stored.get("receivedAmount")
    completed = bool(stored.get("completed"))
    # The stored copy is from creation time; the outgoing payment says what arrived since.
    paid = pending.outgoing_payment or {}
    if str(pending.state) == "completed" and paid.get("receiveAmount"):
        received = paid["receiveAmount"]
        completed = True
    return _resource(
        pending.incoming_payment_url,
        incomingAmount=stored.get("incomingAmount"),
        receivedAmount=received,
        completed=completed,
        expiresAt=stored.get("expiresAt"),
    )


def _quote(pending: Pending) -> dict[str, Any] | None:
    return _resource(
        pending.quote_url,
        debitAmount=pending.debit_amount,
        receiveAmount=pending.receive_amount,
        expiresAt=(pending.quote or {}).get("expiresAt"),
    )


def _outgoing(pending: Pending) -> dict[str, Any] | None:
    paid = pending.outgoing_payment or {}
    return _resource(
        pending.outgoing_payment_url,
        debitAmount=paid.get("debitAmount"),
        receiveAmount=paid.get("receiveAmount"),
        sentAmount=paid.get("sentAmount"),
        failed=bool(paid.get("failed")),
    )


def pending_json(pending: Pending, *, now: float, legs: Sequence[Leg] = ()) -> dict[str, Any]:
    """One grant for ``--json``: what a script needs, never a token.

    ``legs``: a split payment's (``null`` for one seller), one object per seller."""
    outgoing = _outgoing(pending)
    awaiting = str(pending.state) == "awaiting_approval"
    return {
        "pendingId": pending.id,
        "offerId": pending.offer_id,
        "sellerId": pending.seller_id,
        "buyer": pending.buyer_wallet,
        "amount": pending.amount,
        "state": str(pending.state),
        "final": pending.is_final,
        "approvalUrl": pending.interact_redirect if awaiting else None,
        "approvalExpiresAt": iso(pending.approval_expires_at) if awaiting else None,
        "poll": pending.poll,
        "debitAmount": pending.debit_amount,
        "receiveAmount": pending.receive_amount,
        "sentAmount": outgoing["sentAmount"] if outgoing else None,
        "incomingPayment": _incoming(pending),
        "quote": _quote(pending),
        "outgoingPayment": outgoing,
        "legs": [leg.to_json() for leg in legs] if pending.is_split else None,
        "lastError": pending.last_error,
        "attempts": pending.attempts,
        "createdAt": iso(pending.created_at),
        "updatedAt": iso(pending.updated_at),
        "ageSeconds": round(max(0.0, now - pending.created_at), 1),
    }


def incoming_line(pending: Pending) -> str | None:
    info = _incoming(pending)
    if info is None:
        return None
    wanted = amount(info["incomingAmount"])
    got = amount(info["receivedAmount"])
    if info["completed"]:
        status = "completed"
    elif got and wanted:
        status = f"received {got} of {wanted}"
    else:
        status = f"for {wanted}" if wanted else "open"
    return f"{info['id']}  ({status})"


def leg_line(leg: Leg) -> str:
    """One seller's part of a split payment, on one line."""
    parts = [f"{leg.seller_id} {leg.amount}: {leg.state}"]
    if leg.debit_amount:
        parts.append(f"debit {amount(leg.debit_amount)}")
    if leg.receive_amount:
        parts.append(f"receive {amount(leg.receive_amount)}")
    sent = amount((leg.outgoing_payment or {}).get("sentAmount"))
    if sent:
        parts.append(f"sent {sent}")
    line = ", ".join(parts)
    if leg.last_error and leg.state != "completed":
        line += f" — {leg.last_error}"
    return line


def print_rows(console: Console, rows: Iterable[tuple[str, str]]) -> None:
    """Label and value lines, the labels in one column (``status``, ``pending show``)."""
    for label, value in rows:
        console.print(f"  {label:<17} {value}", markup=False, soft_wrap=True)


def detail_rows(pending: Pending, *, now: float, legs: Sequence[Leg] = ()) -> list[tuple[str, str]]:
    """``status``'s lines: label and value, only those that are known (and a row per leg)."""
    rows: list[tuple[str, str | None]] = [
        ("pending id", pending.id),
        ("state", str(pending.state)),
        ("offer", pending.offer_id),
        ("seller", pending.seller_id),
        ("buyer", pending.buyer_wallet),
        ("amount", pending.amount),
        ("debit amount", amount(pending.debit_amount)),
        ("receive amount", amount(pending.receive_amount)),
        ("incoming payment", incoming_line(pending)),
        *((f"leg {leg.leg}", leg_line(leg)) for leg in legs),
        ("quote", pending.quote_url),
        ("outgoing payment", pending.outgoing_payment_url),
        ("sent amount", amount((pending.outgoing_payment or {}).get("sentAmount"))),
        ("last error", pending.last_error),
        ("created", f"{iso(pending.created_at)} ({age(now - pending.created_at)} ago)"),
        ("last change", f"{iso(pending.updated_at)} ({age(now - pending.updated_at)} ago)"),
    ]
    if str(pending.state) == "awaiting_approval":
        rows.append(("approval URL", pending.interact_redirect))
        if pending.approval_expires_at:
            left = pending.approval_expires_at - now
            rows.append(
                (
                    "approval expires",
                    f"{iso(pending.approval_expires_at)} "
                    + (f"(in {age(left)})" if left > 0 else "(passed)"),
                )
            )
    return [(label, value) for label, value in rows if value]
