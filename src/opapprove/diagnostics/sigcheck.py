"""``sig verify``: does a captured request's signature verify, and if not, what differs?

A capture is a ``--trace-file`` line (the record ``cli/trace.py`` writes) or raw HTTP
request headers plus a body. It is checked with ``openpayments.signatures.verify_request``
against a JWKS, with the rules the sandbox and Rafiki apply. When the signature does not
verify, the signature base rebuilt from the capture is compared line by line with the one
the client recorded when it signed: a line that differs names the component that changed
on the way; identical bases mean the key differs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from opapprove.errors import OpapproveError
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import jsontext, urls
from opapprove.openpayments.keys import Jwk
from opapprove.openpayments.redaction import MASK, redact_signature_base
from opapprove.openpayments.signatures import (
    compact_json,
    content_digest,
    describe_request_base,
    digest_mismatch,
    parse_signature_input,
    verify_request,
)

JWKS_SUFFIX = "/jwks.json"
_BASE_LINE = re.compile(r'^"(?P<name>[^"]+)"(?P<params>;[^:]*)?: (?P<value>.*)$')
_METHOD = re.compile(r"^[A-Z]+$")
_NOT_JSON = object()

# What to look at when one line of the signature base differs.
COMPONENT_HINTS = {
    "@method": "the HTTP method changed between signing and sending",
    "@target-uri": (
        "the URL the server sees differs from the one signed (scheme, host, port, path or "
        "query); behind a TLS-terminating proxy the server may see http:// instead of https://"
    ),
    "authorization": "the Authorization header changed after signing (another token?)",
    "content-digest": "the Content-Digest header changed after signing",
    "content-length": "the Content-Length header changed after signing (was the body re-encoded?)",
    "content-type": "the Content-Type header changed after signing",
    "@signature-params": "the Signature-Input header changed after signing",
}


class CaptureError(OpapproveError, ValueError):
    """A capture that cannot be read. ``str(err)`` is one line: what, why, what to do."""

    kind = "input"


@dataclass(frozen=True)
class CapturedRequest:
    """One request as it was sent: what the verifier sees, plus the base the client signed."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    recorded_base: str | None = None
    source: str = "raw"
    line: int | None = None
    operation: str | None = None

    @property
    def signed(self) -> bool:
        return "signature-input" in httpx.Headers(self.headers)

    @property
    def masked(self) -> bool:
        """True when the capture shows the Authorization header as ``***``."""
        value = httpx.Headers(self.headers).get("authorization")
        return value is not None and MASK in value

    def describe(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        what = f" ({self.operation})" if self.operation else ""
        return f"{where}{self.method} {self.url}{what}"


# --------------------------------------------------------------------------- reading captures


def parse_trace_line(text: str, *, line: int | None = None) -> CapturedRequest:
    """One ``--trace-file`` line (``cli/trace.py``'s ``exchange_record``) as a capture."""
    where = f"line {line}" if line is not None else "the trace line"
    try:
        record = jsontext.loads(text)
    except ValueError as exc:
        raise CaptureError(
            f"{where} is not JSON ({exc})",
            "give a line of an opapprove --trace-file, or raw request headers with --raw",
        ) from None
    if not isinstance(record, dict) or not all(
        k in record for k in ("method", "url", "request_headers")
    ):
        raise CaptureError(
            f"{where} is not an opapprove trace record (it lacks method, url or request_headers)",
            "give a line of a file written with --trace-file",
        )
    headers = record["request_headers"]
    if not isinstance(headers, dict):
        raise CaptureError(f"{where}: request_headers is not an object")
    body = record.get("request_body") or ""
    base = record.get("signature_base")
    operation = record.get("operation")
    return CapturedRequest(
        method=str(record["method"]).upper(),
        url=str(record["url"]),
        headers={str(k): str(v) for k, v in headers.items()},
        body=body.encode("utf-8") if isinstance(body, str) else b"",
        recorded_base=base if isinstance(base, str) and base else None,
        source="trace",
        line=line,
        operation=operation if isinstance(operation, str) and operation else None,
    )


def read_trace(text: str) -> list[CapturedRequest]:
    """Every line of a trace file (blank lines skipped), numbered from 1."""
    return [
        parse_trace_line(raw, line=number)
        for number, raw in enumerate(text.splitlines(), start=1)
        if raw.strip()
    ]


def parse_raw_request(
    text: str, body: bytes | None = None, *, url: str | None = None
) -> CapturedRequest:
    """A request line, headers and (unless ``body`` is given) a body after a blank line.

    ``curl -v`` output works too: only its ``> `` lines are read (it shows no body).
    ``url`` overrides the target; without it a path-only request line is joined to the
    Host header, over http for loopback hosts and https otherwise.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    # curl -v shows the request as "> " lines, the response as "< ", notes as "* ", and
    # never the body: only the "> " lines count.
    curl = next((ln for ln in lines if ln.strip()), "").startswith(">")
    head: list[str] = []
    rest: list[str] = []
    in_body = False
    for raw in lines:
        if curl:
            if not raw.startswith(">"):
                continue
            raw = raw[1:].removeprefix(" ")
        if in_body:
            rest.append(raw)
            continue
        if not raw.strip():
            if head:
                in_body = True
            continue
        head.append(raw)
    if not head:
        raise CaptureError(
            "the request text is empty", "give the request line and headers, e.g. POST /auth ..."
        )
    parts = head[0].split()
    if len(parts) < 2 or not _METHOD.match(parts[0]):
        raise CaptureError(
            f"the first line {head[0][:80]!r} is not a request line",
            "start with the request line, e.g. POST https://auth.example/ HTTP/1.1",
        )
    method, target = parts[0], parts[1]
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise CaptureError(f"header line {line[:80]!r} has no 'name: value'")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if url is None:
        url = _target_url(target, headers)
    if body is None:
        body = "\n".join(rest).encode("utf-8")
    return CapturedRequest(method=method, url=url, headers=headers, body=body)


def _target_url(target: str, headers: Mapping[str, str]) -> str:
    if target.lower().startswith(("http://", "https://")):
        return target
    host = headers.get("host")
    if not host:
        raise CaptureError(
            f"the request line names only the path {target!r} and there is no Host header",
            "pass the full URL with --url",
        )
    scheme = "http" if urls.is_loopback(f"http://{host}") else "https"
    return f"{scheme}://{host}{target}"


# --------------------------------------------------------------------------- keys


def parse_jwks(data: Any, *, source: str) -> dict[str, Jwk]:
    """A JWKS (``{"keys": [...]}``) or a single public JWK, by key id."""
    items = data.get("keys") if isinstance(data, dict) and "keys" in data else [data]
    if not isinstance(items, list) or not items:
        raise op_errors.KeyLoadError(
            f"{source} holds no keys", hint="give a JWKS like a wallet's jwks.json"
        )
    found: dict[str, Jwk] = {}
    for item in items:
        try:
            jwk = Jwk.from_dict(item)
        except op_errors.KeyLoadError as exc:
            raise op_errors.KeyLoadError(f"{source}: {exc.message}", hint=exc.hint) from exc
        found[jwk.kid] = jwk
    return found


def load_jwks_file(path: Path) -> dict[str, Jwk]:
    try:
        data = jsontext.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise op_errors.KeyLoadError(
            f"cannot read {path}: {exc.strerror or exc}", hint="give a JWKS file or a URL"
        ) from exc
    except ValueError as exc:
        raise op_errors.KeyLoadError(
            f"{path} is not JSON ({exc})", hint="give a JWKS like a wallet's jwks.json"
        ) from exc
    return parse_jwks(data, source=str(path))


def wallet_of_jwks_url(url: str) -> str:
    """The wallet address a ``.../jwks.json`` URL belongs to (a wallet URL stays as it is)."""
    trimmed = url.rstrip("/")
    return trimmed[: -len(JWKS_SUFFIX)] if trimmed.endswith(JWKS_SUFFIX) else trimmed


async def fetch_jwks(
    url: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = 10.0,
    use_http: bool = False,
    allow_http: bool = False,
) -> dict[str, Jwk]:
    """A wallet's keys (``url`` is the wallet address or its ``jwks.json``), checked as
    Rafiki checks a client's JWKS."""
    from opapprove.openpayments.client import OpenPaymentsClient

    async with OpenPaymentsClient(
        transport=transport, timeout=timeout, use_http=use_http, allow_http=allow_http
    ) as client:
        jwks = await client.get_keys(wallet_of_jwks_url(url))
    return {k.kid: k.to_jwk() for k in jwks.keys}


def client_wallet(captured: CapturedRequest) -> str | None:
    """The client wallet a grant request names in its body (whose JWKS the AS reads)."""
    try:
        body = jsontext.loads(captured.body) if captured.body else None
    except ValueError:
        return None
    client = body.get("client") if isinstance(body, dict) else None
    if isinstance(client, str):
        return client
    if isinstance(client, dict) and isinstance(client.get("walletAddress"), str):
        return str(client["walletAddress"])
    return None


def client_wallets(captures: Iterable[CapturedRequest]) -> list[str]:
    """The distinct client wallets named by the grant requests among ``captures``."""
    seen: list[str] = []
    for captured in captures:
        wallet = client_wallet(captured)
        if wallet is not None and wallet not in seen:
            seen.append(wallet)
    return seen


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class SigCheck:
    """The verdict on one capture. ``part`` is ``SignatureError.part`` when it failed;
    ``differs`` names the base components that changed (or ``key``); ``base_diff`` is a
    unified diff, recorded (signed) to rebuilt (received), with tokens masked."""

    ok: bool
    message: str
    hint: str | None = None
    part: str | None = None
    # Nothing was found wrong, but the capture hides what the signature covers (a masked
    # Authorization header): neither a pass nor a failure.
    unchecked: bool = False
    key_id: str | None = None
    components: tuple[str, ...] = ()
    differs: tuple[str, ...] = ()
    base_diff: tuple[str, ...] = ()
    rebuilt_base: str | None = None
    recorded_base: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "unchecked": self.unchecked,
            "message": self.message,
            "hint": self.hint,
            "part": self.part,
            "keyId": self.key_id,
            "components": list(self.components),
            "differs": list(self.differs),
            "baseDiff": list(self.base_diff),
            "rebuiltBase": redact_signature_base(self.rebuilt_base),
            "recordedBase": redact_signature_base(self.recorded_base),
            "notes": list(self.notes),
        }


def base_lines(base: str) -> dict[str, str]:
    """``{component: value}`` of a signature base (``@signature-params`` included)."""
    lines: dict[str, str] = {}
    for line in base.split("\n"):
        match = _BASE_LINE.match(line)
        if match:
            lines[match["name"]] = match["value"]
    return lines


def differing_components(recorded: str, rebuilt: str) -> tuple[str, ...]:
    """The components whose line differs between two bases, in the rebuilt base's order."""
    before, after = base_lines(recorded), base_lines(rebuilt)
    names = list(after) + [n for n in before if n not in after]

    def differs(name: str) -> bool:
        old, new = before.get(name), after.get(name)
        if name == "authorization" and MASK in f"{old} {new}":
            return False  # a masked token cannot be compared
        return old != new

    return tuple(n for n in names if differs(n))


def check_signature(
    captured: CapturedRequest,
    keys: Mapping[str, Jwk],
    *,
    token: str | None = None,
    require_digest: bool = True,
) -> SigCheck:
    """Verify ``captured`` against ``keys`` (by kid) and say which part differs if it fails.

    ``token`` stands in for an Authorization header the capture shows masked.
    """
    headers = httpx.Headers(captured.headers)
    notes: list[str] = []
    if "signature-input" not in headers:
        return SigCheck(
            False,
            "the request is not signed (it has no Signature-Input header)",
            "Open Payments signs every POST and every request carrying an access token; "
            "unauthenticated GETs (wallet address, jwks.json) are not signed",
            part="headers",
            recorded_base=captured.recorded_base,
        )
    masked = captured.masked
    if masked and token:
        scheme = headers["authorization"].partition(" ")[0] or "GNAP"
        headers["authorization"] = f"{scheme} {token}"
        masked = False
        notes.append("the masked Authorization header was replaced by the token given")
    body, body_note = _body_as_sent(captured.body, headers)
    if body_note is not None:
        notes.append(body_note)
    try:
        components, params = parse_signature_input(headers["signature-input"])
    except op_errors.SignatureError as exc:
        return _failed(exc, captured, notes)
    key_id = params.get("keyid") if isinstance(params.get("keyid"), str) else None

    def resolve(kid: str) -> Ed25519PublicKey | None:
        jwk = keys.get(kid)
        if jwk is None:
            return None
        try:
            return jwk.public_key()
        except (op_errors.KeyLoadError, ValueError):
            return None

    try:
        verified = verify_request(
            captured.method,
            captured.url,
            headers,
            body,
            resolve,
            require_digest=require_digest,
        )
    except op_errors.SignatureError as exc:
        return _explain(exc, captured, headers, body, keys, key_id, components, masked, notes)
    common: dict[str, Any] = {
        "key_id": verified.key_id,
        "components": tuple(verified.components),
        "rebuilt_base": verified.signature_base,
        "recorded_base": captured.recorded_base,
    }
    if "content-digest" in verified.components and _loose_json(body):
        return SigCheck(
            False,
            "the signature and Content-Digest verify, but the body is not compact JSON: Rafiki "
            "recomputes the digest over JSON.stringify(JSON.parse(body)), gets another one and "
            "answers 401",
            "send compact JSON (no spaces, no \\u escapes) and digest exactly the bytes sent",
            part="body",
            notes=tuple(notes),
            **common,
        )
    created = f", created {verified.created}" if verified.created is not None else ""
    return SigCheck(
        True,
        f"the signature verifies with key {verified.key_id!r} over "
        f"{len(verified.components)} components{created}",
        notes=tuple(notes),
        **common,
    )


def _body_as_sent(body: bytes, headers: httpx.Headers) -> tuple[bytes, str | None]:
    """The bytes that were sent, if the capture changed their formatting (and how)."""
    digest = headers.get("content-digest")
    if not body or not digest or digest_mismatch(digest, body) is None:
        return body, None
    candidates: list[tuple[bytes, str]] = []
    stripped = body.rstrip(b"\r\n")
    if stripped != body:
        candidates.append(
            (stripped, "a line break after the body was dropped: the digest matches without it")
        )
    try:
        compact = compact_json(jsontext.loads(body))
    except ValueError:
        compact = None
    if compact is not None and compact != body:
        candidates.append(
            (
                compact,
                "the captured body is re-formatted JSON (a trace written without --show-secrets "
                "re-formats bodies); its compact form matches the digest and was checked",
            )
        )
    for candidate, note in candidates:
        if digest_mismatch(digest, candidate) is None:
            return candidate, note
    return body, None


def _loose_json(body: bytes) -> bool:
    """True for a JSON body that is not in the compact form a Node verifier digests."""
    try:
        parsed = jsontext.loads(body) if body else _NOT_JSON
    except ValueError:
        return False
    return parsed is not _NOT_JSON and compact_json(parsed) != body


def _failed(exc: op_errors.SignatureError, captured: CapturedRequest, notes: list[str]) -> SigCheck:
    return SigCheck(
        False,
        exc.message,
        exc.hint,
        part=exc.part,
        recorded_base=captured.recorded_base,
        notes=tuple(notes),
    )


def _explain(
    exc: op_errors.SignatureError,
    captured: CapturedRequest,
    headers: httpx.Headers,
    body: bytes,
    keys: Mapping[str, Jwk],
    key_id: str | None,
    components: list[str],
    masked: bool,
    notes: list[str],
) -> SigCheck:
    recorded = captured.recorded_base
    rebuilt = describe_request_base(captured.method, captured.url, headers)
    common: dict[str, Any] = {
        "part": exc.part,
        "key_id": key_id,
        "components": tuple(components),
        "rebuilt_base": rebuilt,
        "recorded_base": recorded,
        "notes": tuple(notes),
    }
    if exc.part == "keyid" and key_id is not None:
        kids = ", ".join(sorted(keys)) or "no keys"
        return SigCheck(
            False,
            f"key id {key_id!r} is not in the JWKS (it has: {kids}); the server answers "
            "invalid_client / 'could not find key'",
            "publish the public JWK under that key id in the client wallet's jwks.json, or "
            "sign with a key id that is published",
            **common,
        )
    if exc.part == "content-digest":
        sent = headers.get("content-digest", "")
        return SigCheck(
            False,
            f"Content-Digest does not match the body: the header says {sent}, the body's "
            f"digest is {content_digest(body)}",
            "the body changed after signing, or the digest was computed over other bytes; "
            "sign the exact bytes sent, as compact JSON",
            **common,
        )
    if exc.part != "signature":
        return SigCheck(False, exc.message, exc.hint, **common)
    if rebuilt is None or recorded is None:
        return SigCheck(
            False,
            "the signature does not verify over the base rebuilt from this request"
            + (" (the capture has no recorded base to compare)" if recorded is None else ""),
            "compare the rebuilt base with the one your client signed, and check the key",
            **common,
        )
    differs = differing_components(recorded, rebuilt)
    diff = tuple(
        difflib.unified_diff(
            (redact_signature_base(recorded, fingerprint=True) or "").split("\n"),
            (redact_signature_base(rebuilt, fingerprint=True) or "").split("\n"),
            "signed (recorded)",
            "received (rebuilt)",
            n=10,
            lineterm="",
        )
    )
    if differs:
        hints = [COMPONENT_HINTS.get(name, f"{name} changed after signing") for name in differs]
        return SigCheck(
            False,
            "the signature base differs from the one that was signed in: " + ", ".join(differs),
            "; ".join(hints),
            differs=differs,
            base_diff=diff,
            **common,
        )
    if masked:
        return SigCheck(
            False,
            "cannot check: the Authorization header was masked (re-capture with "
            "--show-secrets); everything else checked out: key id, Content-Digest and every "
            "other covered component match what was signed",
            "record again with --trace-file FILE --show-secrets (the file is created 0600), or "
            "give the token with --token",
            unchecked=True,
            **{**common, "part": "authorization"},
        )
    return SigCheck(
        False,
        f"the signature base is exactly what was signed, so the key differs: the JWK "
        f"{key_id!r} is not the public key that signed this request (or the Signature value "
        "was altered)",
        "publish this private key's public JWK under that key id, or sign with the private "
        "key of the published JWK",
        differs=("key",),
        **common,
    )
