"""One exception family for everything that can go wrong talking Open Payments."""

from __future__ import annotations

from typing import Any

from opapprove.errors import OpapproveError


class OpenPaymentsError(OpapproveError):
    """Base of every error this package raises.

    ``hint`` is what a person can do about it; ``str(err)`` is one line.
    """

    kind = "open_payments"


class KeyLoadError(OpenPaymentsError):
    """A private or public key could not be loaded or is of the wrong type."""

    kind = "key"


class AmountError(OpenPaymentsError, ValueError):
    """A decimal amount that cannot be put on the wire exactly."""

    kind = "amount"


class WalletAddressError(OpenPaymentsError, ValueError):
    """A wallet address URL that is malformed or not allowed."""

    kind = "wallet_address"


class SignatureError(OpenPaymentsError):
    """A request signature that does not verify; ``part`` names what differs."""

    kind = "verification"

    def __init__(self, message: str, *, part: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.part = part


class InteractionHashError(OpenPaymentsError):
    """The finish redirect's ``hash`` does not match what this grant should produce."""

    kind = "verification"


class TransportError(OpenPaymentsError):
    """The server could not be reached, or the connection dropped before an answer."""

    kind = "transport"

    def __init__(self, message: str, *, method: str, url: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.method = method
        self.url = url


class ResponseError(OpenPaymentsError):
    """A server answered with an error status, or with a body that is not what the spec says."""

    kind = "refused"

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int,
        code: str | None = None,
        description: str | None = None,
        details: dict[str, Any] | None = None,
        body: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.method = method
        self.url = url
        self.status = status
        self.code = code
        self.description = description
        self.details = details or {}
        self.body = body


class GrantError(ResponseError):
    """An error from the GNAP authorization server (``{"error": {"code", "description"}}``)."""


class ResourceError(ResponseError):
    """An error from the resource server (incoming payments, quotes, outgoing payments)."""


class InvalidResponse(ResponseError):
    """A 2xx answer whose body does not match the Open Payments spec."""

    kind = "invalid_response"
