"""What went wrong, in words a person can act on: Open Payments error answers mapped to hints.

The AS answers ``{"error": {"code", "description"}}`` with GNAP codes; the RS (Rafiki)
puts the HTTP status in ``code`` and the meaning in ``description``. Descriptions are
matched loosely (lowercase substrings), since they are Rafiki's words, not the spec's.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from opapprove.openpayments import jsontext

if TYPE_CHECKING:
    # operations reads its answers with responses, which raises with these hints.
    from opapprove.openpayments.operations import Operation

Kind = Literal["wallet", "auth", "resource"]

SIGNATURE_HINT = (
    "the server rejected our signature: check the key id and the private key match the JWK"
)
REDIRECT_HINT = (
    "the server redirected; is the URL a wallet address / did you send Accept: application/json?"
)
INVALID_RESPONSE_HINT = (
    "the server does not speak Open Payments as the spec says (or the URL is not an Open "
    "Payments endpoint); pass validate=False to accept it anyway"
)
INCONSISTENT_HINT = (
    "the server's answer contradicts itself; do not rely on it and report it to the wallet operator"
)


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_error_body(body: bytes) -> tuple[str | None, str | None, dict[str, Any]]:
    try:
        data = jsontext.loads(body) if body else None
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return None, (one_line(text, 200) if text else None), {}
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        code = err.get("code")
        description = err.get("description")
        details = err.get("details")
        return (
            str(code) if code is not None else None,
            str(description) if description is not None else None,
            details if isinstance(details, dict) else {},
        )
    if data is None:
        return None, None, {}
    return None, one_line(json.dumps(data), 200), {}


def hint_for(
    op: Operation,
    status: int,
    code: str | None,
    description: str | None,
    key_id: str | None,
    client: str | None,
) -> str | None:
    """``client`` is the wallet the request was signed as (None: unsigned)."""
    desc = (description or "").lower()
    kid = key_id or "?"
    client = client or "the client wallet address"
    if op.server == "auth":
        hint = _auth_hint(op.name, status, code, desc, kid, client)
    else:
        hint = _resource_hint(op.name, status, desc, kid, client)
    if hint is not None:
        return hint
    if status == 429:
        return "too many requests: wait a little and try again"
    if status >= 500:
        return (
            "the server failed: try again later, and report it to the wallet operator if it lasts"
        )
    return None


def _auth_hint(
    op: str, status: int, code: str | None, desc: str, kid: str, client: str
) -> str | None:
    if code == "invalid_client":
        if "could not determine client" in desc:
            return (
                f"key id {kid} is not in {client}/jwks.json (upload the public JWK to the "
                "client wallet — on an opapprove sandbox: `opapprove sandbox add-key` — or fix "
                "the key id)"
            )
        if "jwk" in desc and "interactive" in desc:
            return (
                "a jwk client cannot ask for an interactive grant: identify with a wallet address"
            )
        if "client" in desc and status == 400:
            return (
                f"the authorization server could not use {client} as the client: it must be a "
                "wallet address that exists and has a public name"
            )
        return SIGNATURE_HINT
    if code == "too_fast":
        return "continued too soon: wait continue.wait seconds"
    if code == "request_denied":
        if "cannot be polled" in desc:
            return "grants with a finish redirect cannot be polled: use the redirect's interact_ref"
        if "not approved" in desc:
            return (
                "not approved yet, or this grant was already continued once "
                "(tokens are issued once)"
            )
        return "the authorization server refused: check the access rights the grant asks for"
    if code == "user_denied":
        return "the user rejected the grant: start a new one if that was a mistake"
    if code in ("invalid_interaction", "unknown_interaction"):
        return "the interaction expired or is unknown: start a new grant"
    if op in ("post-continue", "delete-continue") and (
        status == 404 or code == "invalid_continuation"
    ):
        if status == 404:
            return (
                "unknown, revoked or rejected grant (or a continue token of another grant): "
                "start a new grant"
            )
        return "send the continue token: Authorization: GNAP <continue.access_token.value>"
    if op in ("post-token", "delete-token") and (status == 404 or code == "invalid_rotation"):
        return (
            "the token is unknown (already rotated or revoked): use the newest manage URL and "
            "token, or request a new grant"
        )
    if code == "invalid_request" or (status == 400 and code is None):
        if "identifier" in desc:
            return "interactive grants must name the payer's wallet address as identifier"
        if "interact" in desc and "reference" not in desc:
            return "this grant needs the user's consent: add interact (start: redirect)"
        if "interaction reference" in desc:
            return "after the redirect send {interact_ref}; to poll, send no body"
        return "the authorization server refused the request: check it against the spec"
    if status == 401:
        return SIGNATURE_HINT
    return None


def _resource_hint(op: str, status: int, desc: str, kid: str, client: str) -> str | None:
    if "inactive token" in desc:
        return "expired or revoked: rotate via manage, then retry"
    if "invalid token" in desc:
        return "the authorization server does not know this access token: request a new grant"
    if "authorization header" in desc:
        return "send the access token as Authorization: GNAP <token>"
    if "signature validation error" in desc:
        if "could not find key" in desc or "invalid key id" in desc:
            return (
                f"key id {kid} is not in {client}/jwks.json (upload the public JWK to the "
                "client wallet — on an opapprove sandbox: `opapprove sandbox add-key` — or fix "
                "the key id)"
            )
        if "could not retrieve client keys" in desc:
            return f"the server could not fetch {client}/jwks.json: check the client wallet"
        return SIGNATURE_HINT
    if status == 401 and desc == "unauthorized" and op.startswith("get-"):
        # Rafiki looks the resource's wallet up first: an unknown id is 401, not 404 (6j).
        return "the wallet knows no resource at this URL: check the id (a new token will not help)"
    if status == 401:
        return "the access token or the signature was refused: check both belong to this grant"
    if status == 403:
        return (
            "the grant does not allow this: check its actions, its identifier (wallet address) "
            "and its limits (amount, receiver, interval)"
        )
    if status == 400 and op in ("create-quote", "create-outgoing-payment"):
        if "expired" in desc:
            return "the quote expired (quotes live about 5 minutes): create a new quote"
        if "invalid quote" in desc or "invalidquote" in desc:
            return (
                "a quote backs one outgoing payment only, and must not be expired: create a new one"
            )
        if op == "create-quote":
            return (
                "give debitAmount or receiveAmount in the wallet's asset, or quote a receiver "
                "that has an incomingAmount"
            )
        return "check the payment: amounts in the sending wallet's asset, a known quote or receiver"
    if status == 404:
        if op == "get-wallet-address":
            return "there is no wallet address at this URL: check its spelling"
        if op == "get-wallet-address-keys":
            return "this wallet address publishes no keys"
        return "not found: check the URL (resources are addressed by their full id)"
    if status == 409:
        return "the resource is in the wrong state for this (already completed, expired or used)"
    return None
