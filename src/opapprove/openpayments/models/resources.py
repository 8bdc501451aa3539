"""The resource side: wallet addresses and their keys, incoming payments, quotes, outgoing
payments, and pages of them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar

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

from opapprove.openpayments.models.base import (
    B64URL_PATTERN,
    ILP_ADDRESS_PATTERN,
    AmountIn,
    AmountModel,
    Receiver,
    _DebitOrReceive,
    _Model,
    _Received,
    _Sent,
)
from opapprove.openpayments.money import Amount

if TYPE_CHECKING:
    # keys loads cryptography: a process that only reads documents (`status`) never needs it.
    from opapprove.openpayments import keys

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
        from opapprove.openpayments import keys

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
    incoming_amount: AmountIn | None = Field(default=None, alias="incomingAmount")
    expires_at: str | None = Field(default=None, alias="expiresAt")
    metadata: dict[str, Any] | None = None

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
    debit_amount: AmountIn | None = Field(default=None, alias="debitAmount")
    receive_amount: AmountIn | None = Field(default=None, alias="receiveAmount")


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
    debit_amount: AmountIn | None = Field(default=None, alias="debitAmount")
    metadata: dict[str, Any] | None = None

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
