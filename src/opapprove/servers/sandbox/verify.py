"""Who a client is and whether it signed the request: key lookup and Rafiki's verifier rules.

A client wallet on this sandbox is looked up in memory; any other wallet's ``jwks.json``
is fetched over HTTP the way Rafiki does (``Accept: application/json``, spec-shaped JWKS).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request

from opapprove.openpayments import jsontext
from opapprove.openpayments.errors import KeyLoadError, SignatureError
from opapprove.openpayments.keys import Jwk
from opapprove.openpayments.signatures import compact_json, parse_signature_input, verify_request
from opapprove.openpayments.transport import MAX_RESPONSE_BYTES, read_at_most, system_tls
from opapprove.servers.sandbox.errors import GnapError, ResourceServerError
from opapprove.servers.sandbox.operations import operation_name
from opapprove.servers.sandbox.replays import DEFAULT_MEMORY, GUARDED_OPERATIONS
from opapprove.servers.sandbox.state import SandboxState
from opapprove.servers.sandbox.urls import account_of, target_uri
from opapprove.servers.sandbox.validation import OPENAPI_PREFIX


@dataclass
class ClientKeys:
    """A client's keys; ``keys`` is None when they could not be retrieved (``problem`` says why)."""

    client: str
    keys: list[Jwk] | None
    public_name: str | None = None
    problem: str | None = None
    raw: list[dict[str, Any]] = field(default_factory=list)


async def wallet_keys(
    state: SandboxState, base: str, wallet: str, *, want_name: bool = False
) -> ClientKeys:
    name = account_of(base, wallet)
    acct = state.account_config(name) if name else None
    if acct is not None:
        keys = state.keys_for(acct.name)
        return ClientKeys(wallet, keys, acct.public_name, raw=[k.to_dict() for k in keys])
    timeout = state.config.http_timeout
    try:
        # The client wallet is whatever the request names, a hostile server too: the whole
        # fetch (both documents) ends within the timeout and no body is read past the
        # client's cap, so a trickled, endless or inflating answer cannot hold or bloat us.
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(timeout=timeout, verify=system_tls()) as http,
        ):
            jwks = await _get_at_most(http, f"{wallet}/jwks.json", timeout)
            public_name = None
            if want_name:
                doc = await _get_at_most(http, wallet, timeout)
                data = jsontext.loads(doc.content) if doc.status_code == 200 else {}
                name_value = data.get("publicName") if isinstance(data, dict) else None
                public_name = name_value if isinstance(name_value, str) else None
    except TimeoutError:
        problem = f"cannot fetch {wallet}/jwks.json: no whole answer within {timeout:g}s"
        return ClientKeys(wallet, None, problem=problem)
    except (httpx.HTTPError, ValueError) as exc:
        return ClientKeys(wallet, None, problem=f"cannot fetch {wallet}/jwks.json: {exc}")
    if jwks.status_code != 200:
        return ClientKeys(wallet, None, problem=f"{wallet}/jwks.json answered {jwks.status_code}")
    try:
        data = jsontext.loads(jwks.content)
    except ValueError:
        return ClientKeys(wallet, None, problem=f"{wallet}/jwks.json is not JSON")
    if not isinstance(data, dict) or set(data) != {"keys"} or not isinstance(data["keys"], list):
        return ClientKeys(wallet, None, problem=f'{wallet}/jwks.json is not {{"keys": [...]}}')
    try:
        keys = [Jwk.from_dict(k) for k in data["keys"]]
    except KeyLoadError as exc:
        return ClientKeys(wallet, None, problem=f"{wallet}/jwks.json has a bad key: {exc}")
    return ClientKeys(wallet, keys, public_name, raw=data["keys"])


async def _get_at_most(http: httpx.AsyncClient, url: str, within: float) -> httpx.Response:
    """GET ``url`` as JSON, its body read into ``.content`` if within ``MAX_RESPONSE_BYTES``."""
    async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
        if not await read_at_most(response, MAX_RESPONSE_BYTES, within=within):
            raise ValueError(
                f"{url} answered {response.status_code} with a body over"
                f" {MAX_RESPONSE_BYTES >> 20} MiB; not read further"
            )
    return response


async def grant_client_keys(
    state: SandboxState, base: str, wallet: str | None, jwk: dict[str, Any] | None
) -> ClientKeys:
    if wallet is not None:
        return await wallet_keys(state, base, wallet)
    key = Jwk.from_dict(jwk)
    return ClientKeys(f"jwk:{key.kid}", [key], raw=[key.to_dict()])


@dataclass
class _Outcome:
    asked: str | None = None
    error: SignatureError | None = None


# Signature problems Rafiki reports as "invalid signature headers" (the headers or the
# digest are wrong before any key is tried), not "invalid signature".
_HEADER_PARTS = frozenset(
    {"headers", "content-digest", "content-length", "content-type", "body", "signature-input"}
)


def _check(
    state: SandboxState, request: Request, body: bytes, base: str, keys: list[Jwk] | None
) -> _Outcome:
    by_kid = {k.kid: k for k in keys or []}
    outcome = _Outcome()

    def resolve(kid: str) -> Any:
        outcome.asked = kid
        key = by_kid.get(kid)
        return None if key is None else key.public_key()

    now = state.now()
    try:
        verify_request(
            request.method,
            target_uri(request, base),
            request.headers,
            body,
            resolve,
            require_digest=True,
            created_window=state.config.created_window,
            now=now,
            strict_params=True,
        )
        if body and state.config.require_compact_json:
            _check_compact(body)
        _check_replay(state, request, now)
    except SignatureError as exc:
        outcome.error = exc
    return outcome


def _check_replay(state: SandboxState, request: Request, now: float) -> None:
    operation = operation_name(request.method, request.url.path)
    if not state.config.refuse_replays or operation not in GUARDED_OPERATIONS:
        return
    window = state.config.created_window
    memory = float(window) if window is not None else DEFAULT_MEMORY
    if not state.replays.first_use(request.headers.get("signature", ""), now=now, memory=memory):
        raise SignatureError(
            "this exact signed request was already accepted (a replay)",
            part="replay",
            hint="sign each request afresh",
        )


def _check_compact(body: bytes) -> None:
    try:
        same = compact_json(json.loads(body)) == body
    except (ValueError, UnicodeDecodeError):
        same = False
    if not same:
        raise SignatureError(
            "the body is not compact JSON; Rafiki digests JSON.stringify(JSON.parse(body)), "
            "so this Content-Digest would not match there",
            part="content-digest",
            hint="send the body as compact JSON and digest exactly those bytes",
        )


def verify_as(
    state: SandboxState, request: Request, body: bytes, base: str, client: ClientKeys
) -> None:
    """Auth-server rules: unknown key 400 invalid_client, anything else 401 invalid_client."""
    outcome = _check(state, request, body, base, client.keys)
    error = outcome.error
    if error is None:
        return
    known = {k.kid for k in client.keys or []}
    if outcome.asked is not None and outcome.asked not in known:
        # Rafiki answers the same when it could not fetch the client's keys at all (8f).
        reason = client.problem if client.keys is None and client.problem else error.message
        raise GnapError(400, "invalid_client", "could not determine client", reason=reason)
    words = "invalid signature headers" if error.part in _HEADER_PARTS else "invalid signature"
    raise GnapError(401, "invalid_client", words, reason=error.message)


def _lenient_key_id(request: Request) -> str | None:
    sig_input = request.headers.get("signature-input")
    if not sig_input:
        return None
    try:
        _, params = parse_signature_input(sig_input)
    except SignatureError:
        return None
    kid = params.get("keyid")
    return kid if isinstance(kid, str) and kid else None


def verify_rs(
    state: SandboxState, request: Request, body: bytes, base: str, client: ClientKeys
) -> None:
    """Resource-server rules: 401 "Signature validation error: ..." with Rafiki's details."""
    for header in ("signature-input", "signature"):
        if header not in request.headers:
            # Rafiki's OpenAPI validator refuses these before its signature check runs.
            raise ResourceServerError(
                400,
                f"{OPENAPI_PREFIX}: must have required property '{header}'",
                reason=f"the request carries an access token but no {header} header: sign it",
            )
    outcome = _check(state, request, body, base, client.keys)
    error = outcome.error
    if error is None:
        return
    kid = outcome.asked or _lenient_key_id(request)
    details: dict[str, Any] = {}
    reason = error.message
    if kid is None:
        description = "missing keyId in signature input"
    else:
        details["keyIdInSignature"] = kid
        if outcome.asked is not None and client.keys is None:
            description = "could not retrieve client keys"
            reason = client.problem or error.message
        elif outcome.asked is not None and outcome.asked not in {k.kid for k in client.keys or []}:
            description = "could not find key in list of client keys"
            details["clientKeys"] = client.raw
        else:
            description = "provided signature is invalid"
    details["client"] = {"walletAddress": client.client}
    raise ResourceServerError(
        401, f"Signature validation error: {description}", details=details, reason=reason
    )
