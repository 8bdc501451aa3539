"""The GNAP authorization server's HTTP endpoints (``{public}/auth``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opapprove.servers.sandbox import grants
from opapprove.servers.sandbox.errors import GnapError
from opapprove.servers.sandbox.grant_requests import needs_interaction, parse_grant_request
from opapprove.servers.sandbox.records import AccessToken, Grant
from opapprove.servers.sandbox.state import SandboxState
from opapprove.servers.sandbox.urls import AUTH_PATH, INTERACT_PATH, base_url
from opapprove.servers.sandbox.validation import BodyError, parse_json_object
from opapprove.servers.sandbox.verify import grant_client_keys, verify_as, wallet_keys


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def _gnap_token(request: Request) -> str | None:
    parts = request.headers.get("authorization", "").split(" ")
    return parts[1] if len(parts) == 2 and parts[0] == "GNAP" and parts[1] else None


def token_json(state: SandboxState, base: str, token: AccessToken, grant: Grant) -> dict[str, Any]:
    return {
        "value": token.value,
        "manage": f"{base}{AUTH_PATH}/token/{token.id}",
        "expires_in": token.expires_in,
        "access": grant.access,
    }


def continue_json(
    state: SandboxState, base: str, grant: Grant, *, wait: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "access_token": {"value": grant.continue_token},
        "uri": f"{base}{AUTH_PATH}/continue/{grant.continue_id}",
    }
    if wait:
        out["wait"] = state.config.wait_seconds
    return out


def issued_json(
    state: SandboxState, base: str, grant: Grant, token: AccessToken | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if token is not None:
        out["access_token"] = token_json(state, base, token, grant)
    if grant.subject is not None:
        out["subject"] = grant.subject
    out["continue"] = continue_json(state, base, grant)
    return out


async def grant_request(request: Request) -> Response:
    state = _state(request)
    base = base_url(request, state.config.public_url)
    body = await request.body()
    try:
        parsed = parse_grant_request(parse_json_object(body))
        interactive = needs_interaction(parsed)
    except BodyError as exc:
        if exc.openapi is not None:
            raise GnapError(400, None, exc.rafiki_description(), reason=str(exc)) from exc
        raise GnapError(400, "invalid_request", str(exc)) from exc
    if parsed.client_wallet is not None:
        client = await wallet_keys(state, base, parsed.client_wallet, want_name=interactive)
    else:
        client = await grant_client_keys(
            state, base, None, None if parsed.client_jwk is None else parsed.client_jwk.to_dict()
        )
    verify_as(state, request, body, base, client)
    if interactive:
        if parsed.client_jwk is not None:
            raise GnapError(
                400, "invalid_client", "JWK client identifier cannot be used for interactive grants"
            )
        if parsed.interact is None:
            raise GnapError(400, "invalid_request", "missing required request field 'interact'")
        if not client.public_name:
            # Rafiki shows the client's publicName on the consent screen; without it, 400.
            raise GnapError(400, "invalid_client", "missing required request field 'client'")
    grant, token = grants.create_grant(
        state,
        parsed,
        interactive=interactive,
        client_name=client.public_name,
        auth_server_url=f"{base}{AUTH_PATH}",
    )
    if not interactive:
        return JSONResponse(issued_json(state, base, grant, token))
    return JSONResponse(
        {
            "interact": {
                "redirect": f"{base}{INTERACT_PATH}/{grant.interact_id}/{grant.interact_nonce}",
                "finish": grant.interact_nonce,
            },
            "continue": continue_json(state, base, grant, wait=True),
        }
    )


def _token_holder(request: Request, missing: GnapError) -> tuple[SandboxState, str, str]:
    """The sandbox, the base URL the caller sees, and the caller's GNAP token (else ``missing``)."""
    state = _state(request)
    value = _gnap_token(request)
    if value is None:
        raise missing
    return state, base_url(request, state.config.public_url), value


async def _verify_grant_client(
    state: SandboxState, request: Request, body: bytes, base: str, grant: Grant
) -> None:
    client = await grant_client_keys(state, base, grant.client_wallet, grant.client_jwk)
    verify_as(state, request, body, base, client)


async def _authenticated_grant(request: Request, body: bytes) -> tuple[SandboxState, str, Grant]:
    missing = GnapError(
        401,
        "invalid_continuation",
        "missing continuation token: send Authorization: GNAP <continue.access_token.value>",
    )
    state, base, value = _token_holder(request, missing)
    grant = grants.find_continuation(state, request.path_params["id"], value)
    await _verify_grant_client(state, request, body, base, grant)
    return state, base, grant


async def continue_request(request: Request) -> Response:
    body = await request.body()
    state, base, grant = await _authenticated_grant(request, body)
    try:
        data = parse_json_object(body, allow_empty=True)
    except BodyError as exc:
        raise GnapError(400, "invalid_request", str(exc)) from exc
    interact_ref = None
    if data:
        interact_ref = data.get("interact_ref")
        if not isinstance(interact_ref, str) or not interact_ref:
            raise GnapError(401, "invalid_request", "missing interaction reference")
    grant, token = grants.continue_grant(state, grant, interact_ref)
    if grant.state == "pending":
        return JSONResponse({"continue": continue_json(state, base, grant, wait=True)})
    return JSONResponse(issued_json(state, base, grant, token))


async def cancel_request(request: Request) -> Response:
    body = await request.body()
    try:
        state, _, grant = await _authenticated_grant(request, body)
    except GnapError as exc:
        if exc.status == 404:
            # Rafiki looks the grant up among the live ones: gone is an "invalid grant".
            raise GnapError(401, "invalid_continuation", "invalid grant") from exc
        raise
    grants.revoke_grant(state, grant)
    return Response(status_code=204)


async def _managed_token(request: Request, body: bytes) -> tuple[SandboxState, str, AccessToken]:
    # Rafiki 5k: the same words as for a wrong token. (Rafiki rotates without a token,
    # 5j; the sandbox refuses on purpose, README "stricter".)
    missing = GnapError(
        401,
        "invalid_client",
        "invalid access token",
        reason="missing access token: send Authorization: GNAP <access token>",
    )
    state, base, value = _token_holder(request, missing)
    token = grants.find_managed_token(state, request.path_params["id"], value)
    await _verify_grant_client(state, request, body, base, state.grants[token.grant_id])
    return state, base, token


async def rotate_token(request: Request) -> Response:
    body = await request.body()
    state, base, token = await _managed_token(request, body)
    new = grants.rotate_token(state, token)
    grant = state.grants[new.grant_id]
    return JSONResponse({"access_token": token_json(state, base, new, grant)})


async def revoke_token(request: Request) -> Response:
    body = await request.body()
    state, _, token = await _managed_token(request, body)
    grants.revoke_token(state, token)
    return Response(status_code=204)


ROUTES = [
    Route(AUTH_PATH, grant_request, methods=["POST"]),
    Route(AUTH_PATH + "/continue/{id}", continue_request, methods=["POST"]),
    Route(AUTH_PATH + "/continue/{id}", cancel_request, methods=["DELETE"]),
    Route(AUTH_PATH + "/token/{id}", rotate_token, methods=["POST"]),
    Route(AUTH_PATH + "/token/{id}", revoke_token, methods=["DELETE"]),
]
