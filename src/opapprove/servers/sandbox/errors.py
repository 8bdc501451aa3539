"""Errors the sandbox answers with, in the two shapes Open Payments servers use.

The auth server answers GNAP errors ``{"error": {"code": "invalid_client", ...}}``; the
resource server puts the HTTP status in ``code`` as Rafiki does (``"401"``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class ApiError(Exception):
    def __init__(
        self, status: int, description: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        raise NotImplementedError


class GnapError(ApiError):
    """An auth-server error with a GNAP code."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(status, description)
        self.code = code

    def body(self) -> dict[str, Any]:
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
    ) -> None:
        super().__init__(status, description, headers=headers)
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
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
    if isinstance(exc, SandboxError):
        return JSONResponse({"error": {"description": str(exc)}}, status_code=exc.status)
    raise exc
