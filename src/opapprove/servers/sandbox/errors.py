"""Errors the sandbox answers with, in the two shapes Open Payments servers use.

The auth server answers GNAP errors ``{"error": {"code": "invalid_client", ...}}``; the
resource server puts the HTTP status in ``code`` as Rafiki does (``"401"``). The bodies
carry Rafiki's words only. The sandbox's own explanation (``reason``) goes to its log and
to the ``X-Sandbox-Reason`` response header, so ``--trace`` shows it and a client that
would read it from the body against the sandbox cannot come to depend on it.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

REASON_HEADER = "X-Sandbox-Reason"
log = logging.getLogger("opapprove.sandbox")


def reason_header(reason: str) -> str:
    """One printable latin-1 line an HTTP header can carry."""
    flat = " ".join(reason.split())
    return flat.encode("latin-1", "replace").decode("latin-1")[:500]


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        description: str,
        *,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers or {}
        self.reason = reason

    def body(self) -> dict[str, Any]:
        raise NotImplementedError


class GnapError(ApiError):
    """An auth-server error with a GNAP code (None: Rafiki's request validation has none)."""

    def __init__(
        self, status: int, code: str | None, description: str, *, reason: str | None = None
    ) -> None:
        super().__init__(status, description, reason=reason)
        self.code = code

    def body(self) -> dict[str, Any]:
        if self.code is None:
            return {"error": {"description": self.description}}
        return {"error": {"code": self.code, "description": self.description}}


class ResourceServerError(ApiError):
    """A resource-server error; ``details`` carries what a ``--trace`` should show."""

    def __init__(
        self,
        status: int,
        description: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(status, description, headers=headers, reason=reason)
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": str(self.status), "description": self.description}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class SandboxError(ValueError):
    """An operator call (admin route or Python method) that cannot be done."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def api_error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        headers = dict(exc.headers)
        if exc.reason:
            log.info(
                "%s %s -> %d %s: %s",
                request.method,
                request.url.path,
                exc.status,
                exc.description,
                exc.reason,
            )
            headers[REASON_HEADER] = reason_header(exc.reason)
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
    if isinstance(exc, SandboxError):
        return JSONResponse({"error": {"description": str(exc)}}, status_code=exc.status)
    raise exc
