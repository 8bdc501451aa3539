"""Grant request bodies (auth-server spec ``post-request``) checked and reduced to what matters."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from opapprove.openpayments.errors import KeyLoadError
from opapprove.openpayments.keys import Jwk
from opapprove.servers.sandbox.intervals import IntervalError, parse_interval
from opapprove.servers.sandbox.validation import BodyError, amount_value, is_http_url, only_keys

ACTIONS = {
    "incoming-payment": {"create", "complete", "read", "read-all", "list", "list-all"},
    "outgoing-payment": {"create", "read", "read-all", "list", "list-all"},
    "quote": {"create", "read", "read-all"},
}
ITEM_KEYS = {
    "incoming-payment": {"type", "actions", "identifier"},
    "outgoing-payment": {"type", "actions", "identifier", "limits"},
    "quote": {"type", "actions"},
}
RECEIVER = re.compile(r"^(https|http)://(.+)/incoming-payments/(.+)$")


@dataclass(frozen=True)
class GrantRequest:
    client_wallet: str | None
    client_jwk: Jwk | None
    access: list[dict[str, Any]]
    subject: dict[str, Any] | None
    interact: dict[str, Any] | None

    @property
    def finish(self) -> dict[str, Any] | None:
        return None if self.interact is None else self.interact.get("finish")


def parse_grant_request(data: dict[str, Any]) -> GrantRequest:
    """Check the body against the spec rules that matter; raise BodyError naming the field."""
    if "client" not in data:
        raise BodyError("missing required request field 'client'")
    wallet, jwk = _client(data["client"])
    access: list[dict[str, Any]] = []
    if "access_token" in data:
        token = data["access_token"]
        if not isinstance(token, dict) or not isinstance(token.get("access"), list):
            raise BodyError("access_token must be an object with an 'access' list")
        access = token["access"]
        if not access:
            raise BodyError("access_token.access is empty; ask for at least one access item")
        if len(access) > 3:
            raise BodyError(f"access_token.access has {len(access)} items; at most 3 are allowed")
        canon = [json.dumps(item, sort_keys=True) for item in access]
        if len(set(canon)) != len(canon):
            raise BodyError("access_token.access items must be unique")
        for i, item in enumerate(access):
            _access_item(item, f"access_token.access[{i}]")
    subject = data.get("subject")
    if subject is not None:
        _subject(subject)
    if not access and subject is None:
        raise BodyError(
            "the grant request needs access_token (or subject with interact)",
            openapi="body must have required property 'access_token'",
        )
    interact = data.get("interact")
    if interact is not None:
        _interact(interact)
    elif subject is not None and not access:
        raise BodyError("a subject grant request needs 'interact'")
    return GrantRequest(wallet, jwk, access, subject, interact)


def _client(client: Any) -> tuple[str | None, Jwk | None]:
    if isinstance(client, str):
        if not is_http_url(client):
            raise BodyError(
                "client must be the client's wallet address URL",
                openapi='body.client must match format "uri"',
            )
        return client, None
    if isinstance(client, dict) and set(client) == {"walletAddress"}:
        if not is_http_url(client["walletAddress"]):
            raise BodyError("client.walletAddress must be a wallet address URL")
        return client["walletAddress"], None
    if isinstance(client, dict) and set(client) == {"jwk"}:
        raw = client["jwk"]
        if not isinstance(raw, dict) or raw.get("alg") != "EdDSA":
            raise BodyError("client.jwk must be an Ed25519 JWK with alg EdDSA")
        x = raw.get("x")
        if not isinstance(x, str) or not re.match(r"^[a-zA-Z0-9_-]+$", x):
            raise BodyError("client.jwk.x must be base64url")
        try:
            return None, Jwk.from_dict(raw)
        except KeyLoadError as exc:
            raise BodyError(f"client.jwk is not usable: {exc.message}") from exc
    raise BodyError(
        "client must be a wallet address URL, {walletAddress: URL} or {jwk: JWK} (nothing else)"
    )


def _access_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise BodyError(f"{where} must be an object")
    kind = item.get("type")
    # Checked as a string first: an object or a list there is unhashable (it was a 500).
    if not isinstance(kind, str) or kind not in ACTIONS:
        raise BodyError(
            f"{where}.type must be one of {', '.join(sorted(ACTIONS))}",
            openapi=f"body.{_dotted(where)}.type must be equal to one of the allowed values",
        )
    only_keys(item, ITEM_KEYS[kind], where)
    actions = item.get("actions")
    if not isinstance(actions, list) or not actions:
        raise BodyError(f"{where}.actions must be a non-empty list")
    bad = [a for a in actions if not isinstance(a, str) or a not in ACTIONS[kind]]
    if bad:
        raise BodyError(
            f"{where}.actions has {bad!r}; a {kind} item allows {', '.join(sorted(ACTIONS[kind]))}"
        )
    if len(set(actions)) != len(actions):
        raise BodyError(f"{where}.actions must be unique")
    if "identifier" in item and not is_http_url(item["identifier"]):
        raise BodyError(f"{where}.identifier must be a wallet address URL")
    if kind == "outgoing-payment":
        if "identifier" not in item:
            # Rafiki's schema is a oneOf on type; without identifier no branch fits.
            raise BodyError(
                f"access identifier required: {where} needs identifier, the sender's wallet",
                openapi=f"body.{_dotted(where)}.type must be equal to one of the allowed values",
            )
        if "limits" in item:
            _limits(item["limits"], f"{where}.limits")


def _dotted(where: str) -> str:
    """``access_token.access[0]`` as Ajv writes the path: ``access_token.access.0``."""
    return where.replace("[", ".").replace("]", "")


def _limits(limits: Any, where: str) -> None:
    if not isinstance(limits, dict):
        raise BodyError(f"{where} must be an object")
    if "debitAmount" in limits and "receiveAmount" in limits:
        raise BodyError(f"{where} may hold debitAmount or receiveAmount, not both")
    for name in ("debitAmount", "receiveAmount"):
        if name in limits:
            amount_value(limits[name], f"{where}.{name}")
    if "receiver" in limits:
        receiver = limits["receiver"]
        if not isinstance(receiver, str) or not RECEIVER.match(receiver):
            raise BodyError(f"{where}.receiver must be an incoming payment URL")
    if "interval" in limits:
        if not isinstance(limits["interval"], str):
            raise BodyError(f"{where}.interval must be a string")
        try:
            parse_interval(limits["interval"])
        except IntervalError as exc:
            raise BodyError(f"{where}.interval: {exc}") from exc


def _subject(subject: Any) -> None:
    if not isinstance(subject, dict) or not isinstance(subject.get("sub_ids"), list):
        raise BodyError("subject must be an object with a 'sub_ids' list")
    ids = subject["sub_ids"]
    if len(ids) != 1:
        raise BodyError("subject.sub_ids must hold exactly one item")
    sub = ids[0]
    if (
        not isinstance(sub, dict)
        or not isinstance(sub.get("id"), str)
        or sub.get("format") != "uri"
    ):
        raise BodyError("subject.sub_ids[0] must be {id: <string>, format: 'uri'}")


def _interact(interact: Any) -> None:
    if not isinstance(interact, dict):
        raise BodyError("interact must be an object")
    start = interact.get("start")
    if not isinstance(start, list) or not start or any(s != "redirect" for s in start):
        items = start if isinstance(start, list) else []
        bad = next((i for i, s in enumerate(items) if s != "redirect"), 0)
        raise BodyError(
            'interact.start must be ["redirect"] (the only start method)',
            openapi=f"body.interact.start.{bad} must be equal to one of the allowed values",
        )
    finish = interact.get("finish")
    if finish is None:
        return
    if not isinstance(finish, dict):
        raise BodyError("interact.finish must be an object with method, uri and nonce")
    if finish.get("method") != "redirect":
        raise BodyError(
            "interact.finish.method must be 'redirect'",
            openapi="body.interact.finish.method must be equal to one of the allowed values",
        )
    if not is_http_url(finish.get("uri")):
        raise BodyError("interact.finish.uri must be an absolute http(s) URL")
    nonce = finish.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise BodyError("interact.finish.nonce must be a non-empty string")


def needs_interaction(request: GrantRequest) -> bool:
    """Rafiki's ``canSkipInteraction``: outgoing payments, list-all and subjects need a person.

    An item that needs a person must name the wallet it is for (``identifier``).
    """
    interactive = request.subject is not None
    for i, item in enumerate(request.access):
        if item["type"] == "outgoing-payment" or "list-all" in item["actions"]:
            interactive = True
            if not item.get("identifier"):
                raise BodyError(
                    f"access identifier required: access_token.access[{i}] needs the user's "
                    "approval, so it must name the wallet address in identifier"
                )
    return interactive
