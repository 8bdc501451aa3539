"""RFC 9421 message signatures exactly as Open Payments wallets (Rafiki) verify them.

The RFC work (component resolution, structured fields, Content-Digest) comes from
http-message-signatures. What it lacks and is written here: Open Payments' fixed
component set, the ``keyid``-then-``created`` parameter order with no ``alg`` (the
library always writes ``created`` first and adds ``alg``), and Rafiki's verifier rules.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, algorithms
from http_message_signatures import exceptions as hms_exceptions
from http_message_signatures.digests import ContentDigest
from http_sf.compat import Dictionary, InnerList, Item

from opapprove.openpayments.errors import SignatureError

LABEL = "sig1"
BODY_COMPONENTS = ("content-digest", "content-length", "content-type")


class Sha512ContentDigest(ContentDigest):
    """Open Payments clients send ``sha-512``; verifiers accept sha-256 too."""

    algorithm = "sha-512"


def compact_json(obj: Any) -> bytes:
    """The bytes a Node verifier's ``JSON.stringify(JSON.parse(body))`` reproduces exactly."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def content_digest(body: bytes) -> str:
    return Sha512ContentDigest.create(body)


def digest_mismatch(header: str, body: bytes) -> str | None:
    """Why ``header`` is not a Content-Digest of ``body`` (sha-512 or sha-256), or None."""
    try:
        ContentDigest.verify(header, body)
    except (hms_exceptions.HTTPMessageSignaturesException, ValueError, KeyError) as exc:
        return str(exc) or type(exc).__name__
    return None


def covered_components(*, has_authorization: bool, has_body: bool) -> list[str]:
    components = ["@method", "@target-uri"]
    if has_authorization:
        components.append("authorization")
    if has_body:
        components.extend(BODY_COMPONENTS)
    return components


def should_sign(method: str, headers: Mapping[str, str]) -> bool:
    """The Node SDK signs every POST and anything carrying an access token."""
    return method.upper() == "POST" or any(k.lower() == "authorization" for k in headers)


@dataclass(frozen=True)
class SignedParts:
    """What signing produced, kept for ``--trace`` and for ``sig verify``."""

    signature_input: str
    signature: str
    signature_base: str
    content_digest: str | None
    key_id: str
    created: int


class _Signer(HTTPMessageSigner):
    def build_base(
        self, message: Any, components: list[str], key_id: str, created: int
    ) -> tuple[str, InnerList]:
        params: dict[str, Any] = collections.OrderedDict()
        params["keyid"] = key_id
        params["created"] = created
        nodes = [Item(c) for c in components]
        base, params_node, _ = self._build_signature_base(
            message, covered_component_ids=nodes, signature_params=params
        )
        return str(base), params_node


_SIGNER = _Signer(signature_algorithm=algorithms.ED25519)


def sign_request(
    request: httpx.Request,
    key: ed25519.Ed25519PrivateKey,
    key_id: str,
    *,
    created: int | None = None,
) -> SignedParts:
    """Sign ``request`` in place. The body must already be the exact bytes to send."""
    body = request.content
    has_body = bool(body)
    digest = None
    if has_body:
        digest = content_digest(body)
        request.headers["Content-Digest"] = digest
        request.headers["Content-Length"] = str(len(body))
        request.headers.setdefault("Content-Type", "application/json")
    components = covered_components(
        has_authorization="authorization" in request.headers, has_body=has_body
    )
    created = int(time.time()) if created is None else created
    try:
        base, params_node = _SIGNER.build_base(request, components, key_id, created)
    except hms_exceptions.HTTPMessageSignaturesException as exc:
        raise SignatureError(f"cannot sign {request.method} {request.url}: {exc}") from exc
    signature = key.sign(base.encode("ascii"))
    signature_input = str(Dictionary({LABEL: params_node}))
    signature_header = str(Dictionary({LABEL: Item(signature)}))
    request.headers["Signature-Input"] = signature_input
    request.headers["Signature"] = signature_header
    return SignedParts(
        signature_input=signature_input,
        signature=signature_header,
        signature_base=base,
        content_digest=digest,
        key_id=key_id,
        created=created,
    )


class OpenPaymentsAuth(httpx.Auth):
    """An ``httpx.Auth`` that signs the requests Open Payments wants signed.

    ``on_signed`` sees each request's signature parts (the signature base for ``--trace``).
    """

    requires_request_body = True

    def __init__(
        self,
        key: ed25519.Ed25519PrivateKey,
        key_id: str,
        *,
        clock: Callable[[], float] = time.time,
        on_signed: Callable[[httpx.Request, SignedParts], None] | None = None,
    ) -> None:
        self.key = key
        self.key_id = key_id
        self.clock = clock
        self.on_signed = on_signed

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if should_sign(request.method, request.headers):
            parts = sign_request(request, self.key, self.key_id, created=int(self.clock()))
            request.extensions["opapprove_signature"] = parts
            if self.on_signed is not None:
                self.on_signed(request, parts)
        yield request


# --------------------------------------------------------------------------- verifier


@dataclass(frozen=True)
class VerifiedSignature:
    key_id: str
    created: int | None
    components: list[str]
    signature_base: str


@dataclass
class _Message:
    method: str
    url: str
    headers: httpx.Headers = field(default_factory=httpx.Headers)


KeyResolver = Callable[[str], ed25519.Ed25519PublicKey | None]


def _decode_b64_lenient(text: str) -> bytes:
    cleaned = text.replace("-", "+").replace("_", "/").strip()
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))


def parse_signature_input(value: str) -> tuple[list[str], dict[str, Any]]:
    """Return the ``sig1`` components and params, or raise ``SignatureError``."""
    try:
        parsed = HTTPMessageSigner._parse_signature_dictionary(value)
    except Exception as exc:
        raise SignatureError(
            f"Signature-Input is not a structured-field dictionary ({exc})", part="signature-input"
        ) from exc
    if LABEL not in parsed:
        labels = ", ".join(parsed) or "none"
        raise SignatureError(
            f"Signature-Input has no {LABEL} label (found: {labels})",
            part="label",
            hint="Open Payments verifiers read only the label sig1",
        )
    node = parsed[LABEL]
    if not isinstance(node, InnerList):
        raise SignatureError("Signature-Input sig1 is not an inner list", part="signature-input")
    components: list[str] = []
    for item in node:
        if item.params:
            raise SignatureError(
                f"component {item} carries parameters, which Open Payments does not use",
                part="components",
            )
        components.append(str(item.value))
    return components, dict(node.params)


def verify_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | httpx.Headers,
    body: bytes,
    resolve_key: KeyResolver,
    *,
    require_digest: bool = True,
    created_window: int | None = None,
    now: float | None = None,
    strict_params: bool = False,
) -> VerifiedSignature:
    """Verify an Open Payments request signature with Rafiki's rules.

    ``url`` is the absolute URL as the client addressed it (scheme, host with port, path,
    raw query). Stricter than Rafiki where Rafiki fails open: with ``require_digest`` a
    request with a body must cover ``content-digest``. ``created_window`` (seconds) is an
    optional freshness check; Rafiki has none. ``strict_params`` refuses an ``alg`` other
    than ed25519 and an ``expires`` already past, which Rafiki ignores.
    """
    hdrs = httpx.Headers(headers)
    sig_input = hdrs.get("signature-input")
    sig_value = hdrs.get("signature")
    if not sig_input or not sig_value:
        missing = "signature-input" if not sig_input else "signature"
        raise SignatureError(
            f"missing {missing} header", part="headers", hint="the request must be signed"
        )
    components, params = parse_signature_input(sig_input)
    for c in components:
        if c != c.lower():
            raise SignatureError(f"component {c!r} is not lowercase", part="components")
    for required in ("@method", "@target-uri"):
        if required not in components:
            raise SignatureError(f"{required} is not covered", part="components")
    if "authorization" in hdrs and "authorization" not in components:
        raise SignatureError(
            "the Authorization header is present but not covered", part="components"
        )
    if "content-digest" in components:
        for name in BODY_COMPONENTS:
            if name not in hdrs:
                raise SignatureError(f"content-digest is covered but {name} is missing", part=name)
        if not body:
            raise SignatureError("content-digest is covered but the body is empty", part="body")
        mismatch = digest_mismatch(hdrs["content-digest"], body)
        if mismatch is not None:
            raise SignatureError(
                f"Content-Digest does not match the body ({mismatch})",
                part="content-digest",
                hint="sign the exact bytes sent, as compact JSON",
            )
    elif body and require_digest:
        raise SignatureError(
            "the request has a body but content-digest is not covered", part="components"
        )
    key_id = params.get("keyid")
    if not isinstance(key_id, str) or not key_id:
        raise SignatureError("missing keyId in signature input", part="keyid")
    created = params.get("created")
    if created is not None and not isinstance(created, int):
        raise SignatureError("created is not an integer", part="created")
    current = time.time() if now is None else now
    if strict_params:
        _check_strict_params(params, current)
    if created_window is not None:
        if created is None or abs(current - created) > created_window:
            raise SignatureError(
                f"created is outside the allowed window of {created_window}s",
                part="created",
                hint="check the client's clock",
            )
    public_key = resolve_key(key_id)
    if public_key is None:
        raise SignatureError(
            f"could not find key {key_id!r} in the list of client keys", part="keyid"
        )
    try:
        sig_dict = HTTPMessageSigner._parse_signature_dictionary(sig_value)
    except Exception as exc:
        raise SignatureError(f"Signature header is malformed ({exc})", part="signature") from exc
    if LABEL not in sig_dict or not isinstance(sig_dict[LABEL], Item):
        raise SignatureError("Signature header has no sig1 member", part="label")
    raw_sig = sig_dict[LABEL].value
    if not isinstance(raw_sig, bytes):
        try:
            raw_sig = _decode_b64_lenient(str(raw_sig))
        except (binascii.Error, ValueError) as exc:
            raise SignatureError("Signature is not base64", part="signature") from exc
    message = _Message(method=method.upper(), url=url, headers=hdrs)
    try:
        base = _rebuild_base(message, components, params, sig_input)
    except hms_exceptions.HTTPMessageSignaturesException as exc:
        raise SignatureError(f"cannot rebuild the signature base: {exc}", part="base") from exc
    try:
        public_key.verify(raw_sig, base.encode("ascii"))
    except (_CryptoInvalidSignature, ValueError) as exc:
        raise SignatureError(
            "provided signature is invalid",
            part="signature",
            hint="the signed method, URL, headers or key differ from what the server saw",
        ) from exc
    return VerifiedSignature(
        key_id=key_id, created=created, components=components, signature_base=base
    )


def _check_strict_params(params: dict[str, Any], now: float) -> None:
    alg = params.get("alg")
    if alg is not None and alg != "ed25519":
        raise SignatureError(
            f"alg {alg!r} does not match the key (an Ed25519 key signs with alg ed25519)",
            part="alg",
            hint='leave alg out, as the Node SDK does, or send alg="ed25519"',
        )
    expires = params.get("expires")
    if expires is not None:
        if not isinstance(expires, int):
            raise SignatureError("expires is not an integer", part="expires")
        if expires <= now:
            raise SignatureError(
                "the signature expired (its expires parameter is in the past)",
                part="expires",
                hint="sign the request again just before sending it",
            )


def signature_base(message: Any, components: list[str], signature_input: str) -> str:
    """Rebuild the base the way Rafiki does: ``@signature-params`` is the received text."""
    _, params = parse_signature_input(signature_input)
    return _rebuild_base(message, components, params, signature_input)


# One verifier for every request (the sandbox verifies each one it serves); it keeps no
# per-message state.
_VERIFIER = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=None)


def _rebuild_base(
    message: Any, components: list[str], params: dict[str, Any], signature_input: str
) -> str:
    _, _, elements = _VERIFIER._build_signature_base(
        message, covered_component_ids=[Item(c) for c in components], signature_params=params
    )
    received_params = signature_input.split(f"{LABEL}=", 1)[1].strip()
    lines = [f"{k}: {v}" for k, v in elements.items() if k != '"@signature-params"']
    lines.append(f'"@signature-params": {received_params}')
    return "\n".join(lines)


def describe_request_base(method: str, url: str, headers: Mapping[str, str]) -> str | None:
    """The signature base a request was signed over, rebuilt from its headers (for tracing)."""
    hdrs = httpx.Headers(headers)
    sig_input = hdrs.get("signature-input")
    if not sig_input:
        return None
    try:
        components, _ = parse_signature_input(sig_input)
        return signature_base(_Message(method.upper(), url, hdrs), components, sig_input)
    except (SignatureError, hms_exceptions.HTTPMessageSignaturesException):
        return None
