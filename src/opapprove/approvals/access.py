"""How the flow gets in at the wallets: one client per seller, wallet documents, grant tokens.

The flow holds one :class:`Access`. It keeps what is worth keeping between grants (the
clients with their connections, the wallet documents, the non-interactive grants' tokens,
each in this process and, but the clients, in the store for the next one) and gets a
token anew when the wallet says the one it has is dead: a fresh non-interactive grant, or
a rotation of a grant's access token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from opapprove.approvals.errors import FlowError, translated
from opapprove.approvals.records import CachedGrant, Pending, Seller, State
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import models

if TYPE_CHECKING:
    import httpx

    from opapprove.approvals.store import Store
    from opapprove.openpayments.client import Exchange, OpenPaymentsClient
    from opapprove.settings import Settings

T = TypeVar("T")

# How long a wallet address document is reused before it is fetched again.
WALLET_DOC_TTL = 300.0


def incoming_grant(seller: Seller) -> models.GrantRequest:
    """The seller's non-interactive grant to create, read and complete incoming payments."""
    return _incoming_grant(seller.wallet_address_url)


def quote_grant(seller: Seller) -> models.GrantRequest:
    """The seller's non-interactive grant to create and read quotes at the buyer's wallet."""
    return _quote_grant(seller.wallet_address_url)


# One body per seller wallet, built once and never changed after: every grant of a bulk
# replay asks for both twice, mostly only for their cache key (bench/RESULTS.md).
@lru_cache(maxsize=64)
def _incoming_grant(wallet_address_url: str) -> models.GrantRequest:
    return models.incoming_payment_grant(wallet_address_url)


@lru_cache(maxsize=64)
def _quote_grant(wallet_address_url: str) -> models.GrantRequest:
    return models.quote_grant(wallet_address_url)


def wallet_of(doc: dict[str, Any] | None) -> models.WalletAddress:
    """A wallet address document as the store keeps it (a grant's buyer_doc, seller_doc)."""
    return models.WalletAddress.model_validate(doc or {})


@dataclass(eq=False)
class Access:
    """The seller's clients and the tokens they need; shared by every grant of one Flow."""

    store: Store = field(repr=False)
    settings: Settings = field(repr=False)
    transport: httpx.AsyncBaseTransport | None = None
    on_exchange: Callable[[Exchange], None] | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clients: dict[str, OpenPaymentsClient] = field(default_factory=dict, init=False, repr=False)
    _wallets: dict[str, tuple[float, models.WalletAddress]] = field(
        default_factory=dict, init=False, repr=False
    )
    _grants_in_flight: dict[str, asyncio.Future[str]] = field(
        default_factory=dict, init=False, repr=False
    )

    async def aclose(self) -> None:
        clients, self.clients = self.clients, {}
        for client in clients.values():
            await client.aclose()

    def client_for(self, seller: Seller) -> OpenPaymentsClient:
        """The seller's client (made once, loading its key: a broken key is FlowError)."""
        client = self.clients.get(seller.id)
        if client is None:
            from opapprove.approvals.sellers import load_key
            from opapprove.openpayments.client import OpenPaymentsClient

            try:
                key = load_key(seller)
            except op_errors.KeyLoadError as exc:
                raise translated(exc, f"seller {seller.id!r}", kind="config") from exc
            client = OpenPaymentsClient(
                wallet_address_url=seller.wallet_address_url,
                key=key,
                key_id=seller.key_id,
                transport=self.transport,
                timeout=float(self.settings.timeout),
                use_http=bool(self.settings.use_http),
                allow_http=bool(self.settings.allow_http),
                on_exchange=self.on_exchange,
                clock=self.clock,
                sleep=self.sleep,
            )
            self.clients[seller.id] = client
        return client

    async def wallet(
        self, seller: Seller, url: str, *, fresh: bool = False
    ) -> models.WalletAddress:
        """The wallet address document at ``url``, fetched with the seller's client.

        A bulk replay, a busy listener or the next `quote start` asks for the same few
        wallets again and again; their documents hardly ever change, so one fetch serves
        for a while: in this process's memory, then in the store for the next process.
        ``fresh`` fetches it past both (and caches what it gets).
        """
        now = self.clock()
        hit = None if fresh else self._wallets.get(url)
        if hit is not None and 0 <= now - hit[0] < WALLET_DOC_TTL:
            return hit[1]
        stored = (
            None if fresh else self.store.get_wallet_document(url, max_age=WALLET_DOC_TTL, now=now)
        )
        if isinstance(stored, dict):
            doc = models.WalletAddress.model_validate(stored)
        else:
            doc = await self.client_for(seller).get_wallet_address(url)
            self.store.put_wallet_document(url, doc.to_wire(), now=now)
        self._wallets[url] = (now, doc)
        return doc

    async def grant_token(
        self, seller: Seller, auth_server: str, body: models.GrantRequest, *, fresh: bool = False
    ) -> str:
        """A non-interactive grant's token, reused from the store until it expires."""
        assert body.access_token is not None
        access = body.access_token.access[0]
        key = "|".join(
            [
                auth_server,
                seller.wallet_address_url,
                seller.key_id,
                access.type,
                ",".join(access.actions),
                getattr(access, "identifier", None) or "",
            ]
        )
        if not fresh:
            cached = self.store.get_cached_grant(key, now=self.clock())
            if cached is not None:
                return cached.access_token
        # Grants replayed side by side all miss the cache at once. Their grant requests, signed
        # in the same second with a deterministic Ed25519 key, are byte-identical: a wallet that
        # refuses replays (our sandbox) rejects all but one, and each costs a round trip. One
        # request in flight per key serves every caller; any new token is as fresh as another.
        running = self._grants_in_flight.get(key)
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            running = asyncio.ensure_future(self._request_grant(seller, auth_server, body, key))
            self._grants_in_flight[key] = running
            running.add_done_callback(lambda done: self._forget_grant_request(key, done))
        return await asyncio.shield(running)

    def _forget_grant_request(self, key: str, done: asyncio.Future[str]) -> None:
        if self._grants_in_flight.get(key) is done:
            del self._grants_in_flight[key]
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have gone

    async def _request_grant(
        self, seller: Seller, auth_server: str, body: models.GrantRequest, key: str
    ) -> str:
        assert body.access_token is not None
        access = body.access_token.access[0]
        grant = await self.client_for(seller).request_grant(auth_server, body)
        if not isinstance(grant, models.Grant) or grant.access_token is None:
            raise FlowError(
                f"the wallet asks for interaction on a {access.type} grant",
                hint="this wallet requires consent for it; opapprove expects it non-interactive",
                kind="wallet",
            )
        token = grant.access_token
        now = self.clock()
        self.store.put_cached_grant(
            CachedGrant(
                key=key,
                auth_server=auth_server,
                access_token=token.value,
                manage_url=token.manage,
                expires_at=now + float(token.expires_in) if token.expires_in else None,
                access=[item.to_wire() for item in token.access],
                created_at=now,
            )
        )
        return token.value

    async def with_grant(
        self,
        seller: Seller,
        auth_server: str,
        body: models.GrantRequest,
        call: Callable[[str], Awaitable[T]],
    ) -> T:
        """``call(token)`` with the grant's token; once more with a fresh grant if it died."""
        token = await self.grant_token(seller, auth_server, body)
        try:
            return await call(token)
        except op_errors.ResourceError as exc:
            if not token_dead(exc):
                raise
        # The cached token expired or was revoked at the server: get a fresh grant once.
        token = await self.grant_token(seller, auth_server, body, fresh=True)
        return await call(token)

    async def with_access_token(
        self, pending: Pending, client: OpenPaymentsClient, call: Callable[[str], Awaitable[T]]
    ) -> T:
        """``call(token)`` with the grant's outgoing-payment token, rotated if it died."""
        # The row, not the caller's copy: an earlier call may have rotated the token.
        pending = self._reread(pending)
        assert pending.access_token
        used = pending.access_token
        try:
            return await call(used)
        except op_errors.ResourceError as exc:
            if not token_dead(exc):
                raise
            refused = exc
        # 403 Inactive Token (Rafiki's answer for a rotated-away, revoked or expired token).
        pending = self._reread(pending)
        if pending.access_token and pending.access_token != used:
            # Another process rotated it meanwhile: its token is the live one.
            return await call(pending.access_token)
        if not pending.token_manage_url:
            raise regrant_needed(pending, refused, "the wallet gave no manage URL to rotate it")
        try:
            rotated = await client.rotate_token(pending.token_manage_url, used)
        except op_errors.GrantError as exc:
            if exc.status >= 500:
                raise
            # Rotated away or revoked: this token cannot be renewed; the buyer must approve anew.
            why = f"rotating it was refused ({exc.message})"
            raise regrant_needed(pending, refused, why) from exc
        self.store.update(
            pending.id,
            event="token_rotated",
            **token_fields(rotated, self.clock()),
        )
        return await call(rotated.value)

    def _reread(self, pending: Pending) -> Pending:
        return self.store.get_pending(pending.id) or pending


def token_fields(token: models.AccessToken, now: float) -> dict[str, Any]:
    """A grant's access token as the row keeps it."""
    return {
        "access_token": token.value,
        "token_manage_url": token.manage,
        "token_expires_at": now + float(token.expires_in) if token.expires_in else None,
    }


def grant_fields(grant: models.Grant, now: float) -> dict[str, Any]:
    """A finalized grant as the row keeps it: its access token and how to continue it."""
    if grant.access_token is None:
        raise FlowError(
            "the wallet finalized the grant but issued no access token",
            hint="opapprove asks for an outgoing-payment token; the wallet gave subject only",
            kind="wallet",
        )
    return {
        **token_fields(grant.access_token, now),
        "continue_uri": grant.continue_.uri,
        "continue_token": grant.continue_.token,
    }


def token_dead(exc: op_errors.ResourceError) -> bool:
    text = f"{exc.description or ''} {exc.message}".lower()
    return (exc.status == 403 and "inactive token" in text) or (
        exc.status == 401 and "invalid token" in text
    )


# Where a payment of the grant may have left the buyer's wallet already.
_MAY_HAVE_PAID = frozenset({State.PAYING, State.PAYMENT_CREATED, State.PARTIALLY_PAID})


def regrant_needed(pending: Pending, exc: op_errors.ResourceError, why: str) -> FlowError:
    if pending.state in _MAY_HAVE_PAID:
        # Without the token the payment cannot be looked up (nor found by a replay): a new
        # grant for the offer would pay it again.
        hint = (
            f"a payment of this grant left or may have left (it is {pending.state}), and it"
            " cannot be looked up any more: check what the seller received (opapprove pending"
            f" show {pending.id}) before the buyer is asked to approve a new one, which would"
            " pay again"
        )
    else:
        hint = (
            "the grant was revoked at the wallet: the buyer has to approve a new one "
            f"(opapprove quote start --offer {pending.offer_id} ...); nothing was paid twice"
        )
    err = FlowError(
        f"the wallet no longer accepts this grant's access token ({exc.description or exc.status})"
        f" and {why}",
        hint=hint,
        kind="wallet",
        pending_id=pending.id,
    )
    err.status = exc.status
    return err
