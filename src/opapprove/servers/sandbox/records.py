"""The sandbox's records: plain dataclasses that round-trip through JSON for SQLite.

Ids are bare ids, never URLs: URLs are rendered per request from the origin the client
addressed, so a server bound to port 0 (or reached as localhost) still works.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar


@dataclass
class Account:
    kind: ClassVar[str] = "account"
    id: str  # the account name
    balance: int


@dataclass
class Grant:
    kind: ClassVar[str] = "grant"
    id: str
    # Exactly one of client_wallet / client_jwk is set.
    client_wallet: str | None
    client_jwk: dict[str, Any] | None
    client_name: str | None
    access: list[dict[str, Any]]
    subject: dict[str, Any] | None
    finish: dict[str, Any] | None
    # pending -> approved -> issued; side exits rejected, revoked
    state: str
    continue_id: str
    continue_token: str = field(repr=False)
    created_at: float
    last_continued_at: float
    # The grant request URL exactly as the client addressed it: the finish hash uses it.
    auth_server_url: str
    interact_id: str | None = None
    interact_nonce: str | None = field(default=None, repr=False)
    interact_ref: str | None = field(default=None, repr=False)
    interaction_expires_at: float | None = None

    @property
    def client_id(self) -> str:
        """Who the grant's resources belong to (``read`` vs ``read-all``)."""
        if self.client_wallet is not None:
            return self.client_wallet
        return "jwk:" + str((self.client_jwk or {}).get("x", ""))


@dataclass
class AccessToken:
    kind: ClassVar[str] = "token"
    id: str  # the management id
    value: str = field(repr=False)
    grant_id: str
    created_at: float
    expires_in: int
    revoked: bool = False
    rotated: bool = False


@dataclass(kw_only=True)
class Resource:
    """What a wallet's resource server holds: an incoming payment, a quote, an outgoing payment.

    It belongs to ``account`` and was made by ``client``: a ``read`` or ``list`` grant sees
    only what its own client made (``grants.Introspection.sees``).
    """

    id: str
    account: str
    created_at: float
    client: str | None


@dataclass
class IncomingPayment(Resource):
    kind: ClassVar[str] = "incoming"
    incoming_amount: int | None
    received: int
    completed: bool
    expires_at: float | None
    metadata: dict[str, Any] | None
    shared_secret: str = field(repr=False)
    seq: int = 0


@dataclass
class Quote(Resource):
    kind: ClassVar[str] = "quote"
    receiver: str  # incoming payment id
    debit: int
    receive: int
    expires_at: float
    used: bool = False


@dataclass
class OutgoingPayment(Resource):
    kind: ClassVar[str] = "outgoing"
    receiver: str  # incoming payment id
    quote_id: str | None
    debit: int
    receive: int
    sent: int
    failed: bool
    metadata: dict[str, Any] | None
    grant_id: str
    seq: int = 0
    # When it is due to be sent (sandbox clock); None once sent or failed.
    settle_at: float | None = None


@dataclass
class RegisteredKey:
    """A public key added to a wallet's JWKS while the sandbox runs (``POST /_admin/keys``)."""

    kind: ClassVar[str] = "key"
    id: str  # "{wallet}/{kid}"
    wallet: str
    jwk: dict[str, Any]


Record = Account | Grant | AccessToken | IncomingPayment | Quote | OutgoingPayment | RegisteredKey
RECORD_TYPES: tuple[type[Record], ...] = (
    Account,
    Grant,
    AccessToken,
    IncomingPayment,
    Quote,
    OutgoingPayment,
    RegisteredKey,
)
R = TypeVar(
    "R", Account, Grant, AccessToken, IncomingPayment, Quote, OutgoingPayment, RegisteredKey
)


def to_data(record: Record) -> dict[str, Any]:
    return dataclasses.asdict(record)


def from_data(cls: type[R], data: dict[str, Any]) -> R:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
