"""The GNAP side: access rights, grant requests and answers, tokens, and grant builders."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from opapprove.openpayments.interaction import new_nonce
from opapprove.openpayments.models.base import (
    AmountIn,
    AmountModel,
    Receiver,
    _DebitOrReceive,
    _Model,
    _Received,
    _Sent,
)
from opapprove.openpayments.models.resources import JWK
from opapprove.openpayments.money import Amount

# --------------------------------------------------------------------------- access rights

IncomingPaymentAction = Literal["create", "complete", "read", "read-all", "list", "list-all"]
QuoteAction = Literal["create", "read", "read-all"]
OutgoingPaymentAction = Literal["create", "read", "read-all", "list", "list-all"]


class OutgoingPaymentLimits(_DebitOrReceive):
    """Grant limits: at most one of ``debit_amount`` / ``receive_amount`` (spec 1.1+)."""

    _both = "limits may give debitAmount or receiveAmount, not both"

    receiver: Receiver | None = None
    interval: str | None = None
    debit_amount: AmountIn | None = Field(default=None, alias="debitAmount")
    receive_amount: AmountIn | None = Field(default=None, alias="receiveAmount")


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

    @field_validator("redirect")
    @classmethod
    def _a_web_page(cls, value: str) -> str:
        # A person's browser opens it (`quote start --open`, a QR code, the marketplace's
        # link or redirect): a hostile wallet's javascript:, file: or desktop-app URL, or
        # one with a line break, would run there instead. The spec's "uri" allows them all.
        parts = urlsplit(value)
        if (
            parts.scheme.lower() not in ("http", "https")
            or not parts.netloc
            or not value.isprintable()
            or " " in value
        ):
            raise ValueError("interact.redirect must be an http or https URL a browser can open")
        return value


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
