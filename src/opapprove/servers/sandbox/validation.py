"""Small checks of request bodies, shared by the auth and resource servers.

The sandbox has no JSON-schema engine at run time; these encode the spec rules that
matter and return a message naming the field, or None when the value is fine.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from opapprove.openpayments import jsontext

UINT64_MAX = 2**64 - 1
_UINT = re.compile(r"^[0-9]+$")


# How Rafiki words a request its OpenAPI validator refuses (no error code on the AS).
OPENAPI_PREFIX = "Received error validating OpenAPI request"


class BodyError(ValueError):
    """A request body that breaks the spec; the message names the field.

    ``openapi`` is Rafiki's wording for the same refusal (its OpenAPI validator's), when
    Rafiki refuses it there rather than in its own code.
    """

    def __init__(self, message: str, *, openapi: str | None = None) -> None:
        super().__init__(message)
        self.openapi = openapi

    def rafiki_description(self) -> str:
        return f"{OPENAPI_PREFIX}: {self.openapi or self}"


def parse_json_object(body: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    if not body.strip():
        if allow_empty:
            return {}
        raise BodyError("the request body is empty; send a JSON object")
    try:
        data = jsontext.loads(body)
    except ValueError as exc:
        raise BodyError(f"the request body is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise BodyError("the request body must be a JSON object")
    return data


def is_http_url(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def amount_value(data: Any, where: str) -> tuple[int, str, int]:
    """``{value, assetCode, assetScale}`` -> ``(value, code, scale)``, or BodyError."""
    if not isinstance(data, dict):
        raise BodyError(f"{where} must be an object with value, assetCode and assetScale")
    missing = [k for k in ("value", "assetCode", "assetScale") if k not in data]
    if missing:
        raise BodyError(f"{where} lacks {', '.join(missing)}")
    value, code, scale = data["value"], data["assetCode"], data["assetScale"]
    if not isinstance(value, str) or not _UINT.match(value) or int(value) > UINT64_MAX:
        raise BodyError(
            f"{where}.value must be an unsigned 64-bit integer as a string",
            openapi=f'body.{where}.value must match format "uint64"',
        )
    if not isinstance(code, str) or not code:
        raise BodyError(f"{where}.assetCode must be a string")
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 255:
        raise BodyError(f"{where}.assetScale must be an integer from 0 to 255")
    return int(value), code, scale


def parse_datetime(value: Any, where: str) -> float:
    if not isinstance(value, str):
        raise BodyError(f"{where} must be an RFC 3339 date-time string")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError as exc:
        raise BodyError(f"{where} {value!r} is not an RFC 3339 date-time") from exc
    if parsed.tzinfo is None:
        raise BodyError(f"{where} {value!r} has no time zone; add Z or an offset")
    return parsed.timestamp()


def iso(ts: float) -> str:
    """A timestamp the way Rafiki writes them: UTC, milliseconds, ``Z``."""
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def only_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise BodyError(f"{where} has properties the spec does not allow: {', '.join(extra)}")
