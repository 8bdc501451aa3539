"""Marketplace webhooks: the seed's ``payment.completed`` and friends, signed, retried, once.

Each event is written to the store before it is sent (one row per grant and event type):
in the same transaction as the transition it announces (the outbox, :func:`outbox`), so a
crash right after that commit loses nothing. The sender then only sends rows already
written, each attempt claimed in the store first, so a second ``handle()`` for the same
event sends nothing and ``deliver_pending`` finishes what a crash or an unreachable
receiver left undelivered. The receiver sees the same ``Opapprove-Event-Id`` on every
attempt, so it can drop a repeat (a sender that died after sending, before saving that it
had).

Signature, in one header: ``Opapprove-Signature: t=<unix>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 with the shared secret over ``f"{t}.{body}"``; the timestamp lets the receiver
refuse old deliveries that someone replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from opapprove.approvals.errors import FlowError
from opapprove.approvals.records import State, WebhookDelivery
from opapprove.approvals.store import Outbound, StoreError

if TYPE_CHECKING:
    import httpx

    from opapprove.approvals.records import Leg, Pending
    from opapprove.approvals.store import Outbox, Store
    from opapprove.settings import Settings

SIGNATURE_HEADER = "Opapprove-Signature"
EVENT_ID_HEADER = "Opapprove-Event-Id"
EVENT_TYPES = ("approval.needed", "payment.completed", "payment.failed")
# May recur with a new body (a new approval URL after a re-approval): one event per body.
_RECURRING = frozenset({"approval.needed"})
DEFAULT_TOLERANCE = 300
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# A sender holds a delivery for its timeout plus this; a dead sender's hold then runs out.
HOLD_MARGIN = 5.0
_RETRY_STATUSES = frozenset({408, 429})
# The most of a receiver's answer read (its body means nothing to the sender).
RECEIVER_BODY_BYTES = 64 * 1024
# The seed's failure statuses; anything else a flow reports is plain "failed".
_FAILED_STATUS = {
    State.REJECTED: "rejected",
    State.EXPIRED: "expired",
    State.CANCELLED: "cancelled",
    State.PARTIALLY_PAID: "partially_paid",
}


class WebhookSignatureError(FlowError):
    """A webhook signature that does not check out; ``reason`` is format, stale or mismatch."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, kind="verification")
        self.reason = reason


@dataclass(frozen=True)
class DeliveryResult:
    """What became of one delivery: ``delivered``, or ``error`` says why not (yet)."""

    delivery_id: int
    pending_id: str | None
    event_type: str
    event_id: str
    delivered: bool
    attempts: int
    error: str | None = None
    retryable: bool = False  # not delivered, and worth sending again later


# ---------------------------------------------------------------------- bodies and signatures


def webhook_body(kind: str, pending: Pending, data: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON body for a flow event, or ``None`` for events the marketplace is not told.

    A split payment's bodies also carry ``legs``: each seller's state and amounts."""
    body = _event_body(kind, pending, data)
    if body is not None and data.get("legs"):
        body["legs"] = data["legs"]
    return body


def _event_body(kind: str, pending: Pending, data: dict[str, Any]) -> dict[str, Any] | None:
    base: dict[str, Any] = {"type": kind, "pendingId": pending.id, "offerId": pending.offer_id}
    if kind == "approval.needed":
        url = data.get("approvalUrl") or pending.interact_redirect
        if not url:
            return None
        return {**base, "status": "awaiting_approval", "approvalUrl": url}
    if kind == "payment.completed":
        return {**base, "status": "paid"}  # exactly the seed's four keys
    if kind == "payment.failed":
        status = _FAILED_STATUS.get(pending.state, "failed")
        reason = data.get("reason") or pending.last_error or status
        return {**base, "status": status, "reason": str(reason)}
    return None


def encode_body(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def outbound(kind: str, pending: Pending, data: Mapping[str, Any] | None = None) -> Outbound | None:
    """The delivery row of a flow event, or ``None`` for events the marketplace is not told."""
    body = webhook_body(kind, pending, dict(data or {}))
    if body is None:
        return None
    return Outbound(kind, encode_body(body), same_body=kind in _RECURRING)


def outbox(kind: str, data: Mapping[str, Any] | None = None) -> Outbox:
    """What a transition writes for ``kind`` (``Store.transition(outbox=...)``): the
    delivery built from the grant as the transition leaves it, the body :meth:`WebhookSender.
    notify` would build for ``(kind, moved, data)`` byte for byte."""
    return lambda moved: outbound(kind, moved, data)


@dataclass(frozen=True)
class Notice:
    """A flow event the marketplace is told of: its type and what its body needs.

    The flow gives it to the transition it announces, which writes its delivery in the
    same transaction (:meth:`outbox`), and then emits it (``on_event``: the sender sends
    the delivery written)."""

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, reason: str) -> Notice:
        return cls("payment.failed", {"reason": reason})

    def with_legs(self, legs: Sequence[Leg]) -> Notice:
        """The same notice about a split payment, with each seller's leg in its body."""
        return Notice(self.kind, {**self.data, "legs": [leg.to_json() for leg in legs]})

    def outbox(self) -> Outbox:
        return outbox(self.kind, self.data)


def _secret_bytes(secret: str | bytes | SecretStr) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret if isinstance(secret, bytes) else secret.encode("utf-8")


def _as_bytes(body: str | bytes) -> bytes:
    return body if isinstance(body, bytes) else body.encode("utf-8")


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(
        secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256
    ).hexdigest()


def sign(secret: str | bytes | SecretStr, body: str | bytes, timestamp: int) -> str:
    """The ``Opapprove-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_mac(_secret_bytes(secret), timestamp, _as_bytes(body))}"


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.strip().lower())
    if timestamp is None or not signatures:
        raise WebhookSignatureError(
            f"the {SIGNATURE_HEADER} header is malformed ({header[:80]!r})",
            reason="format",
            hint="expected t=<unix seconds>,v1=<hex HMAC-SHA256>; pass the header value as sent",
        )
    return timestamp, signatures


def verify_signature(
    secret: str | bytes | SecretStr,
    header: str,
    body: str | bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a delivery's signature header against its raw body; raise if it is not genuine.

    ``body`` must be the bytes exactly as received. A timestamp more than ``tolerance``
    seconds away from ``now`` is refused, so a captured delivery cannot be replayed later.
    """
    if not isinstance(header, str) or not header.strip():
        raise WebhookSignatureError(
            f"there is no {SIGNATURE_HEADER} header value",
            reason="format",
            hint="pass the header value as sent, e.g. 't=1700000000,v1=5f3c…'",
        )
    timestamp, signatures = _parse_header(header)
    at = time.time() if now is None else now
    age = at - timestamp
    if abs(age) > tolerance:
        when = f"{int(age)} s old" if age > 0 else f"{int(-age)} s in the future"
        raise WebhookSignatureError(
            f"the webhook signature timestamp is {when} (tolerance {tolerance:g} s)",
            reason="stale",
            hint="a replayed or delayed delivery; if it is genuine, check both clocks",
        )
    expected = _mac(_secret_bytes(secret), timestamp, _as_bytes(body)).encode("ascii")
    # Every candidate is compared, in constant time, so timing says nothing about which.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    if not matched:
        raise WebhookSignatureError(
            "the webhook signature does not match the body",
            reason="mismatch",
            hint="the body was changed, or the secret differs from the sender's webhook_secret",
        )


def event_id(delivery: WebhookDelivery) -> str:
    """Stable for a delivery across every attempt, so the receiver can drop repeats."""
    return f"{delivery.pending_id or '-'}.{delivery.event_type}.{delivery.id}"


def _where(url: str) -> str:
    # Only scheme, host and path go into the audit trail: a query may carry a credential.
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a malformed URL)"
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme or host else parts.path


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    return None


# ---------------------------------------------------------------------- the sender


class WebhookSender:
    """Sends the flow's events to ``settings.webhook_url``; use ``handle`` as ``on_event``.

    Nothing here raises into the payment flow: a receiver that is down or refuses costs
    retries and ``webhook_attempt`` events, never a payment step. With ``background``,
    ``handle`` returns once the delivery row is saved and sends in a task, so a slow
    receiver does not hold up the flow; ``drain()`` (or ``aclose()``) waits for those sends.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        backoff: float = BACKOFF_BASE,
        background: bool = False,
    ) -> None:
        self.url = settings.webhook_url
        self._secret = settings.webhook_secret
        self.retries = int(settings.webhook_retries)
        self.timeout = float(settings.timeout)
        self.store = store
        self.sleep = sleep
        self.clock = clock
        self.backoff = backoff
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self.background = background
        self.receiver_down = False
        self._in_flight: set[int] = set()
        self._tasks: set[asyncio.Task[DeliveryResult | None]] = set()

    def __repr__(self) -> str:
        secret = "set" if self._secret is not None else "none"
        return f"WebhookSender(url={self.url!r}, secret={secret}, retries={self.retries})"

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    async def drain(self) -> None:
        """Wait until every delivery sent in the background has ended (delivered or not)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _client(self) -> httpx.AsyncClient:
        import httpx  # only a process that sends webhooks pays for it (`status` does not)

        from opapprove.openpayments.transport import system_tls

        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport,
                timeout=self.timeout,
                follow_redirects=False,
                verify=system_tls(),
            )
        return self._http

    # -- entry points -------------------------------------------------------------------

    async def handle(self, kind: str, pending: Pending, data: dict[str, Any]) -> None:
        """Flow's ``on_event`` (``Flow(on_event=sender.handle)``): :meth:`notify`, never raising."""
        try:
            await self.notify(kind, pending, data)
        except Exception:  # noqa: S110 - the payment step is committed; a notice must not undo it
            pass

    async def notify(
        self, kind: str, pending: Pending, data: dict[str, Any] | None = None
    ) -> DeliveryResult | None:
        """Send the event's delivery (with retries); ``None`` if nothing was sent now.

        The delivery is the row the transition wrote (the outbox); written here if it did
        not (a caller outside the flow). Nothing is sent without a ``webhook_url``, for
        events the marketplace is not told, or when a sender (of this or another process)
        has tried it before. In the background mode the send happens in a task and this
        returns ``None`` at once.
        """
        if not self.enabled:
            return None
        out = outbound(kind, pending, data)
        if out is None:
            return None
        try:
            delivery, created = self.store.add_webhook_delivery(
                pending.id, kind, out.body, same_body=out.same_body
            )
        except StoreError:
            return None  # the payment is committed already; a lost notice must not undo it
        if not created and (delivery.delivered or delivery.attempts):
            return None  # sent, or being sent, by someone else
        if self.background:
            task = asyncio.create_task(self._deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return None
        return await self._deliver(delivery)

    async def deliver_pending(
        self, store: Store | None = None, *, min_age: float = 0.0
    ) -> list[DeliveryResult]:
        """Send again every delivery not yet delivered (``pending replay`` calls this).

        Oldest first; the sweep stops at the first one the receiver fails to take (down,
        5xx, 429), leaving the rest for the next sweep. ``min_age`` skips deliveries
        younger than that many seconds, which another process may be sending right now.
        """
        if not self.enabled:
            return []
        source = store or self.store
        now = self.clock()
        results = []
        for delivery in source.webhook_deliveries(undelivered=True):
            if delivery.id in self._in_flight or now - delivery.created_at < min_age:
                continue
            result = await self._deliver(delivery, store=source)
            if result is None:
                continue  # another sender took it since the list was read
            results.append(result)
            if result.retryable:
                break  # the receiver is not taking deliveries now; the rest stay for later
        return results

    # -- sending -------------------------------------------------------------------------

    async def _deliver(
        self, delivery: WebhookDelivery, *, store: Store | None = None
    ) -> DeliveryResult | None:
        store = store or self.store
        assert self.url
        self._in_flight.add(delivery.id)
        try:
            return await self._attempts(delivery, store, self.url)
        finally:
            self._in_flight.discard(delivery.id)

    async def _attempts(
        self, delivery: WebhookDelivery, store: Store, url: str
    ) -> DeliveryResult | None:
        """Send ``delivery`` until delivered or given up; ``None`` if another sender had
        claimed its first attempt (it sends it)."""
        ident = event_id(delivery)
        body = delivery.body.encode("utf-8")
        attempts_now = 0
        error: str | None = None
        retry = False
        # While the receiver is down, one try each: the rest wait for deliver_pending, and a
        # batch of events does not spend every event's whole backoff on a dead endpoint.
        tries = 1 if self.receiver_down else self.retries + 1
        for attempt in range(1, tries + 1):
            try:
                claimed = store.claim_webhook_attempt(
                    delivery, hold_for=self.timeout + HOLD_MARGIN, continuing=attempt > 1
                )
            except StoreError:
                claimed = None
            if claimed is None:
                if attempt == 1:
                    return None
                retry = False  # another sender has taken over; its attempts are its own
                break
            delivery = claimed
            attempts_now = attempt
            status, error, retry, wait = await self._post(url, ident, body)
            delivered = error is None
            if status is not None and (delivered or not retry):
                self.receiver_down = False  # it answered: it is up, whatever it said
            outcome = "delivered" if delivered else ("retry" if retry else "gave_up")
            if not delivered and retry and attempt == tries:
                outcome = "gave_up"
                self.receiver_down = True
            info: dict[str, Any] = {
                "attempt": attempt,
                "status": status,
                "error": error,
                "outcome": outcome,
                "url": _where(url),
                "eventId": ident,
            }
            pause = wait if wait is not None else self._backoff(attempt)
            again = outcome == "retry"
            try:
                delivery = store.record_webhook_attempt(
                    delivery.id,
                    delivered=delivered,
                    error=error,
                    data=info,
                    hold_for=pause + self.timeout + HOLD_MARGIN if again else None,
                )
            except StoreError:
                pass  # the receiver has it or not either way; the trail is best effort
            if not again:
                break
            await self.sleep(pause)
        return DeliveryResult(
            delivery_id=delivery.id,
            pending_id=delivery.pending_id,
            event_type=delivery.event_type,
            event_id=ident,
            delivered=error is None,
            attempts=attempts_now,
            error=error,
            retryable=error is not None and retry,
        )

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff * 2 ** (attempt - 1), BACKOFF_CAP))

    async def _post(
        self, url: str, ident: str, body: bytes
    ) -> tuple[int | None, str | None, bool, float | None]:
        """One attempt: ``(status, error or None, worth retrying, server's Retry-After)``."""
        import httpx

        from opapprove.openpayments.transport import read_at_most

        timestamp = int(self.clock())
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: ident,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body, timestamp)
        try:
            # The whole exchange within the timeout, not each read: a receiver trickling its
            # answer would otherwise outlast the hold on the delivery (timeout + HOLD_MARGIN),
            # and another sender would send it again meanwhile.
            async with asyncio.timeout(self.timeout):
                async with self._client().stream(
                    "POST", url, content=body, headers=headers
                ) as response:
                    # Not used; read (so the connection is kept) only if small.
                    await read_at_most(response, RECEIVER_BODY_BYTES, within=self.timeout)
        except (httpx.TimeoutException, TimeoutError) as exc:
            return None, f"timed out ({type(exc).__name__})", True, None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None, f"could not connect: {text}", True, None
        status = response.status_code
        if 200 <= status < 300:
            return status, None, True, None
        reason = response.reason_phrase or "error"
        if status >= 500 or status in _RETRY_STATUSES:
            wait = _retry_after(response)
            return (
                status,
                f"{status} {reason}",
                True,
                None if wait is None else min(wait, BACKOFF_CAP),
            )
        if 300 <= status < 400:
            # Into the audit trail: scheme, host and path only, as for our own URL.
            where = _where(response.headers.get("location", "")) or "nowhere"
            return status, f"{status} redirect to {where} (not followed)", False, None
        return status, f"{status} {reason}", False, None
