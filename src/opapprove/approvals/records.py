"""The rows of the store as dataclasses: sellers, pending grants, their events, cached grants.

Reprs show tokens as ``'***'`` so a record can be logged or printed by mistake safely.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from opapprove.openpayments.redaction import MASK, is_secret, redact_json


class State(StrEnum):
    STARTED = "started"
    INCOMING_CREATED = "incoming_created"
    QUOTE_CREATED = "quote_created"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    GRANT_ISSUED = "grant_issued"
    PAYING = "paying"
    PAYMENT_CREATED = "payment_created"
    COMPLETED = "completed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"
    # A split payment (several sellers, one approval) whose legs did not all pay.
    PARTIALLY_PAID = "partially_paid"


FINAL_STATES: frozenset[State] = frozenset(
    {
        State.COMPLETED,
        State.REJECTED,
        State.EXPIRED,
        State.CANCELLED,
        State.FAILED,
        State.PARTIALLY_PAID,
    }
)
# The happy path, in order (design.md); every other state is a side exit.
HAPPY_PATH: tuple[State, ...] = (
    State.STARTED,
    State.INCOMING_CREATED,
    State.QUOTE_CREATED,
    State.AWAITING_APPROVAL,
    State.APPROVED,
    State.GRANT_ISSUED,
    State.PAYING,
    State.PAYMENT_CREATED,
    State.COMPLETED,
)


def _repr(obj: Any) -> str:
    parts = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, str) and is_secret(f.name):
            parts.append(f"{f.name}={MASK!r}")
        elif isinstance(value, dict | list):
            parts.append(f"{f.name}={redact_json(value)!r}")
        else:
            parts.append(f"{f.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


@dataclass(repr=False)
class Seller:
    """A payee: a wallet address and the key its wallet knows it by."""

    id: str
    wallet_address_url: str
    key_id: str
    private_key_path: str
    created_at: float

    __repr__ = _repr


@dataclass(repr=False)
class Pending:
    """One interactive payment approval, from quote to payment; see design.md's state machine."""

    id: str
    seller_id: str
    offer_id: str
    buyer_wallet: str
    amount: str
    state: State
    created_at: float
    updated_at: float
    version: int
    seller_wallet: str | None = None
    buyer_doc: dict[str, Any] | None = None
    seller_doc: dict[str, Any] | None = None
    incoming_payment_url: str | None = None
    incoming_payment: dict[str, Any] | None = None
    quote_url: str | None = None
    quote: dict[str, Any] | None = None
    debit_amount: dict[str, Any] | None = None
    receive_amount: dict[str, Any] | None = None
    grant_url: str | None = None
    client_nonce: str | None = None
    finish_uri: str | None = None
    poll: bool = False
    interact_redirect: str | None = None
    server_finish_nonce: str | None = None
    continue_uri: str | None = None
    continue_token: str | None = None
    continue_wait: int | None = None
    interact_ref: str | None = None
    access_token: str | None = None
    token_manage_url: str | None = None
    token_expires_at: float | None = None
    outgoing_payment_url: str | None = None
    outgoing_payment: dict[str, Any] | None = None
    approval_expires_at: float | None = None
    last_error: str | None = None
    attempts: int = 0
    lease_holder: str | None = None
    lease_until: float | None = None
    lease_host: str | None = None
    lease_pid: int | None = None
    # A split payment's number of sellers (its legs, in store_legs); 0 for one seller.
    leg_count: int = 0

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def is_split(self) -> bool:
        return self.leg_count > 0

    def approval_expired(self, now: float) -> bool:
        return bool(self.approval_expires_at and now > self.approval_expires_at)

    def needs_refresh(self, now: float) -> bool:
        """Whether re-reading it (``status``) has work to do: a created payment to check at
        the wallet, or an approval whose window has passed."""
        return self.state == State.PAYMENT_CREATED or (
            self.state == State.AWAITING_APPROVAL and self.approval_expired(now)
        )

    def as_dict(self, *, redact_secrets: bool = True) -> dict[str, Any]:
        """Plain JSON-ready dict (for ``--json``); tokens are ``'***'`` unless told otherwise."""
        out = dataclasses.asdict(self)
        out["state"] = str(self.state)
        return redact_json(out) if redact_secrets else out

    __repr__ = _repr


PENDING_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Pending))
PENDING_JSON_FIELDS = frozenset(
    {
        "buyer_doc",
        "seller_doc",
        "incoming_payment",
        "quote",
        "debit_amount",
        "receive_amount",
        "outgoing_payment",
    }
)
# Columns only the store itself writes; callers change them through transition() & co.
PENDING_MANAGED_FIELDS = frozenset({"id", "state", "created_at", "updated_at", "version"})


class LegState(StrEnum):
    """One seller's part of a split payment (docs/split-payments.md)."""

    STARTED = "started"
    INCOMING_CREATED = "incoming_created"
    QUOTE_CREATED = "quote_created"
    PAYING = "paying"
    PAYMENT_CREATED = "payment_created"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # a failed leg given up on by `pending cancel`


@dataclass(repr=False)
class Leg:
    """One seller's part of a split payment: its incoming payment, quote and outgoing payment.

    The grant (``Pending``) holds the approval and the summed debit; each leg moves through
    :class:`LegState` on its own, with its own durable ``paying`` step."""

    pending_id: str
    leg: int  # 1, 2, ... in the order the payees were given
    seller_id: str
    seller_wallet: str
    amount: str
    state: LegState
    created_at: float
    updated_at: float
    version: int = 1
    seller_doc: dict[str, Any] | None = None
    incoming_payment_url: str | None = None
    incoming_payment: dict[str, Any] | None = None
    quote_url: str | None = None
    quote: dict[str, Any] | None = None
    debit_amount: dict[str, Any] | None = None
    receive_amount: dict[str, Any] | None = None
    outgoing_payment_url: str | None = None
    outgoing_payment: dict[str, Any] | None = None
    last_error: str | None = None
    attempts: int = 0

    @property
    def paid(self) -> bool:
        return self.state == LegState.COMPLETED

    def to_json(self) -> dict[str, Any]:
        """The leg as ``status``, ``pending show``, ``--json`` and webhooks show it."""
        paid = self.outgoing_payment or {}
        return {
            "leg": self.leg,
            "sellerId": self.seller_id,
            "sellerWallet": self.seller_wallet,
            "amount": self.amount,
            "state": str(self.state),
            "incomingPayment": self.incoming_payment_url,
            "quote": self.quote_url,
            "debitAmount": self.debit_amount,
            "receiveAmount": self.receive_amount,
            "outgoingPayment": self.outgoing_payment_url,
            "sentAmount": paid.get("sentAmount"),
            "lastError": self.last_error,
        }

    __repr__ = _repr


LEG_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Leg))
LEG_JSON_FIELDS = PENDING_JSON_FIELDS & frozenset(LEG_FIELDS)
LEG_MANAGED_FIELDS = frozenset(
    {"pending_id", "leg", "state", "created_at", "updated_at", "version"}
)
LEG_FINAL_STATES = frozenset({LegState.COMPLETED, LegState.FAILED, LegState.CANCELLED})


@dataclass(repr=False)
class Event:
    """One line of a pending grant's audit trail. ``data`` is stored with credentials redacted."""

    id: int
    pending_id: str
    at: float
    kind: str
    from_state: str | None
    to_state: str | None
    data: dict[str, Any] = field(default_factory=dict)

    __repr__ = _repr


@dataclass(repr=False)
class CachedGrant:
    """A non-interactive grant's access token (incoming-payment or quote), kept until expiry."""

    key: str
    auth_server: str
    access_token: str
    manage_url: str
    expires_at: float | None
    access: list[Any]
    created_at: float

    __repr__ = _repr


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook event for the marketplace, as sent (or still to send)."""

    id: int
    pending_id: str | None
    event_type: str
    body: str
    attempts: int
    delivered_at: float | None
    last_error: str | None
    created_at: float

    @property
    def delivered(self) -> bool:
        return self.delivered_at is not None
