"""Pydantic models of every Open Payments document and request body (spec 1.3).

Field names are snake_case with the wire's camelCase as aliases; both are accepted.
Put a model on the wire with ``to_wire()`` (aliases, no ``None`` fields, JSON types).

Strictness follows who wrote the document. Bodies we send forbid unknown fields, so a
typo fails here instead of as a 400 at the server. Documents we receive tolerate fields
the spec does not list, except where tolerance would hide a real problem: a JWKS (Rafiki
rejects extra top-level members, so our signatures would fail there) and access rights
(a right we do not understand is a restriction we cannot honour).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StringConstraints,
    field_validator,
    model_serializer,
    model_validator,
)

from opapprove.openpayments import keys
from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.interaction import new_nonce
from opapprove.openpayments.money import UINT64_MAX, Amount
from opapprove.openpayments.redaction import MASK, is_secret

RECEIVER_PATTERN = r"^(https|http)://(.+)/incoming-payments/(.+)$"
ILP_ADDRESS_PATTERN = r"^(g|private|example|peer|self|test[1-3]?|local)([.][a-zA-Z0-9_~-]+)+$"
B64URL_PATTERN = r"^[a-zA-Z0-9-_]+$"

Receiver = Annotated[str, StringConstraints(pattern=RECEIVER_PATTERN)]


class _Model(BaseModel):
    """Base of every model: aliases, and one way onto the wire."""

    # defer_build: a command uses a handful of these models; building every schema at
    # import would delay each CLI process's first request (bench/RESULTS.md, "Start-up").
    model_config = ConfigDict(populate_by_name=True, extra="allow", defer_build=True)

    # The member this object stands under on the wire: with ``redaction`` it says which
    # fields are secrets, shown as *** by repr() and str().
    _held_by: ClassVar[str | None] = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON object to send or store: camelCase aliases, no ``None`` fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name is not None and isinstance(value, str) and is_secret(name, self._held_by):
                yield name, MASK
            else:
                yield name, value


class _Sent(_Model):
    """A body we send: unknown fields are a bug on our side."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", defer_build=True)


class _Received(_Model):
    """A document a server sends: extra fields are kept, not refused."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", defer_build=True)


# --------------------------------------------------------------------------- amounts


class AmountModel(_Model):
    """``{value, assetCode, assetScale}``; ``value`` is a uint64 as a decimal string."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    # A JSON number here would lose precision past 2**53 in JavaScript servers; the spec
    # says string, so a number is refused rather than converted.
    value: Annotated[str, Field(strict=True, pattern=r"^[0-9]+$")]
    asset_code: str = Field(alias="assetCode", min_length=1)
    asset_scale: int = Field(alias="assetScale", ge=0, le=255, strict=True)

    @field_validator("value")
    @classmethod
    def _uint64(cls, value: str) -> str:
        if int(value) > UINT64_MAX:
            raise ValueError("amount value is larger than an unsigned 64-bit integer")
        return value

    def to_amount(self) -> Amount:
        """The exact amount; raises ``AmountError`` for an asset code money.Amount refuses."""
        return Amount(int(self.value), self.asset_code, self.asset_scale)

    @classmethod
    def of(cls, amount: Amount) -> AmountModel:
        return cls(
            value=str(amount.value), asset_code=amount.asset_code, asset_scale=amount.asset_scale
        )

    def same_asset(self, other: AmountModel) -> bool:
        return (self.asset_code, self.asset_scale) == (other.asset_code, other.asset_scale)

    def __str__(self) -> str:
        try:
            return str(self.to_amount())
        except AmountError:
            return f"{self.value} (scale {self.asset_scale}) {self.asset_code}"


def _as_amount_model(value: Any) -> Any:
    return AmountModel.of(value) if isinstance(value, Amount) else value


# --------------------------------------------------------------------------- wallet address


class WalletAddress(_Received):
    id: str
    public_name: str | None = Field(default=None, alias="publicName")
    asset_code: str = Field(alias="assetCode")
    asset_scale: int = Field(alias="assetScale", ge=0, le=255)
    auth_server: str = Field(alias="authServer")
    resource_server: str = Field(alias="resourceServer")

    def amount(self, decimal: str) -> Amount:
        """A decimal string (``"12.34"``) in this wallet's asset, exactly or refused."""
        return Amount.parse(decimal, self.asset_code, self.asset_scale)


class JWK(_Model):
    """An Ed25519 public key as published in ``jwks.json`` (all of kid, alg, kty, crv, x)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)

    kid: str
    alg: Literal["EdDSA"]
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: Annotated[str, StringConstraints(pattern=B64URL_PATTERN)]
    use: Literal["sig"] | None = None

    def to_jwk(self) -> keys.Jwk:
        return keys.Jwk(kid=self.kid, x=self.x, use=self.use)

    @classmethod
    def of(cls, jwk: keys.Jwk) -> JWK:
        return cls.model_validate(jwk.to_dict())


class JWKS(_Model):
    """``{"keys": [...]}``. Extra top-level members are refused: Rafiki refuses them too."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", defer_build=True)

    keys: list[JWK]

    def find(self, kid: str) -> JWK | None:
        return next((k for k in self.keys if k.kid == kid), None)


# --------------------------------------------------------------------------- access rights

IncomingPaymentAction = Literal["create", "complete", "read", "read-all", "list", "list-all"]
QuoteAction = Literal["create", "read", "read-all"]
OutgoingPaymentAction = Literal["create", "read", "read-all", "list", "list-all"]


class _DebitOrReceive(_Sent):
    """For a body with optional ``debit_amount`` and ``receive_amount`` fields: at most one.

    The subclass declares the two fields itself, where they belong in its field order
    (the order of the JSON sent).
    """

    _both: ClassVar[str]

    @field_validator("debit_amount", "receive_amount", mode="before", check_fields=False)
    @classmethod
    def _amount(cls, value: Any) -> Any:
        return _as_amount_model(value)

    @model_validator(mode="after")
    def _one_amount(self) -> Any:
        if getattr(self, "debit_amount", None) is not None and (
            getattr(self, "receive_amount", None) is not None
        ):
            raise ValueError(self._both)
        return self


class OutgoingPaymentLimits(_DebitOrReceive):
    """Grant limits: at most one of ``debit_amount`` / ``receive_amount`` (spec 1.1+)."""

    _both = "limits may give debitAmount or receiveAmount, not both"

    receiver: Receiver | None = None
    interval: str | None = None
    debit_amount: AmountModel | None = Field(default=None, alias="debitAmount")
    receive_amount: AmountModel | None = Field(default=None, alias="receiveAmount")


class _Access(_Sent):
    @field_validator("actions", check_fields=False)
    @classmethod
    def _unique(cls, actions: list[str]) -> list[str]:
        if len(set(actions)) != len(actions):
            raise ValueError("an action is listed twice")
        return actions


class IncomingPaymentAccess(_Access):
    type: Literal["incoming-payment"] = "incoming-payment"
    actions: list[IncomingPaymentAction]
    identifier: str | None = None


class QuoteAccess(_Access):
    # The spec's access-quote has no identifier: sending one fails unevaluatedProperties.
    type: Literal["quote"] = "quote"
    actions: list[QuoteAction]


class OutgoingPaymentAccess(_Access):
    type: Literal["outgoing-payment"] = "outgoing-payment"
    actions: list[OutgoingPaymentAction]
    identifier: str
    limits: OutgoingPaymentLimits | None = None


AccessItem = Annotated[
    IncomingPaymentAccess | QuoteAccess | OutgoingPaymentAccess, Field(discriminator="type")
]


class AccessTokenRequest(_Sent):
    access: Annotated[list[AccessItem], Field(min_length=1, max_length=3)]

    @field_validator("access")
    @classmethod
    def _unique(cls, access: list[Any]) -> list[Any]:
        wires = [repr(item.to_wire()) for item in access]
        if len(set(wires)) != len(wires):
            raise ValueError("the same access item is listed twice")
        return access


# --------------------------------------------------------------------------- grant request


class SubjectId(_Model):
    id: str
    format: Literal["uri"] = "uri"


class Subject(_Model):
    sub_ids: Annotated[list[SubjectId], Field(min_length=1, max_length=1)]


class WalletAddressClient(_Sent):
    wallet_address: str = Field(alias="walletAddress")


class JwkClient(_Sent):
    """Directed identity: the key itself instead of a wallet address (non-interactive only)."""

    jwk: JWK


ClientRef = str | WalletAddressClient | JwkClient


def client_url(client: ClientRef) -> str | None:
    """The wallet address whose ``jwks.json`` the AS reads for this client, if any."""
    if isinstance(client, str):
        return client
    if isinstance(client, WalletAddressClient):
        return client.wallet_address
    return None


class InteractFinish(_Sent):
    method: Literal["redirect"] = "redirect"
    uri: str
    nonce: str


def _redirect_start() -> list[Literal["redirect"]]:
    return ["redirect"]


class InteractRequest(_Sent):
    start: list[Literal["redirect"]] = Field(default_factory=_redirect_start)
    finish: InteractFinish | None = None


class GrantRequest(_Sent):
    """``POST {authServer}``: access_token + client [+ interact], or the subject form."""

    access_token: AccessTokenRequest | None = None
    client: ClientRef
    interact: InteractRequest | None = None
    subject: Subject | None = None

    @model_validator(mode="after")
    def _form(self) -> GrantRequest:
        if self.access_token is None and (self.subject is None or self.interact is None):
            raise ValueError("a grant request needs access_token, or subject with interact")
        return self

    @property
    def is_interactive(self) -> bool:
        return self.interact is not None


class ContinueRequest(_Sent):
    interact_ref: str | None = None


# --------------------------------------------------------------------------- grant responses


class ContinueToken(_Received):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    _held_by = "access_token"

    value: str


class Continue(_Received):
    """How to continue a grant: ``POST uri`` with ``Authorization: GNAP <access_token.value>``."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    access_token: ContinueToken
    uri: str
    wait: int | None = Field(default=None, ge=0)

    @property
    def token(self) -> str:
        return self.access_token.value


class AccessToken(_Received):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    _held_by = "access_token"

    value: str
    manage: str
    expires_in: int | None = None
    access: list[AccessItem]


class InteractResponse(_Received):
    redirect: str
    finish: str


class PendingGrant(_Received):
    """A grant waiting for the user.

    From a grant request ``interact`` is always set (the client checks). From a
    continuation while the user has not approved yet it is ``None``: only ``continue``.
    """

    interact: InteractResponse | None = None
    continue_: Continue = Field(alias="continue")

    @property
    def redirect(self) -> str:
        if self.interact is None:
            raise ValueError("this pending grant carries no interaction redirect")
        return self.interact.redirect

    @property
    def finish_nonce(self) -> str:
        """The AS's ``interact.finish``: the second line of the finish-hash input."""
        if self.interact is None:
            raise ValueError("this pending grant carries no interaction finish nonce")
        return self.interact.finish


class Grant(_Received):
    """A finalized grant: an access token, subject information, or both."""

    access_token: AccessToken | None = None
    continue_: Continue = Field(alias="continue")
    subject: Subject | None = None

    @model_validator(mode="after")
    def _finalized(self) -> Grant:
        if self.access_token is None and self.subject is None:
            raise ValueError("a finalized grant carries access_token or subject")
        return self


def parse_grant_response(data: Any) -> PendingGrant | Grant:
    """The answer to ``POST {authServer}``: pending interaction, or approved outright."""
    if isinstance(data, dict) and "interact" in data:
        pending = PendingGrant.model_validate(data)
        if pending.interact is None:
            raise ValueError("interact is null")
        return pending
    return Grant.model_validate(data)


def parse_continue_response(data: Any) -> PendingGrant | Grant:
    """The answer to ``POST {continue.uri}``: finalized, or still pending (``continue`` only)."""
    if isinstance(data, dict) and (
        data.get("access_token") is not None or data.get("subject") is not None
    ):
        return Grant.model_validate(data)
    return PendingGrant.model_validate(data)


class RotatedToken(_Received):
    """The answer to ``POST {access_token.manage}``."""

    access_token: AccessToken


# --------------------------------------------------------------------------- errors


class ErrorDetail(_Received):
    code: str | None = None
    description: str | None = None
    details: dict[str, Any] | None = None


class GnapError(_Received):
    """The AS error shape ``{"error": {"code", "description"}}`` (code may be absent)."""

    error: ErrorDetail


class ResourceServerError(_Received):
    """The RS error shape ``{"error": {"code", "description", "details"?}}``."""

    error: ErrorDetail


# --------------------------------------------------------------------------- incoming payments


def _parse_datetime(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _format_datetime(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


class IncomingPayment(_Received):
    id: str
    wallet_address: str = Field(alias="walletAddress")
    # Required by the spec, with default false; the spec's own example omits it.
    completed: bool = False
    incoming_amount: AmountModel | None = Field(default=None, alias="incomingAmount")
    received_amount: AmountModel = Field(alias="receivedAmount")
    expires_at: str | None = Field(default=None, alias="expiresAt")
    metadata: dict[str, Any] | None = None
    created_at: str = Field(alias="createdAt")

    @property
    def expires_at_datetime(self) -> datetime | None:
        return _parse_datetime(self.expires_at)


class IlpPaymentMethod(_Received):
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    type: Literal["ilp"] = "ilp"
    ilp_address: Annotated[str, StringConstraints(pattern=ILP_ADDRESS_PATTERN, max_length=1023)] = (
        Field(alias="ilpAddress")
    )
    shared_secret: Annotated[str, StringConstraints(pattern=B64URL_PATTERN)] = Field(
        alias="sharedSecret"
    )


class IncomingPaymentWithMethods(IncomingPayment):
    methods: list[IlpPaymentMethod]


class PublicIncomingPayment(_Received):
    auth_server: str = Field(alias="authServer")
    received_amount: AmountModel | None = Field(default=None, alias="receivedAmount")


class CreateIncomingPayment(_Sent):
    wallet_address: str = Field(alias="walletAddress")
    incoming_amount: AmountModel | None = Field(default=None, alias="incomingAmount")
    expires_at: str | None = Field(default=None, alias="expiresAt")
    metadata: dict[str, Any] | None = None

    @field_validator("incoming_amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Any:
        return _as_amount_model(value)

    @field_validator("expires_at", mode="before")
    @classmethod
    def _expires(cls, value: Any) -> Any:
        return _format_datetime(value)


# --------------------------------------------------------------------------- quotes


class Quote(_Received):
    id: str
    wallet_address: str = Field(alias="walletAddress")
    receiver: str
    receive_amount: AmountModel = Field(alias="receiveAmount")
    debit_amount: AmountModel = Field(alias="debitAmount")
    method: Literal["ilp"]
    expires_at: str | None = Field(default=None, alias="expiresAt")
    created_at: str = Field(alias="createdAt")

    @property
    def expires_at_datetime(self) -> datetime | None:
        return _parse_datetime(self.expires_at)


class CreateQuote(_DebitOrReceive):
    """``POST {rs}/quotes``: no amount (the receiver has one), or debit XOR receive amount."""

    _both = "a quote takes debitAmount or receiveAmount, not both"

    wallet_address: str = Field(alias="walletAddress")
    receiver: Receiver
    method: Literal["ilp"] = "ilp"
    debit_amount: AmountModel | None = Field(default=None, alias="debitAmount")
    receive_amount: AmountModel | None = Field(default=None, alias="receiveAmount")


# --------------------------------------------------------------------------- outgoing payments


class OutgoingPayment(_Received):
    id: str
    wallet_address: str = Field(alias="walletAddress")
    quote_id: str | None = Field(default=None, alias="quoteId")
    failed: bool = False
    receiver: str
    receive_amount: AmountModel = Field(alias="receiveAmount")
    debit_amount: AmountModel = Field(alias="debitAmount")
    sent_amount: AmountModel = Field(alias="sentAmount")
    metadata: dict[str, Any] | None = None
    created_at: str = Field(alias="createdAt")


class OutgoingPaymentWithSpentAmounts(OutgoingPayment):
    grant_spent_debit_amount: AmountModel | None = Field(
        default=None, alias="grantSpentDebitAmount"
    )
    grant_spent_receive_amount: AmountModel | None = Field(
        default=None, alias="grantSpentReceiveAmount"
    )


class CreateOutgoingPayment(_Sent):
    """``POST {rs}/outgoing-payments``: from a quote, or from an incoming payment + debit amount."""

    wallet_address: str = Field(alias="walletAddress")
    quote_id: str | None = Field(default=None, alias="quoteId")
    incoming_payment: str | None = Field(default=None, alias="incomingPayment")
    debit_amount: AmountModel | None = Field(default=None, alias="debitAmount")
    metadata: dict[str, Any] | None = None

    @field_validator("debit_amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Any:
        return _as_amount_model(value)

    @model_validator(mode="after")
    def _one_form(self) -> CreateOutgoingPayment:
        from_quote = self.quote_id is not None
        from_incoming = self.incoming_payment is not None or self.debit_amount is not None
        if from_quote == from_incoming:
            raise ValueError(
                "give quote_id, or incoming_payment with debit_amount (not both forms)"
            )
        if from_incoming and (self.incoming_payment is None or self.debit_amount is None):
            raise ValueError("incoming_payment and debit_amount go together")
        return self


class GrantSpentAmounts(_Received):
    """Totals spent under an outgoing-payment grant (this interval); both keys always present."""

    spent_debit_amount: AmountModel | None = Field(alias="spentDebitAmount")
    spent_receive_amount: AmountModel | None = Field(alias="spentReceiveAmount")

    @model_serializer(mode="wrap")
    def _keep_nulls(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        # The spec requires both keys, null included, so exclude_none must not drop them.
        data: dict[str, Any] = handler(self)
        for name, field in type(self).model_fields.items():
            key = field.alias if info.by_alias and field.alias else name
            data.setdefault(key, None)
        return data


# --------------------------------------------------------------------------- pagination

T = TypeVar("T", bound=BaseModel)


class PageInfo(_Received):
    start_cursor: str | None = Field(default=None, alias="startCursor", min_length=1)
    end_cursor: str | None = Field(default=None, alias="endCursor", min_length=1)
    has_next_page: bool = Field(alias="hasNextPage")
    has_previous_page: bool = Field(alias="hasPreviousPage")


class Page(_Received, Generic[T]):
    pagination: PageInfo
    result: list[T]


# --------------------------------------------------------------------------- grant builders


def incoming_payment_grant(
    client: ClientRef,
    identifier: str | None = None,
    *,
    actions: tuple[IncomingPaymentAction, ...] = ("create", "read", "complete"),
) -> GrantRequest:
    """A non-interactive grant to create, read and complete incoming payments."""
    access = IncomingPaymentAccess(actions=list(actions), identifier=identifier)
    return GrantRequest(access_token=AccessTokenRequest(access=[access]), client=client)


def quote_grant(
    client: ClientRef, *, actions: tuple[QuoteAction, ...] = ("create", "read")
) -> GrantRequest:
    """A non-interactive grant to create and read quotes."""
    access = QuoteAccess(actions=list(actions))
    return GrantRequest(access_token=AccessTokenRequest(access=[access]), client=client)


def outgoing_payment_grant(
    client: ClientRef,
    identifier: str,
    debit_amount: Amount | AmountModel | None,
    receiver: str | None = None,
    finish_uri: str | None = None,
    nonce: str | None = None,
    interval: str | None = None,
    *,
    receive_amount: Amount | AmountModel | None = None,
    actions: tuple[OutgoingPaymentAction, ...] = ("create", "read"),
) -> GrantRequest:
    """An interactive grant to pay from ``identifier``.

    With ``finish_uri`` the wallet redirects there after consent (the nonce is generated
    when not given; read it back from ``interact.finish.nonce``); without it the grant
    can only be polled.
    """
    limits = None
    if any(v is not None for v in (debit_amount, receive_amount, receiver, interval)):
        limits = OutgoingPaymentLimits.model_validate(
            {
                "receiver": receiver,
                "interval": interval,
                "debit_amount": debit_amount,
                "receive_amount": receive_amount,
            }
        )
    access = OutgoingPaymentAccess(actions=list(actions), identifier=identifier, limits=limits)
    finish = None
    if finish_uri is not None:
        finish = InteractFinish(uri=finish_uri, nonce=nonce or new_nonce())
    elif nonce is not None:
        raise ValueError("a nonce only makes sense with a finish_uri")
    return GrantRequest(
        access_token=AccessTokenRequest(access=[access]),
        client=client,
        interact=InteractRequest(finish=finish),
    )
