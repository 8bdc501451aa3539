"""Incoming payments, quotes and outgoing payments between the sandbox's own accounts.

An outgoing payment is created unsent and settles a moment later (``settlement``): then
the money moves, or the payment fails. Grant limits are summed over the grant's payments
in the current interval, unsent ones included; a failed payment releases what it held.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.rates import RateError
from opapprove.servers.sandbox import fx, settlement
from opapprove.servers.sandbox.config import AccountConfig
from opapprove.servers.sandbox.errors import ResourceServerError
from opapprove.servers.sandbox.fx import Asset
from opapprove.servers.sandbox.grants import Introspection
from opapprove.servers.sandbox.intervals import IntervalError, current_window
from opapprove.servers.sandbox.records import IncomingPayment, OutgoingPayment, Quote
from opapprove.servers.sandbox.state import SandboxState
from opapprove.servers.sandbox.urls import INCOMING, QUOTES, resource_id, resource_url
from opapprove.servers.sandbox.validation import (
    BodyError,
    amount_value,
    iso,
    parse_datetime,
)


def bad_request(description: str, reason: str | None = None) -> ResourceServerError:
    return ResourceServerError(400, description, reason=reason)


def invalid_body(problem: BodyError | str) -> ResourceServerError:
    """A body Rafiki's OpenAPI validator refuses: its wording, the sandbox's as the reason."""
    error = problem if isinstance(problem, BodyError) else BodyError(problem)
    return ResourceServerError(400, error.rafiki_description(), reason=str(error))


def _own_amount(data: Any, where: str, acct: AccountConfig) -> int:
    value, code, scale = amount_value(data, where)
    if (code, scale) != (acct.asset_code, acct.asset_scale):
        raise bad_request(
            "invalid amount",
            f"{where} is in {code}/{scale}, but wallet {acct.name} holds "
            f"{acct.asset_code}/{acct.asset_scale}",
        )
    return value


def accepting(state: SandboxState, ip: IncomingPayment) -> str | None:
    """Why ``ip`` takes no more money right now, or None when it does."""
    if ip.completed:
        return "the incoming payment is completed"
    if ip.expires_at is not None and state.now() >= ip.expires_at:
        return "the incoming payment expired"
    return None


def remaining(ip: IncomingPayment) -> int | None:
    return None if ip.incoming_amount is None else max(ip.incoming_amount - ip.received, 0)


# --------------------------------------------------------------------- incoming payments


def create_incoming(
    state: SandboxState, acct: AccountConfig, body: dict[str, Any], client: str
) -> IncomingPayment:
    now = state.now()
    amount = None
    try:
        if "incomingAmount" in body:
            amount = _own_amount(body["incomingAmount"], "incomingAmount", acct)
            if amount == 0:
                raise bad_request("invalid amount", "incomingAmount must be greater than 0")
        expires_at = now + state.config.incoming_payment_lifetime
        if "expiresAt" in body:
            expires_at = parse_datetime(body["expiresAt"], "expiresAt")
            if expires_at <= now:
                raise bad_request("invalid expiresAt", "expiresAt is in the past")
    except BodyError as exc:
        raise invalid_body(exc) from exc
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid_body("metadata must be an object")
    ip = IncomingPayment(
        id=str(uuid.uuid4()),
        account=acct.name,
        incoming_amount=amount,
        received=0,
        completed=False,
        expires_at=expires_at,
        metadata=metadata,
        created_at=now,
        client=client,
        shared_secret=secrets.token_urlsafe(32),
        seq=state.next_seq(),
    )
    with state.lock:
        state.incoming[ip.id] = ip
        state.commit(ip)
    return ip


def complete_incoming(state: SandboxState, ip: IncomingPayment) -> IncomingPayment:
    with state.lock:
        why = accepting(state, ip)
        if why is not None:
            raise ResourceServerError(409, "wrong state", reason=why)
        ip.completed = True
        state.commit(ip)
        return ip


# --------------------------------------------------------------------------- quotes


@dataclass(frozen=True)
class Receiver:
    ip: IncomingPayment
    acct: AccountConfig


def find_receiver(state: SandboxState, base: str, url: Any, sender: AccountConfig) -> Receiver:
    rid = resource_id(base, INCOMING, url) if isinstance(url, str) else None
    ip = state.incoming.get(rid) if rid else None
    if ip is None:
        raise bad_request(
            "invalid receiver",
            f"{url} is not an incoming payment of this sandbox ({base}/op/incoming-payments/...)",
        )
    why = accepting(state, ip)
    if why is not None:
        raise bad_request("invalid receiver", why)
    acct = state.account_config(ip.account)
    assert acct is not None
    try:
        state.config.rates.rate(sender.asset_code, acct.asset_code)
    except RateError as exc:
        raise bad_request("invalid receiver", exc.message) from exc
    return Receiver(ip, acct)


def _amounts(
    state: SandboxState, sender: AccountConfig, receiver: Receiver, body: dict[str, Any]
) -> tuple[int, int]:
    rates, fee = state.config.rates, state.config.fee
    assets = (
        Asset(sender.asset_code, sender.asset_scale),
        Asset(receiver.acct.asset_code, receiver.acct.asset_scale),
    )
    left = remaining(receiver.ip)
    if "debitAmount" in body:
        debit = _own_amount(body["debitAmount"], "debitAmount", sender)
        receive = fx.receive_for(debit, *assets, rates, fee)
        if receive <= 0:
            raise bad_request(
                "non-positive receive amount", "the fee and rate leave nothing of the debitAmount"
            )
    else:
        if "receiveAmount" in body:
            receive = _own_amount(body["receiveAmount"], "receiveAmount", receiver.acct)
        elif left is None:
            raise bad_request(
                "invalid receiver",
                "the receiver has no incomingAmount; give debitAmount or receiveAmount",
            )
        else:
            receive = left
        if receive <= 0:
            raise bad_request("invalid amount", "the amount to receive must be greater than 0")
        try:
            debit = fx.debit_for(receive, *assets, rates, fee)
        except AmountError as exc:
            raise bad_request("invalid amount", exc.message) from exc
    if left is not None and receive > left:
        raise bad_request(
            "invalid amount", f"the receiver still expects {left}, less than {receive}"
        )
    return debit, receive


def create_quote(
    state: SandboxState, base: str, sender: AccountConfig, body: dict[str, Any], client: str
) -> Quote:
    try:
        with state.lock:
            receiver = find_receiver(state, base, body.get("receiver"), sender)
            debit, receive = _amounts(state, sender, receiver, body)
            now = state.now()
            quote = Quote(
                id=str(uuid.uuid4()),
                account=sender.name,
                receiver=receiver.ip.id,
                debit=debit,
                receive=receive,
                created_at=now,
                expires_at=now + state.config.quote_lifetime,
                client=client,
            )
            state.quotes[quote.id] = quote
            state.commit(quote)
            return quote
    except BodyError as exc:
        raise invalid_body(exc) from exc


# ------------------------------------------------------------------ outgoing payments


def _unauthorized(reason: str) -> ResourceServerError:
    # Rafiki's InsufficientGrant error on payment creation is a 403 "unauthorized".
    return ResourceServerError(403, "unauthorized", reason=reason)


@dataclass(frozen=True)
class Spent:
    debit: int
    receive: int
    count: int
    # The account the receive amounts are in (the last payment's receiver's).
    receiver: str | None = None


def spent_in_window(
    state: SandboxState, grant_id: str, window: tuple[float, float] | None
) -> Spent:
    debit = receive = count = 0
    receiver = None
    for p in state.outgoing.values():
        if p.grant_id != grant_id or p.failed:
            continue
        if window is not None and not window[0] <= p.created_at < window[1]:
            continue
        debit += p.debit
        receive += p.receive
        count += 1
        receiver = state.incoming[p.receiver].account
    return Spent(debit, receive, count, receiver)


def grant_window(state: SandboxState, item: dict[str, Any]) -> tuple[float, float] | None:
    """The current interval of the grant's limits (None: no interval, all time counts)."""
    interval = (item.get("limits") or {}).get("interval")
    if interval is None:
        return None
    try:
        window = current_window(interval, state.now())
    except IntervalError as exc:
        raise _unauthorized(f"the grant's interval cannot be used: {exc}") from exc
    if window is None:
        raise _unauthorized(f"now is outside every interval of {interval}")
    return window


def _check_limits(
    state: SandboxState,
    base: str,
    auth: Introspection,
    receiver: Receiver,
    debit: int,
    receive: int,
    sender: AccountConfig,
) -> None:
    limits = auth.item.get("limits") or {}
    receiver_url = resource_url(base, INCOMING, receiver.ip.id)
    if "receiver" in limits and limits["receiver"] != receiver_url:
        raise _unauthorized(f"the grant is limited to receiver {limits['receiver']}")
    window = grant_window(state, auth.item)
    spent = spent_in_window(state, auth.grant.id, window)
    for name, value, already, acct in (
        ("debitAmount", debit, spent.debit, sender),
        ("receiveAmount", receive, spent.receive, receiver.acct),
    ):
        if name not in limits:
            continue
        limit, code, scale = amount_value(limits[name], f"limits.{name}")
        if (code, scale) != (acct.asset_code, acct.asset_scale):
            raise _unauthorized(f"limits.{name} is in {code}, the payment in {acct.asset_code}")
        if already + value > limit:
            raise _unauthorized(
                f"{name} {value} would bring this interval's total to {already + value}, "
                f"over the grant's limit of {limit} (already spent {already})"
            )


def create_outgoing(
    state: SandboxState,
    base: str,
    sender: AccountConfig,
    body: dict[str, Any],
    auth: Introspection,
) -> tuple[OutgoingPayment, Spent]:
    with state.lock:
        now = state.now()
        quote = None
        if "quoteId" in body:
            qid = resource_id(base, QUOTES, body["quoteId"])
            quote = state.quotes.get(qid) if qid else None
            if quote is None:
                raise ResourceServerError(404, "unknown quote")
            reason = None
            if quote.account != sender.name:
                reason = f"the quote belongs to wallet {quote.account}, not {sender.name}"
            elif quote.used:
                reason = "the quote was already used by another outgoing payment"
            elif now >= quote.expires_at:
                reason = f"the quote expired at {iso(quote.expires_at)}; create a new quote"
            if reason:
                raise bad_request("invalid quote", reason)
            ip = state.incoming[quote.receiver]
            acct = state.account_config(ip.account)
            assert acct is not None
            receiver = Receiver(ip, acct)
            debit, receive = quote.debit, quote.receive
        else:
            receiver = find_receiver(state, base, body.get("incomingPayment"), sender)
            try:
                debit, receive = _amounts(
                    state, sender, receiver, {"debitAmount": body.get("debitAmount")}
                )
            except BodyError as exc:
                raise invalid_body(exc) from exc
        _check_limits(state, base, auth, receiver, debit, receive, sender)
        # What the grant had spent before this payment: Rafiki's grantSpent* (6b, 6l).
        spent_before = spent_in_window(state, auth.grant.id, grant_window(state, auth.item))
        metadata = body.get("metadata")
        payment = OutgoingPayment(
            id=str(uuid.uuid4()),
            account=sender.name,
            receiver=receiver.ip.id,
            quote_id=quote.id if quote else None,
            debit=debit,
            receive=receive,
            sent=0,
            failed=False,
            metadata=metadata if isinstance(metadata, dict) else None,
            created_at=now,
            grant_id=auth.grant.id,
            client=auth.grant.client_id,
            seq=state.next_seq(),
        )
        state.outgoing[payment.id] = payment
        changed: list[Any] = [payment]
        if quote is not None:
            quote.used = True
            changed.append(quote)
        settlement.schedule(state, payment)
        state.commit(*changed)
        return payment, spent_before


def settle(state: SandboxState, payment: OutgoingPayment, receiver: Receiver) -> list[Any]:
    """Move the money now, or fail the payment (sentAmount 0, grant hold released)."""
    sender = state.accounts[payment.account]
    target = state.accounts[receiver.acct.name]
    ip = receiver.ip
    left = remaining(ip)
    if (
        sender.balance < payment.debit
        or accepting(state, ip) is not None
        or (left is not None and payment.receive > left)
    ):
        payment.failed = True
        return []
    sender.balance -= payment.debit
    target.balance += payment.receive
    ip.received += payment.receive
    if ip.incoming_amount is not None and ip.received >= ip.incoming_amount:
        ip.completed = True
    # sentAmount is in the debit asset and counts the whole debit, fee included: a payer polls
    # until sentAmount = debitAmount (rafiki-observed 6n), and the SDK refuses sent > debit.
    payment.sent = payment.debit
    return [sender, target, ip]


# --------------------------------------------------------------------------- listing


def page(items: list[Any], query: dict[str, str]) -> tuple[list[Any], dict[str, Any]]:
    """Rafiki's cursor pagination, newest first: ``first``+``cursor`` or ``last``+``cursor``."""
    if "first" in query and "last" in query:
        raise bad_request("invalid pagination", "give first or last, not both")
    size_text = query.get("first", query.get("last", "20"))
    if not size_text.isdigit() or not 1 <= int(size_text) <= 100:
        raise bad_request("invalid pagination", "first/last must be an integer from 1 to 100")
    size = int(size_text)
    ordered = sorted(items, key=lambda p: p.seq, reverse=True)
    ids = [p.id for p in ordered]
    cursor = query.get("cursor")
    if cursor is not None and cursor not in ids:
        raise bad_request("invalid pagination", f"unknown cursor {cursor!r}")
    if "last" in query:
        end = ids.index(cursor) if cursor is not None else len(ordered)
        start = max(end - size, 0)
    else:
        start = ids.index(cursor) + 1 if cursor is not None else 0
        end = min(start + size, len(ordered))
    chosen = ordered[start:end]
    info: dict[str, Any] = {"hasNextPage": end < len(ordered), "hasPreviousPage": start > 0}
    if chosen:
        info["startCursor"] = chosen[0].id
        info["endCursor"] = chosen[-1].id
    return chosen, info
