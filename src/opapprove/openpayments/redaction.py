"""What is secret in Open Payments, and masking it wherever it could show.

The one list of secrets: GNAP access and continue token values, incoming payments' shared
secrets, private keys, our own webhook secret and API token, credentials in headers and in
URLs. The trace, the store's events and records, ``sig verify``, error reports and ``--json``
all mask through here, so a secret named in one place is hidden in all of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

# Members (JSON keys, model fields, record columns) whose string value is a secret wherever
# they appear; both spellings where the wire says camelCase and Python says snake_case.
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
        "password",
        "authorization",
        "Authorization",
    }
)
# Objects whose ``value`` member is a token: GNAP's access_token {value, manage, ...} and
# continue {access_token: {value}}.
_VALUE_HOLDERS = SECRET_KEYS | {"continue"}
# Headers that carry a credential; for the ``Authorization`` kind the scheme stays visible.
_AUTHORIZATION_HEADERS = frozenset({"authorization", "proxy-authorization"})
SECRET_HEADERS = _AUTHORIZATION_HEADERS | {"cookie", "set-cookie", "x-idp-secret"}

_GNAP = re.compile(r"\b(GNAP\s+)(?!as_uri=)([^\s\"',;]+)")
_PEM = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)
_JSON_SECRET = re.compile(r'("(?:' + "|".join(sorted(SECRET_KEYS)) + r')"\s*:\s*)"(?:[^"\\]|\\.)*"')
_JSON_TOKEN_VALUE = re.compile(
    r'("(?:' + "|".join(sorted(_VALUE_HOLDERS)) + r')"\s*:\s*\{[^{}]*?"value"\s*:\s*)'
    r'"(?:[^"\\]|\\.)*"'
)
# user:password@ in any URL written into text (database URLs above all).
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(@)")
_AUTHORIZATION_LINE = re.compile(r'^"authorization"(?P<params>;[^:]*)?: (?P<value>.*)$')


def is_secret(key: str, holder: str | None = None) -> bool:
    """True if member ``key`` (inside an object held under ``holder``) holds a secret."""
    return key in SECRET_KEYS or (key == "value" and holder in _VALUE_HOLDERS)


def redact_json(data: Any, *, _holder: str | None = None) -> Any:
    """A copy of ``data`` with secret values replaced by ``***`` (amounts are left alone)."""
    if isinstance(data, dict):
        holds_token = _holder in _VALUE_HOLDERS
        out: dict[str, Any] = {}
        for key, value in data.items():
            # is_secret() spelled out, and scalars handled here: the store masks every event.
            if isinstance(value, str):
                secret = key in SECRET_KEYS or (holds_token and key == "value")
                out[key] = MASK if secret else redact_text(value)
            elif isinstance(value, dict | list):
                out[key] = redact_json(value, _holder=key)
            else:
                out[key] = value
        return out
    if isinstance(data, list):
        return [redact_json(item, _holder=_holder) for item in data]
    if isinstance(data, str):
        return redact_text(data)
    return data


def redact_text(text: str) -> str:
    """Mask GNAP tokens, PEM private keys, URL passwords and secret JSON members in free text."""
    # Each pattern only where its anchor appears: the store masks every string of every
    # event it writes, and most (URLs, amounts, times) hold none of them.
    if "PRIVATE KEY" in text:
        text = _PEM.sub("-----PRIVATE KEY " + MASK + "-----", text)
    if "GNAP" in text:
        text = _GNAP.sub(lambda m: m.group(1) + MASK, text)
    if "@" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(2), text)
    if '"' in text:
        text = _JSON_TOKEN_VALUE.sub(lambda m: m.group(1) + f'"{MASK}"', text)
        text = _JSON_SECRET.sub(lambda m: m.group(1) + f'"{MASK}"', text)
    return text


def redact_body(body: bytes | str | None) -> str:
    """A request/response body as text for people, JSON masked structurally when it parses."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if not text:
        return ""
    try:
        return json.dumps(redact_json(json.loads(text)), ensure_ascii=False)
    except (ValueError, RecursionError):
        # Not JSON, or nested past what a parser or redact_json can walk (a hostile body).
        return redact_text(text)


def redact_authorization(value: str, *, fingerprint: bool = False) -> str:
    """``GNAP ***``: the scheme stays, the credential goes.

    With ``fingerprint`` the credential shows as ``***`` plus the start of its SHA-256, so two
    different tokens differ (in a diff) without either being shown.
    """
    scheme, _, credential = value.partition(" ")
    masked = MASK
    if fingerprint and credential and credential != MASK:
        import hashlib  # only sig verify's diff asks for it: not at every command's start-up

        digest = hashlib.sha256(credential.encode("utf-8", "replace")).hexdigest()
        masked = f"{MASK} (sha256 {digest[:8]})"
    return f"{scheme} {masked}" if credential else masked


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with credentials masked, and secrets in any other header's text."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _AUTHORIZATION_HEADERS:
            out[name] = redact_authorization(value)
        elif lowered in SECRET_HEADERS:
            out[name] = MASK
        else:
            out[name] = redact_text(value)
    return out


@overload
def redact_signature_base(base: str, *, fingerprint: bool = False) -> str: ...
@overload
def redact_signature_base(base: str | None, *, fingerprint: bool = False) -> str | None: ...
def redact_signature_base(base: str | None, *, fingerprint: bool = False) -> str | None:
    """A signature base with the ``authorization`` line's credential masked."""
    if base is None:
        return None
    out = []
    for line in base.split("\n"):
        match = _AUTHORIZATION_LINE.match(line)
        if match:
            value = redact_authorization(match["value"], fingerprint=fingerprint)
            line = f'"authorization"{match["params"] or ""}: {value}'
        out.append(line)
    return "\n".join(out)


def redact_url(url: str) -> str:
    """``url`` with its password masked, in the user-info and in a ``password=`` query member.

    For database URLs (``postgresql://user:secret@host/db?sslmode=require``) and any other
    URL that may carry a credential into a message, a log or ``--json``.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return redact_text(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(is_secret(k) for k, _ in pairs)
    if password is None and not secret_query:
        return url  # as given: urlunsplit would also drop the empty host of "scheme:///db"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    query = parts.query
    if secret_query:
        query = urlencode([(k, MASK if is_secret(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
