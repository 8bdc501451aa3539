"""Reusable sandbox test kit: a spec-checking ASGI middleware, a fake clock, a harness.

``SpecCheckedApp`` wraps any sandbox app (in-process or served on loopback) and checks
every Open Payments response it sends against the copied specs by operationId, with
``tests.spec_check`` and again the way the Node SDK reads them (``check_as_sdk``). Pages and
admin routes are skipped, and so are injected faults (``x-sandbox-fault``). A few answers
the spec does not list are Rafiki's real behaviour; ``RAFIKI_DEVIATIONS`` names each one,
and those still have to be well-formed error bodies.

Use from any test folder:

    from tests.sandbox_fixtures import Sandbox, make_sandbox
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519
from starlette.types import ASGIApp, Receive, Scope, Send

from opapprove.approvals.records import Seller
from opapprove.approvals.store import Store
from opapprove.openpayments.keys import generate_private_key, public_jwk, write_private_key
from opapprove.openpayments.signatures import OpenPaymentsAuth, compact_json
from opapprove.servers.sandbox import SandboxApp, SandboxConfig, create_app
from opapprove.servers.serving import RunningServer, serve_in_thread
from tests.spec_check import SpecMismatch, check_response, operations

_ID = r"[^/]+"
OPERATIONS: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(f"^{p}$"), op)
    for m, p, op in [
        ("POST", "/auth", "post-request"),
        ("POST", f"/auth/continue/{_ID}", "post-continue"),
        ("DELETE", f"/auth/continue/{_ID}", "delete-continue"),
        ("POST", f"/auth/token/{_ID}", "post-token"),
        ("DELETE", f"/auth/token/{_ID}", "delete-token"),
        ("POST", "/op/incoming-payments", "create-incoming-payment"),
        ("GET", "/op/incoming-payments", "list-incoming-payments"),
        ("GET", f"/op/incoming-payments/{_ID}", "get-incoming-payment"),
        ("POST", f"/op/incoming-payments/{_ID}/complete", "complete-incoming-payment"),
        ("POST", "/op/quotes", "create-quote"),
        ("GET", f"/op/quotes/{_ID}", "get-quote"),
        ("POST", "/op/outgoing-payments", "create-outgoing-payment"),
        ("GET", "/op/outgoing-payments", "list-outgoing-payments"),
        ("GET", f"/op/outgoing-payments/{_ID}", "get-outgoing-payment"),
        ("GET", "/op/outgoing-payment-grant", "get-outgoing-payment-grant"),
        # Not Open Payments: consent pages and the operator API.
        ("ANY", "/interact/.*", ""),
        ("ANY", "/idp/.*", ""),
        ("ANY", "/_admin/.*", ""),
        ("GET", f"/{_ID}/page", ""),
        ("GET", f"/{_ID}/jwks.json", "get-wallet-address-keys"),
        ("GET", f"/{_ID}", "get-wallet-address"),
        # Any other GET: Rafiki's "Could not get wallet address" 404 (not an operation).
        ("GET", "/.+", ""),
    ]
]

# (operationId, status, error code) answers the spec does not list, each Rafiki's behaviour.
RAFIKI_DEVIATIONS: dict[tuple[str, int, str], str] = {
    ("post-continue", 401, "invalid_request"): "Rafiki: non-empty body without interact_ref",
    ("post-continue", 400, "invalid_request"): "a continue body that is not JSON",
    ("post-request", 400, "None"): "Rafiki's OpenAPI request validation (no error code)",
    ("get-incoming-payment", 400, "400"): "Rafiki: an unsigned request with a token",
    ("get-quote", 400, "400"): "Rafiki: an unsigned request with a token",
    ("get-outgoing-payment", 400, "400"): "Rafiki: an unsigned request with a token",
    ("get-outgoing-payment-grant", 400, "400"): "Rafiki: an unsigned request with a token",
    ("get-outgoing-payment", 401, "401"): "Rafiki: an unknown outgoing payment id",
    ("get-wallet-address", 404, "404"): "Rafiki: JSON 'Could not get wallet address'",
    ("get-wallet-address-keys", 404, "404"): "Rafiki: JSON 'Could not get wallet address'",
    ("get-wallet-address", 406, "406"): "Rafiki: Accept without application/json",
    ("get-incoming-payment", 406, "406"): "Rafiki: Accept without application/json",
    ("post-continue", 401, "invalid_continuation"): "Rafiki: a cancelled grant",
    ("delete-continue", 401, "invalid_continuation"): "Rafiki: a grant cancelled already",
    ("create-incoming-payment", 400, "400"): "Rafiki's request validation / invalid amount",
    ("create-incoming-payment", 404, "404"): "Rafiki: unknown wallet address",
    ("create-quote", 404, "404"): "Rafiki: unknown wallet address",
    ("create-outgoing-payment", 400, "400"): "Rafiki: invalid quote / invalid amount",
    ("create-outgoing-payment", 404, "404"): "Rafiki: unknown quote or wallet address",
    ("complete-incoming-payment", 409, "409"): "Rafiki: wrong state (already completed)",
    ("list-incoming-payments", 400, "400"): "Rafiki's request validation (pagination)",
    ("list-outgoing-payments", 400, "400"): "Rafiki's request validation (pagination)",
    ("list-incoming-payments", 404, "404"): "Rafiki: unknown wallet address",
    ("list-outgoing-payments", 404, "404"): "Rafiki: unknown wallet address",
}


def operation_for(method: str, path: str) -> str | None:
    """The operationId of a sandbox route, "" for a known non-OP route, None if unknown."""
    for m, pattern, op in OPERATIONS:
        if (m == "ANY" or m == method) and pattern.match(path):
            return op
    return None


@dataclass
class SpecRecorder:
    failures: list[str] = field(default_factory=list)
    seen: Counter[tuple[str, int]] = field(default_factory=Counter)
    deviations: Counter[tuple[str, int, str]] = field(default_factory=Counter)

    def check(
        self, method: str, path: str, status: int, headers: httpx.Headers, raw: bytes
    ) -> None:
        op = operation_for(method, path)
        if op is None:
            self.failures.append(f"{method} {path}: no operation mapped for this route")
            return
        if not op or headers.get("x-sandbox-fault"):
            return
        body: Any = None
        if "application/json" in headers.get("content-type", ""):
            try:
                body = json.loads(raw)
            except ValueError:
                self.failures.append(f"{op} {status}: body is not JSON: {raw[:200]!r}")
                return
        self.seen[(op, status)] += 1
        # As the spec says, then as the Node SDK reads it; a known Rafiki answer passes both.
        for check, refusal in ((check_response, ""), (check_as_sdk, "the Node SDK would refuse: ")):
            try:
                check(op, status, body)
            except (SpecMismatch, AssertionError) as exc:
                error = body.get("error") if isinstance(body, dict) else None
                code = error.get("code") if isinstance(error, dict) else None
                key = (op, status, str(code))
                if key in RAFIKI_DEVIATIONS and _well_formed_error(body):
                    self.deviations[key] += 1
                else:
                    self.failures.append(f"{method} {path} -> {status}: {refusal}{exc}")
                return

    def assert_clean(self) -> None:
        assert not self.failures, "sandbox answers that break the spec:\n" + "\n".join(
            self.failures
        )


@functools.cache
def _raw_spec(name: str) -> dict[str, Any]:
    # Read afresh: the SDK sees the spec as published, siblings of $ref included.
    text = resources.files("opapprove.specs").joinpath(name).read_text("utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def _inline(doc: dict[str, Any], node: Any, depth: int = 0) -> Any:
    """Resolve every $ref, merging a Reference's siblings into its target.

    That is how the Node SDK's json-schema-ref-parser reads the specs: a sibling
    ``description`` next to a response $ref, and ``additionalProperties: false`` next to
    a schema $ref (list items, the complete response), apply to the referenced object.
    """
    assert depth < 64, "cyclic $ref"
    if isinstance(node, list):
        return [_inline(doc, n, depth + 1) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**_inline(doc, target, depth + 1), **_inline(doc, siblings, depth + 1)}
    return {k: _inline(doc, v, depth + 1) for k, v in node.items()}


@functools.cache
def _sdk_validator(operation_id: str, status: int) -> jsonschema.protocols.Validator | None:
    """The validator of a response as the SDK reads the spec (None: the spec lists no
    body); built once per response, as inlining and building cost more than validating."""
    op = operations()[operation_id]
    doc = _raw_spec(op.spec)
    raw_op = doc["paths"][op.path][op.method.lower()]
    response = _inline(doc, raw_op.get("responses", {}).get(str(status)))
    if response is None:
        raise SpecMismatch(f"{operation_id} does not list {status}")
    schema = (response.get("content") or {}).get("application/json", {}).get("schema")
    if schema is None:
        return None
    cls = jsonschema.Draft202012Validator
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def check_as_sdk(operation_id: str, status: int, body: Any) -> None:
    """``check_response`` as the Node SDK reads the spec: a $ref's siblings merged into it.

    So ``additionalProperties: false`` next to ``$ref: incoming-payment`` (list items, the
    complete response) refuses fields the incoming payment does not define, like ``methods``.
    """
    validator = _sdk_validator(operation_id, status)
    if validator is None:
        assert body in (None, b"", "", {}), f"{operation_id} {status} has no body in the spec"
        return
    errors = list(validator.iter_errors(body))
    if errors:
        raise SpecMismatch(f"{operation_id} {status}: {errors[0].message[:300]}")


def _well_formed_error(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "code" not in error:
        # Rafiki's OpenAPI validator answers with a description alone.
        return str(error.get("description", "")).startswith(
            "Received error validating OpenAPI request: "
        )
    return (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("description"), str)
        and bool(error["description"])
    )


class SpecCheckedApp:
    """ASGI middleware: passes everything through and checks each finished response."""

    def __init__(self, app: ASGIApp, recorder: SpecRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers.extend(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        if status:
            hdrs = httpx.Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
            self.recorder.check(scope["method"], scope["path"], status[0], hdrs, b"".join(chunks))


class FakeClock:
    """A clock tests move by hand: expiries without sleeping."""

    def __init__(self, start: float | None = None) -> None:
        # Starts at the real time (whole seconds): a request signed by a client on the
        # real clock is then fresh for the sandbox's `created` window.
        self.now = float(int(time.time())) if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Sandbox:
    """An in-process sandbox with a seller key, a fake clock and spec checking on."""

    app: SandboxApp
    asgi: SpecCheckedApp
    recorder: SpecRecorder
    clock: FakeClock
    sleeps: list[float]
    key: ed25519.Ed25519PrivateKey
    key_id: str
    base: str = "http://sandbox.test"

    @property
    def state(self) -> Any:
        return self.app.sandbox

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    @property
    def buyer(self) -> str:
        return self.url("/buyer")

    @property
    def seller(self) -> str:
        return self.url("/seller")

    def add_default_seller(
        self,
        store: Store,
        key_path: Path,
        *,
        base: str | None = None,
        created_at: float = 0.0,
        replace: bool = False,
    ) -> None:
        """Write this sandbox's seller key to ``key_path`` (a new file) and make its
        ``/seller`` wallet the store's default seller; ``base`` is where the sandbox is
        served, else its in-process origin."""
        write_private_key(key_path, self.key)
        seller = Seller(
            id="default-seller",
            wallet_address_url=f"{base or self.base}/seller",
            key_id=self.key_id,
            private_key_path=str(key_path),
            created_at=created_at,
        )
        store.add_seller(seller, replace=replace)

    @asynccontextmanager
    async def client(
        self,
        key: ed25519.Ed25519PrivateKey | None = None,
        key_id: str | None = None,
        *,
        base: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> AsyncIterator[Api]:
        auth = OpenPaymentsAuth(key or self.key, key_id or self.key_id, clock=self.clock)
        transport = transport or httpx.ASGITransport(app=self.asgi)
        async with httpx.AsyncClient(transport=transport, auth=auth, timeout=10) as http:
            yield Api(http, base or self.base, client_wallet=f"{base or self.base}/seller")

    @contextmanager
    def served(self) -> Iterator[RunningServer]:
        """The same sandbox on real loopback HTTP (base URL from the Host header)."""
        with serve_in_thread(self.asgi) as server:
            yield server


class ServedWallets:
    """The sandbox's wallet addresses where it is served: at ``self.url`` on loopback."""

    url: str

    @property
    def buyer(self) -> str:
        return f"{self.url}/buyer"

    @property
    def seller(self) -> str:
        return f"{self.url}/seller"


def make_sandbox(tmp_path: Path | None = None, **overrides: Any) -> Sandbox:
    key = generate_private_key()
    key_id = f"seller-{secrets.token_hex(4)}"
    # The clock the harness signs with is the sandbox's own (a test may bring its own).
    clock = overrides.get("clock") or FakeClock()
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    settings: dict[str, Any] = {
        "seller_keys": [public_jwk(key, key_id)],
        "wait_seconds": 0,
        "clock": clock,
        # The fake clock stands still, so two requests of a test are signed in "the same
        # second" and a repeated one would read as a replay; tests of that turn it on.
        "refuse_replays": False,
        # Tests move the fake clock (expiries) while some clients, a CLI subprocess say,
        # sign on the real one: freshness is tested on its own (created_window=300 there).
        "created_window": None,
        "sleep": fake_sleep,
    }
    settings.update(overrides)
    if tmp_path is not None and "state_path" not in overrides:
        settings["state_path"] = tmp_path / "sandbox.sqlite"
    app = create_app(SandboxConfig(**settings))
    recorder = SpecRecorder()
    return Sandbox(app, SpecCheckedApp(app, recorder), recorder, clock, sleeps, key, key_id)


class Api:
    """A thin signed client over one sandbox origin: compact JSON, GNAP tokens, helpers."""

    def __init__(self, http: httpx.AsyncClient, base: str, *, client_wallet: str) -> None:
        self.http = http
        self.base = base
        self.client_wallet = client_wallet

    # -- raw calls -----------------------------------------------------------------
    async def post(
        self, url: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"GNAP {token}"
        content = raw if raw is not None else (b"" if body is None else compact_json(body))
        if content:
            headers["Content-Type"] = "application/json"
        return await self.http.post(url, content=content, headers=headers)

    async def get(self, url: str, *, token: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"GNAP {token}"
        return await self.http.get(url, headers=headers, params=params or None)

    async def delete(self, url: str, *, token: str) -> httpx.Response:
        return await self.http.delete(
            url, headers={"Accept": "application/json", "Authorization": f"GNAP {token}"}
        )

    # -- steps of the flow ------------------------------------------------------------
    def wallet_url(self, name: str) -> str:
        return f"{self.base}/{name}"

    async def grant(
        self, access: list[dict[str, Any]], *, interact: dict[str, Any] | None = None, **extra: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {"access_token": {"access": access}, "client": self.client_wallet}
        if interact is not None:
            body["interact"] = interact
        body.update(extra)
        return await self.post(f"{self.base}/auth", body)

    async def token(self, access: list[dict[str, Any]]) -> dict[str, Any]:
        resp = await self.grant(access)
        assert resp.status_code == 200, resp.text
        token: dict[str, Any] = resp.json()["access_token"]
        return token

    async def post_incoming_payment(self, token: str | None, **fields: Any) -> httpx.Response:
        """POST an incoming payment to the seller's wallet (no amount unless in ``fields``)
        and return the answer as it is: for tests of what the sandbox accepts or refuses."""
        body = {"walletAddress": self.wallet_url("seller"), **fields}
        return await self.post(f"{self.base}/op/incoming-payments", body, token=token)

    async def incoming_payment(
        self,
        value: str = "1234",
        *,
        wallet: str = "seller",
        token: str | None = None,
        asset: tuple[str, int] = ("USD", 2),
    ) -> dict[str, Any]:
        if token is None:
            token = (
                await self.token(
                    [{"type": "incoming-payment", "actions": ["create", "read", "complete"]}]
                )
            )["value"]
        body = {
            "walletAddress": self.wallet_url(wallet),
            "incomingAmount": {"value": value, "assetCode": asset[0], "assetScale": asset[1]},
            "metadata": {"description": "test order"},
        }
        resp = await self.post(f"{self.base}/op/incoming-payments", body, token=token)
        assert resp.status_code == 201, resp.text
        out: dict[str, Any] = resp.json()
        return out

    async def quote(
        self, receiver: str, *, wallet: str = "buyer", token: str | None = None, **amount: Any
    ) -> dict[str, Any]:
        if token is None:
            token = (await self.token([{"type": "quote", "actions": ["create", "read"]}]))["value"]
        body = {"walletAddress": self.wallet_url(wallet), "receiver": receiver, "method": "ilp"}
        body.update(amount)
        resp = await self.post(f"{self.base}/op/quotes", body, token=token)
        assert resp.status_code == 201, resp.text
        out: dict[str, Any] = resp.json()
        return out

    async def pending_outgoing_grant(
        self,
        *,
        limits: dict[str, Any] | None = None,
        wallet: str = "buyer",
        finish_uri: str | None = "http://127.0.0.1:3999/finish?pendingId=42",
        nonce: str = "client-nonce-1",
        actions: tuple[str, ...] = ("create", "read", "list"),
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "type": "outgoing-payment",
            "actions": list(actions),
            "identifier": self.wallet_url(wallet),
        }
        if limits is not None:
            item["limits"] = limits
        interact: dict[str, Any] = {"start": ["redirect"]}
        if finish_uri is not None:
            interact["finish"] = {"method": "redirect", "uri": finish_uri, "nonce": nonce}
        resp = await self.grant([item], interact=interact)
        assert resp.status_code == 200, resp.text
        out: dict[str, Any] = resp.json()
        return out

    async def continue_grant(
        self, pending: dict[str, Any], interact_ref: str | None = None
    ) -> httpx.Response:
        cont = pending["continue"]
        body = None if interact_ref is None else {"interact_ref": interact_ref}
        return await self.post(cont["uri"], body, token=cont["access_token"]["value"])


def finish_params(finish_url: str) -> dict[str, str]:
    return dict(httpx.URL(finish_url).params)


def reason_of(resp: httpx.Response) -> str:
    """The sandbox's own explanation of a refusal (its ``X-Sandbox-Reason`` header)."""
    return resp.headers.get("x-sandbox-reason", "")
