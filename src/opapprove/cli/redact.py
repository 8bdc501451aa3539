"""Masking secrets in anything the CLI shows: access and continue tokens, shared secrets, keys.

The client's ``Exchange.redacted()`` masks what it knows; this is the CLI's last line of
defence for text that reaches a terminal or a file by any other path (error details, bodies).
"""

from __future__ import annotations

import json
import re
from typing import Any

MASK = "***"

# Keys whose string value is a secret wherever they appear.
SECRET_KEYS = frozenset(
    {
        "access_token",
        "continue_token",
        "token",
        "sharedSecret",
        "shared_secret",
        "private_key",
        "privateKey",
        "api_token",
        "webhook_secret",
        "secret",
        "authorization",
        "Authorization",
    }
)
# Objects whose "value" is a token (GNAP: access_token {value, manage}, continue.access_token).
_TOKEN_HOLDERS = frozenset({"access_token", "continue"})

_GNAP = re.compile(r"\b(GNAP\s+)(?!as_uri=)([^\s\"',;]+)")
_PEM = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)
_JSON_SECRET = re.compile(r'("(?:' + "|".join(sorted(SECRET_KEYS)) + r')"\s*:\s*)"(?:[^"\\]|\\.)*"')
_JSON_TOKEN_VALUE = re.compile(
    r'("(?:access_token|continue)"\s*:\s*\{[^{}]*?"value"\s*:\s*)"(?:[^"\\]|\\.)*"'
)


def redact_json(data: Any, *, _holder: str | None = None) -> Any:
    """A copy of ``data`` with secret values replaced by ``***`` (amounts are left alone)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, str) and (
                key in SECRET_KEYS or (key == "value" and _holder in _TOKEN_HOLDERS)
            ):
                out[key] = MASK
            else:
                out[key] = redact_json(value, _holder=key)
        return out
    if isinstance(data, list):
        return [redact_json(item, _holder=_holder) for item in data]
    if isinstance(data, str):
        return redact_text(data)
    return data


def redact_text(text: str) -> str:
    """Mask GNAP tokens, PEM private keys and secret JSON members inside free text."""
    text = _PEM.sub("-----PRIVATE KEY " + MASK + "-----", text)
    text = _GNAP.sub(lambda m: m.group(1) + MASK, text)
    text = _JSON_TOKEN_VALUE.sub(lambda m: m.group(1) + f'"{MASK}"', text)
    return _JSON_SECRET.sub(lambda m: m.group(1) + f'"{MASK}"', text)


def redact_body(body: bytes | str | None) -> str:
    """A request/response body as text for people, JSON masked structurally when it parses."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if not text:
        return ""
    try:
        parsed = json.loads(text)
    except ValueError:
        return redact_text(text)
    return json.dumps(redact_json(parsed), ensure_ascii=False)
