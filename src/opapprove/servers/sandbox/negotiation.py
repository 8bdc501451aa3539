"""Content negotiation as Rafiki's OpenAPI layer does it: JSON, or 406."""

from __future__ import annotations

from starlette.responses import JSONResponse


def accepts_json(accept: str) -> bool:
    """Rafiki's check: JSON, ``*/*`` or a browser's list (which ends in ``*/*``) will do."""
    if not accept.strip():
        return True
    kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(kinds & {"application/json", "application/*", "*/*"})


def not_acceptable(code: str | None = "406") -> JSONResponse:
    error: dict[str, str] = {
        "description": "Received error validating OpenAPI request: Must accept application/json"
    }
    if code is not None:
        error = {"code": code, **error}
    return JSONResponse({"error": error}, status_code=406)
