"""What every Open Payments model shares: the base classes, the amount, the error answers.

``_Sent`` bodies forbid unknown fields; ``_Received`` documents keep them (see the
package's docstring for why).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from opapprove.openpayments.errors import AmountError
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


# A field of a body we send that takes an exact ``money.Amount`` as well as the model.
AmountIn = Annotated[AmountModel, BeforeValidator(_as_amount_model)]


# --------------------------------------------------------------------------- sent amounts


class _DebitOrReceive(_Sent):
    """For a body with optional ``debit_amount`` and ``receive_amount`` fields: at most one.

    The subclass declares the two fields itself, where they belong in its field order
    (the order of the JSON sent).
    """

    _both: ClassVar[str]

    @model_validator(mode="after")
    def _one_amount(self) -> Any:
        if getattr(self, "debit_amount", None) is not None and (
            getattr(self, "receive_amount", None) is not None
        ):
            raise ValueError(self._both)
        return self


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
