"""One HTTP exchange of the client, as ``--trace`` shows it, and how to hide its secrets."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opapprove.openpayments.signatures import SignedParts, compact_json

REDACTED = "***"


@dataclass(frozen=True)
class Exchange:
    """One HTTP attempt, as ``--trace`` shows it. Holds secrets: print ``redacted()``."""

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: bytes
    signature: SignedParts | None
    status: int | None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    elapsed: float = 0.0
    error: str | None = None
    operation: str = ""
    attempt: int = 1

    @property
    def signature_base(self) -> str | None:
        return self.signature.signature_base if self.signature else None

    def redacted(self) -> Exchange:
        """A copy with GNAP tokens, continue/access token values and shared secrets as ***."""
        signature = self.signature
        if signature is not None:
            signature = dataclasses.replace(
                signature, signature_base=_redact_signature_base(signature.signature_base)
            )
        return dataclasses.replace(
            self,
            request_headers=_redact_headers(self.request_headers),
            request_body=_redact_body(self.request_body),
            response_body=_redact_body(self.response_body),
            signature=signature,
        )


def _redact_authorization(value: str) -> str:
    scheme, _, credential = value.partition(" ")
    return f"{scheme} {REDACTED}" if credential else REDACTED


def _redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        k: _redact_authorization(v) if k.lower() == "authorization" else v
        for k, v in headers.items()
    }


def _redact_signature_base(base: str) -> str:
    lines = base.split("\n")
    prefix = '"authorization": '
    return "\n".join(
        prefix + _redact_authorization(line[len(prefix) :]) if line.startswith(prefix) else line
        for line in lines
    )


def _redact_json(node: Any) -> Any:
    if isinstance(node, list):
        return [_redact_json(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "sharedSecret":
            out[key] = REDACTED
        elif key == "access_token" and isinstance(value, dict) and "value" in value:
            out[key] = {**_redact_json(value), "value": REDACTED}
        else:
            out[key] = _redact_json(value)
    return out


def _redact_body(body: bytes) -> bytes:
    if not body:
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body
    redacted = _redact_json(data)
    return body if redacted == data else compact_json(redacted)
