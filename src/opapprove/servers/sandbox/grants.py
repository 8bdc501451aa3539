"""The GNAP grant lifecycle, as Rafiki runs it: create, interact, continue, cancel, tokens.

pending -> approved (a person said yes) -> issued (the token went out, once);
side exits: rejected, revoked.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from opapprove.openpayments.interaction import finish_hash
from opapprove.servers.sandbox.errors import GnapError, ResourceServerError, SandboxError
from opapprove.servers.sandbox.grant_requests import GrantRequest
from opapprove.servers.sandbox.records import AccessToken, Grant, Resource
from opapprove.servers.sandbox.state import SandboxState
from opapprove.servers.sandbox.urls import set_query_params


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _new_token(state: SandboxState, grant: Grant) -> AccessToken:
    token = AccessToken(
        id=str(uuid.uuid4()),
        value=secrets.token_urlsafe(32),
        grant_id=grant.id,
        created_at=state.now(),
        expires_in=state.config.token_lifetime,
    )
    state.add_token(token)
    return token


def create_grant(
    state: SandboxState,
    request: GrantRequest,
    *,
    interactive: bool,
    client_name: str | None,
    auth_server_url: str,
) -> tuple[Grant, AccessToken | None]:
    now = state.now()
    with state.lock:
        grant = Grant(
            id=str(uuid.uuid4()),
            client_wallet=request.client_wallet,
            client_jwk=None if request.client_jwk is None else request.client_jwk.to_dict(),
            client_name=client_name,
            access=request.access,
            subject=request.subject,
            finish=request.finish,
            state="pending" if interactive else "issued",
            continue_id=str(uuid.uuid4()),
            continue_token=secrets.token_urlsafe(32),
            created_at=now,
            last_continued_at=now,
            auth_server_url=auth_server_url,
        )
        if interactive:
            grant.interact_id = str(uuid.uuid4())
            grant.interact_nonce = secrets.token_hex(16)
            grant.interaction_expires_at = now + state.config.interaction_lifetime
        state.add_grant(grant)
        token = None if interactive else _new_token(state, grant)
        state.commit(grant, *([token] if token else []))
    return grant, token


def find_continuation(state: SandboxState, continue_id: str, token: str) -> Grant:
    grant = state.grant_by_continue_id(continue_id)
    if grant is None or not _same(grant.continue_token, token):
        raise GnapError(404, "invalid_continuation", "grant not found")
    return grant


def _too_fast(verb: str, wait: int) -> GnapError:
    return GnapError(
        400,
        "too_fast",
        f'{verb} grant faster than "wait" period',
        reason=f"wait {wait}s after the grant request or the last continue",
    )


def _cancelled() -> GnapError:
    # Rafiki: a cancelled grant is an "invalid grant", continued or cancelled again.
    return GnapError(401, "invalid_continuation", "invalid grant", reason="the grant was cancelled")


def continue_grant(
    state: SandboxState, grant: Grant, interact_ref: str | None
) -> tuple[Grant, AccessToken | None]:
    """Poll (``interact_ref`` None) or finish a grant; return it and a newly issued token."""
    wait = state.config.wait_seconds
    with state.lock:
        now = state.now()
        if grant.state == "revoked":
            raise _cancelled()
        if interact_ref is None:
            if grant.finish is not None:
                # Rafiki's words for a rejected finish grant too (3c): it cannot say which.
                raise GnapError(
                    401,
                    "request_denied",
                    "grant cannot be polled",
                    reason="it has a finish redirect; continue with interact_ref"
                    + (" (and it was rejected)" if grant.state == "rejected" else ""),
                )
            if grant.state == "rejected":
                # Rafiki (2l): the same answer as for a grant whose token went out already.
                raise GnapError(
                    401,
                    "request_denied",
                    "grant cannot be continued",
                    reason="the grant was rejected",
                )
            if now < grant.last_continued_at + wait:
                raise _too_fast("polled", wait)
            if grant.state == "pending":
                if _interaction_expired(state, grant):
                    raise GnapError(401, "request_denied", "grant interaction expired")
                grant.last_continued_at = now
                state.commit(grant)
                return grant, None
            if grant.state != "approved":
                raise GnapError(
                    401,
                    "request_denied",
                    "grant cannot be continued",
                    reason="its access token was issued already",
                )
        else:
            if not _same(interact_ref, grant.interact_ref):
                raise GnapError(404, "invalid_continuation", "grant not found")
            if now < grant.last_continued_at + wait:
                raise _too_fast("continued", wait)
            if grant.state != "approved":
                # Also what a second continue gets: the token is issued only once.
                raise GnapError(401, "request_denied", "grant interaction not approved")
        grant.state = "issued"
        token = _new_token(state, grant) if grant.access else None
        state.commit(grant, *([token] if token else []))
        return grant, token


def revoke_grant(state: SandboxState, grant: Grant) -> None:
    with state.lock:
        if grant.state == "revoked":
            raise _cancelled()
        grant.state = "revoked"
        tokens = [t for t in state.tokens.values() if t.grant_id == grant.id]
        for token in tokens:
            token.revoked = True
        state.commit(grant, *tokens)


def _invalid_token() -> GnapError:
    return GnapError(401, "invalid_client", "invalid access token")


def find_managed_token(state: SandboxState, manage_id: str, value: str) -> AccessToken:
    token = state.tokens.get(manage_id)
    if token is None or token.revoked or not _same(token.value, value):
        raise _invalid_token()
    return token


def rotate_token(state: SandboxState, token: AccessToken) -> AccessToken:
    """A new value and a new management URL; the old ones stop working at once."""
    with state.lock:
        grant = state.grants.get(token.grant_id)
        if token.revoked:
            # Rotated or revoked since find_managed_token (two requests at one instant): what
            # a dead token gets (Rafiki 5d), not a different error for the loser of the race.
            raise _invalid_token()
        if grant is None or grant.state == "revoked":
            raise GnapError(404, "invalid_rotation", "token or grant was revoked")
        # The old value stays known, as inactive: Rafiki answers it 403 "Inactive Token" (5b).
        token.revoked = True
        token.rotated = True
        new = _new_token(state, grant)
        state.commit(new, token)
        return new


def revoke_token(state: SandboxState, token: AccessToken) -> None:
    with state.lock:
        if token.revoked:
            raise _invalid_token()  # as above, and as Rafiki revoking twice (5g)
        token.revoked = True
        state.commit(token)


# ---------------------------------------------------------------------- interaction


@dataclass(frozen=True)
class Decision:
    outcome: str  # approved | rejected | expired | unknown | invalid
    finish_url: str | None
    grant: Grant


def _interaction_expired(state: SandboxState, grant: Grant) -> bool:
    expires = grant.interaction_expires_at
    return expires is not None and state.now() >= expires


def find_interaction(state: SandboxState, interact_id: str, nonce: str) -> Grant:
    grant = state.grant_by_interaction(interact_id)
    if grant is None or not _same(grant.interact_nonce, nonce):
        raise SandboxError("unknown interaction: the approval link is wrong", status=404)
    return grant


def _finish(grant: Grant, params: dict[str, str]) -> str | None:
    if grant.finish is None:
        return None
    return set_query_params(str(grant.finish["uri"]), params)


def interaction_blocker(state: SandboxState, grant: Grant) -> Decision | None:
    """Why this interaction can no longer be decided (and where the browser goes), if so."""
    # Rafiki (1f, 4d): decided or cancelled, the browser goes back with the same words.
    invalid = {"result": "invalid_interaction", "message": "invalid interaction"}
    if grant.state == "revoked":
        return Decision("unknown", _finish(grant, invalid), grant)
    if _interaction_expired(state, grant) and grant.state == "pending":
        params = {"result": "invalid_interaction", "message": "interaction expired"}
        return Decision("expired", _finish(grant, params), grant)
    if grant.state != "pending":
        return Decision("invalid", _finish(grant, invalid), grant)
    return None


def decide_interaction(
    state: SandboxState, interact_id: str, nonce: str, *, accept: bool
) -> Decision:
    with state.lock:
        grant = find_interaction(state, interact_id, nonce)
        blocked = interaction_blocker(state, grant)
        if blocked is not None:
            return blocked
        if not accept:
            grant.state = "rejected"
            state.commit(grant)
            return Decision("rejected", _finish(grant, {"result": "grant_rejected"}), grant)
        grant.state = "approved"
        grant.interact_ref = str(uuid.uuid4())
        state.commit(grant)
        return Decision("approved", approved_finish_url(grant), grant)


def approved_finish_url(grant: Grant) -> str | None:
    if grant.finish is None or grant.interact_ref is None or grant.interact_nonce is None:
        return None
    digest = finish_hash(
        str(grant.finish["nonce"]), grant.interact_nonce, grant.interact_ref, grant.auth_server_url
    )
    return _finish(grant, {"hash": digest, "interact_ref": grant.interact_ref})


def finish_redirect(state: SandboxState, grant: Grant) -> str | None:
    """Where ``GET /interact/{id}/{nonce}/finish`` sends the browser, after a decision."""
    if grant.state == "approved":
        return approved_finish_url(grant)
    if grant.state == "rejected":
        return _finish(grant, {"result": "grant_rejected"})
    blocked = interaction_blocker(state, grant)
    return None if blocked is None else blocked.finish_url


# ---------------------------------------------------------------------- introspection


@dataclass(frozen=True)
class Introspection:
    grant: Grant
    token: AccessToken
    item: dict[str, Any]
    action: str  # what the token allows for this request: read or read-all, list or list-all

    def sees(self, resource: Resource) -> bool:
        """A ``read``/``list`` grant sees only what its own client made; ``*-all`` sees all."""
        return self.action.endswith("-all") or resource.client == self.grant.client_id


def introspect(
    state: SandboxState,
    value: str,
    *,
    kind: str,
    action: str,
    wallet: str | None,
    www_authenticate: str,
) -> Introspection:
    """Check a token for one request like Rafiki's RS: 401 unknown, 403 inactive/insufficient."""
    headers = {"WWW-Authenticate": www_authenticate}
    with state.lock:
        token = state.token_by_value(value)
        grant = None if token is None else state.grants.get(token.grant_id)
        if token is None or grant is None:
            raise ResourceServerError(401, "Invalid Token", headers=headers)
        expired = state.now() >= token.created_at + token.expires_in
        if token.revoked or grant.state == "revoked" or expired:
            if expired:
                why = "the access token expired; rotate it via its manage URL"
            elif token.rotated:
                why = "the access token was rotated; use the newer one"
            elif grant.state == "revoked":
                why = "the grant was cancelled; request a new grant"
            else:
                why = "the access token was revoked; request a new grant"
            raise ResourceServerError(
                403,
                "Inactive Token",
                reason=why,
                headers=headers,
            )
        for item in grant.access:
            if item.get("type") != kind:
                continue
            actions = item.get("actions", [])
            allowed = {action} | ({f"{action}-all"} if action in ("read", "list") else set())
            granted = allowed & set(actions)
            if not granted:
                continue
            if wallet is not None and item.get("identifier") not in (None, wallet):
                continue
            effective = f"{action}-all" if f"{action}-all" in granted else action
            return Introspection(grant, token, item, effective)
        target = f" for {wallet}" if wallet else ""
        raise ResourceServerError(
            403,
            "Insufficient Grant",
            reason=f"the token does not grant {kind} {action}{target}",
            headers=headers,
        )
