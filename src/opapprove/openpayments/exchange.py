"""One HTTP exchange of the client, as ``--trace`` shows it, and how to hide its secrets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from opapprove.openpayments import jsontext
from opapprove.openpayments.redaction import redact_headers, redact_json, redact_signature_base
from opapprove.openpayments.signatures import SignedParts, compact_json


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
        """A copy with every secret ``redaction`` knows of (tokens, shared secrets) as ***."""
        signature = self.signature
        if signature is not None:
            signature = dataclasses.replace(
                signature, signature_base=redact_signature_base(signature.signature_base)
            )
        return dataclasses.replace(
            self,
            request_headers=redact_headers(self.request_headers),
            request_body=_redact_body(self.request_body),
            response_body=_redact_body(self.response_body),
            signature=signature,
        )


def _redact_body(body: bytes) -> bytes:
    if not body:
        return body
    try:
        data = jsontext.loads(body)
    except ValueError:
        return body
    redacted = redact_json(data)
    return body if redacted == data else compact_json(redacted)
