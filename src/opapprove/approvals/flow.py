"""The approval flow as a resumable state machine (design.md, "The pending grant").

Every transition is committed to the store before the next network call, so a crash at
any point leaves a row that ``replay`` carries on from. The one step that moves money,
creating the outgoing payment, is guarded twice: ``paying`` is committed first and a
replay from ``paying`` looks for the payment already made for the quote; and a lease
keeps two processes (a listener and a replay, say) from driving one grant at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qs, urlencode, urlsplit

from opapprove.approvals.errors import FlowError
from opapprove.approvals.leases import Holder, new_holder
from opapprove.approvals.store import (
    FINAL_STATES,
    CachedGrant,
    Pending,
    Seller,
    StaleState,
    State,
    StoreError,
)
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import interaction, money, urls

if TYPE_CHECKING:
    import httpx

    from opapprove.approvals.store import Store
    from opapprove.openpayments.client import Exchange, OpenPaymentsClient
    from opapprove.settings import Settings

EventHook = Callable[[str, Pending, dict[str, Any]], Awaitable[None] | None]

INCOMING_ACTIONS = ["create", "read", "complete"]
QUOTE_ACTIONS = ["create", "read"]
# ``list`` lets a replay find a payment that was made before a crash (money moves once).
OUTGOING_ACTIONS = ["create", "read", "list"]
INCOMING_ACCESS: dict[str, Any] = {"type": "incoming-payment", "actions": INCOMING_ACTIONS}
QUOTE_ACCESS: dict[str, Any] = {"type": "quote", "actions": QUOTE_ACTIONS}
TOO_FAST_RETRIES = 3
# How long a wallet address document is reused before it is fetched again.
WALLET_DOC_TTL = 300.0

SETUP_STATES = (State.STARTED, State.INCOMING_CREATED, State.QUOTE_CREATED)
# Reading a payment the wallet has not sent yet: first wait, and the longest one.
PAYMENT_POLL_FIRST = 0.05
PAYMENT_POLL_MAX = 2.0

# The leases this task's attempt holds, by grant id (an attempt may nest: re-approval).
_ATTEMPT: ContextVar[dict[str, Holder]] = ContextVar("opapprove_attempt", default={})  # noqa: B039
# Attempts running in this process: a 401 on continue is no crash while one is in flight.
_LIVE_ATTEMPTS: set[str] = set()


def _dump(model: Any) -> dict[str, Any]:
    if isinstance(model, dict):
        return model
    data: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return data


def finish_uri_for(base_url: str, pending_id: str) -> str:
    return f"{base_url.rstrip('/')}/payments/finish?{urlencode({'pendingId': pending_id})}"


def seller_from_settings(settings: Settings) -> Seller | None:
    if not (settings.seller_wallet_address_url and settings.seller_key_id):
        return None
    if not settings.seller_private_key_path:
        return None
    return Seller(
        id=settings.seller_id,
        wallet_address_url=settings.seller_wallet_address_url,
        key_id=settings.seller_key_id,
        private_key_path=str(settings.seller_private_key_path),
        created_at=0.0,
    )


def resolve_seller(settings: Settings, store: Store, seller_id: str | None = None) -> Seller:
    """The seller to act for: ``seller_id``, else the default ``settings.seller_id``.

    The store's seller of that id, else the config's ``seller_*`` seller if it has that id.
    Nothing usable is the seed's "Configure wallet address first" (kind ``config``, exit 3),
    with a hint naming what exists and what to set.
    """
    wanted = seller_id or settings.seller_id
    seller = store.get_seller(wanted)
    if seller is not None:
        return seller
    from_settings = seller_from_settings(settings)
    if from_settings is not None and from_settings.id == wanted:
        return from_settings
    known = sorted(
        {s.id for s in store.list_sellers()} | ({from_settings.id} if from_settings else set())
    )
    if seller_id is not None:
        message = f"Configure wallet address first: unknown seller {seller_id!r}"
        hint = "known sellers: " + ", ".join(known) if known else _HOW_TO_ADD
    elif missing := _incomplete_settings_seller(settings):
        message = "Configure wallet address first: the config's default seller is incomplete"
        hint = "set " + ", ".join(missing) + f" (or OPAPPROVE_{missing[0].upper()})"
    elif known:
        message = f"Configure wallet address first: no default seller {wanted!r}"
        hint = (
            f"pass --seller {known[0]}, or set seller_id in the config (known: {', '.join(known)})"
        )
    else:
        message = f"Configure wallet address first: no seller {wanted!r} is set up"
        hint = _HOW_TO_ADD
    raise FlowError(message, hint=hint, kind="config")


_HOW_TO_ADD = (
    "run `opapprove seller add ID --wallet URL --key-id KID --key FILE` (or `opapprove seller"
    " keygen --seller ID --wallet URL`), or set seller_wallet_address_url, seller_key_id and"
    " seller_private_key_path in the config"
)


def _incomplete_settings_seller(settings: Settings) -> list[str]:
    names = {
        "seller_wallet_address_url": settings.seller_wallet_address_url,
        "seller_key_id": settings.seller_key_id,
        "seller_private_key_path": settings.seller_private_key_path,
    }
    if not any(names.values()):
        return []
    return [name for name, value in names.items() if not value]


def is_expired(quote: dict[str, Any] | None, now: float) -> bool:
    if not quote or not quote.get("expiresAt"):
        return False
    from datetime import datetime

    try:
        expires = datetime.fromisoformat(str(quote["expiresAt"]).replace("Z", "+00:00"))
    except ValueError:
        return False
    return expires.timestamp() <= now


class Flow:
    """Drives pending grants through the state machine; one instance per command or server."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        on_exchange: Callable[[Exchange], None] | None = None,
        on_event: EventHook | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lease_seconds: float | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.on_exchange = on_exchange
        self.on_event = on_event
        self.transport = transport
        self.clock = clock
        self.sleep = sleep
        self.lease_seconds = lease_seconds or max(60.0, float(settings.timeout) * 6)
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._clients: dict[str, OpenPaymentsClient] = {}
        self._wallet_docs: dict[str, tuple[float, dict[str, Any]]] = {}

    # ------------------------------------------------------------------ plumbing

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    async def __aenter__(self) -> Flow:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def client_for(self, seller: Seller) -> OpenPaymentsClient:
        client = self._clients.get(seller.id)
        if client is None:
            from opapprove.approvals.sellers import load_key
            from opapprove.openpayments.client import OpenPaymentsClient

            try:
                key = load_key(seller)
            except op_errors.KeyLoadError as exc:
                raise FlowError(
                    f"seller {seller.id!r}: {exc.message}", hint=exc.hint, kind="config"
                ) from exc
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
            self._clients[seller.id] = client
        return client

    def _seller_of(self, pending: Pending) -> Seller:
        return resolve_seller(self.settings, self.store, pending.seller_id)

    async def _emit(self, kind: str, pending: Pending, **data: Any) -> None:
        if kind == "payment.failed":
            # Every side exit (rejected, cancelled, expired, failed) passes here: the
            # seller's incoming payment would otherwise stay pending at the wallet for good.
            await self._close_incoming(pending)
        if self.on_event is None:
            return
        result = self.on_event(kind, pending, data)
        if result is not None:
            await result

    async def _close_incoming(self, pending: Pending) -> None:
        """Complete the incoming payment of a grant that ended unpaid (best effort, logged)."""
        url, seller_doc = pending.incoming_payment_url, pending.seller_doc or {}
        if not url or "authServer" not in seller_doc:
            return
        try:
            seller = self._seller_of(pending)
            client = self.client_for(seller)
            await self._with_grant(
                client,
                seller,
                seller_doc["authServer"],
                INCOMING_ACCESS,
                lambda token: client.complete_incoming_payment(url, token),
            )
            outcome = "completed"
        except op_errors.ResponseError as exc:
            # 409 wrong state: it was completed (or expired) already, which is the aim.
            outcome = "already closed" if exc.status == 409 else f"refused: {exc.message}"
        except (op_errors.OpenPaymentsError, FlowError) as exc:
            outcome = f"not closed: {exc}"
        self.store.add_event(pending.id, "incoming_payment_closed", {"outcome": outcome})

    def _get(self, pending_id: str) -> Pending:
        # Undecodable bytes from a URL or argv arrive as lone surrogates SQLite cannot take.
        known = (
            pending_id.isprintable()
            and pending_id.encode("utf-8", "replace").decode("utf-8") == pending_id
        )
        pending = self.store.get_pending(pending_id) if known and len(pending_id) < 200 else None
        if pending is None:
            raise FlowError(
                f"unknown pendingId {pending_id[:60]!r}",
                hint="list grants with `opapprove pending list`",
                kind="input",
            )
        return pending

    def _move(
        self,
        pending: Pending,
        to: State,
        *,
        expect: State | tuple[State, ...] | None = None,
        event: str | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Pending:
        return self.store.transition(
            pending.id,
            to,
            expect=expect if expect is not None else pending.state,
            event=event,
            data=data,
            **fields,
        )

    def _fail(self, pending: Pending, message: str) -> Pending:
        try:
            return self._move(
                pending, State.FAILED, event="failed", data={"error": message}, last_error=message
            )
        except StaleState:
            return self._get(pending.id)

    @contextlib.asynccontextmanager
    async def _leased(
        self, pending_id: str, busy: str, *, hint: str | None = None
    ) -> AsyncIterator[Holder]:
        """Hold the grant's lease for one attempt; FlowError ``busy`` if another has it.

        Re-entrant within an attempt (a re-approval sets the grant up again under the lease
        it already holds); renewed while the attempt runs, so a slow wallet never lets a
        second attempt in beside a live one.
        """
        held = _ATTEMPT.get()
        if pending_id in held:
            yield held[pending_id]
            return
        holder = new_holder(self.holder)
        if not self.store.acquire_lease(pending_id, holder, self.lease_seconds):
            raise FlowError(
                busy,
                hint=hint
                or f"wait for it; if it crashed, retry: a stopped process's lease on this host"
                f" is taken at once, another host's after {int(self.lease_seconds)} s",
                kind="busy",
                pending_id=pending_id,
            )
        token = _ATTEMPT.set({**held, pending_id: holder})
        _LIVE_ATTEMPTS.add(holder.id)
        renewal = asyncio.create_task(self._renew_lease(pending_id, holder))
        try:
            yield holder
        finally:
            renewal.cancel()
            _LIVE_ATTEMPTS.discard(holder.id)
            _ATTEMPT.reset(token)
            self.store.release_lease(pending_id, holder)

    async def _renew_lease(self, pending_id: str, holder: Holder) -> None:
        # Real time, not self.sleep: tests that skip the flow's waits must not spin here.
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if not self.store.acquire_lease(pending_id, holder, self.lease_seconds):
                    return  # taken over: the state machine's expected states still guard us
            except StoreError:
                return

    # ------------------------------------------------------------------ start (steps 1-7)

    async def start_quote(
        self,
        *,
        offer_id: str,
        buyer_wallet: str,
        amount: str,
        seller_id: str | None = None,
        poll: bool = False,
    ) -> Pending:
        if not buyer_wallet or not buyer_wallet.strip():
            raise FlowError(
                "Configure wallet address first: no buyer wallet address was given",
                hint="pass the buyer's wallet address, e.g. --buyer https://ilp.example/alice",
                kind="input",
            )
        try:
            buyer = urls.parse_wallet_address(buyer_wallet, allow_http=self._allow_http)
        except op_errors.WalletAddressError as exc:
            raise FlowError(
                f"Invalid wallet address: {exc.message}", hint=exc.hint, kind="input"
            ) from exc
        try:
            text = money.check_decimal(amount)
        except op_errors.AmountError as exc:
            raise FlowError(f"invalid amount: {exc.message}", hint=exc.hint, kind="input") from exc
        if not any(ch in "123456789" for ch in text):
            raise FlowError(
                f"invalid amount: {amount.strip()!r} is zero",
                hint="pay more than nothing, e.g. --amount 0.01",
                kind="input",
            )
        if not offer_id.strip():
            raise FlowError("the offer id is empty", hint="pass --offer ID", kind="input")
        seller = resolve_seller(self.settings, self.store, seller_id)
        client = self.client_for(seller)  # a broken key fails here, before anything is stored
        # Both wallet documents (cached, and needed next anyway) before a row exists: a typo in
        # an address or an amount finer than the wallet's scale leaves nothing to clean up.
        buyer_doc, seller_doc = await self._check_wallets(client, buyer, seller)
        try:
            money.Amount.parse(text, seller_doc["assetCode"], int(seller_doc["assetScale"]))
        except op_errors.AmountError as exc:
            raise FlowError(
                f"invalid amount: {exc.message}",
                hint=f"{seller.wallet_address_url} counts {seller_doc['assetCode']} to "
                f"{seller_doc['assetScale']} decimal places; round the amount to that",
                kind="input",
            ) from exc
        pending = self.store.create_pending(
            seller_id=seller.id,
            offer_id=offer_id,
            buyer_wallet=buyer,
            amount=amount.strip(),
            seller_wallet=seller.wallet_address_url,
            poll=poll,
        )
        pending = self.store.update(
            pending.id, event="wallets_fetched", buyer_doc=buyer_doc, seller_doc=seller_doc
        )
        return await self._setup(pending, fresh=True)

    async def _check_wallets(
        self, client: OpenPaymentsClient, buyer: str, seller: Seller
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both wallet documents, or a FlowError that names the address to fix."""

        async def fetch(url: str, whose: str) -> dict[str, Any]:
            try:
                return await self._wallet_doc(client, url)
            except op_errors.OpenPaymentsError as exc:
                fix = (
                    f"check the buyer's wallet address {url} (http or https, host, port, path)"
                    if whose == "buyer"
                    else f"check seller {seller.id}'s wallet address {url} "
                    f"(`opapprove seller add {seller.id} --replace ...`)"
                )
                prefix = (
                    "Invalid wallet address"
                    if _is_wallet_problem(exc)
                    else "Failed to initialize payment"
                )
                raise FlowError(
                    f"{prefix}: {exc.message}",
                    hint=f"{exc.hint + '; ' if exc.hint else ''}{fix}; nothing was stored",
                    kind="transport" if isinstance(exc, op_errors.TransportError) else "input",
                    status=getattr(exc, "status", None),
                ) from exc

        buyer_doc, seller_doc = await asyncio.gather(
            fetch(buyer, "buyer"), fetch(seller.wallet_address_url, "seller")
        )
        return buyer_doc, seller_doc

    @property
    def _allow_http(self) -> bool:
        return bool(self.settings.allow_http)

    async def _setup(self, pending: Pending, *, fresh: bool = False) -> Pending:
        """Steps 1-7 from wherever ``pending`` stopped; ends awaiting approval.

        Under the grant's lease, so a replay cannot race the `quote start` still setting it
        up (two incoming payments or quotes for one grant)."""
        busy = f"another opapprove process is setting up grant {pending.id} right now"
        async with self._leased(pending.id, busy):
            try:
                return await self._setup_leased(self._get(pending.id), fresh=fresh)
            except StaleState as exc:
                raise FlowError(
                    f"grant {pending.id} was moved on by another process while being set up",
                    hint="see `opapprove pending show`",
                    kind="busy",
                    pending_id=pending.id,
                ) from exc

    async def _setup_leased(self, pending: Pending, *, fresh: bool) -> Pending:
        seller = self._seller_of(pending)
        client = self.client_for(seller)
        try:
            pending = await self._fetch_wallets(pending, client)
            if pending.state == State.STARTED:
                # Both non-interactive grants at once: they only need the wallet documents.
                await asyncio.gather(
                    self._grant_token(
                        client, seller, (pending.seller_doc or {})["authServer"], INCOMING_ACCESS
                    ),
                    self._grant_token(
                        client, seller, (pending.buyer_doc or {})["authServer"], QUOTE_ACCESS
                    ),
                )
                pending = await self._create_incoming(pending, client, seller)
            if pending.state == State.INCOMING_CREATED or (
                pending.state == State.QUOTE_CREATED and is_expired(pending.quote, self.clock())
            ):
                pending = await self._create_quote(pending, client, seller)
            if pending.state == State.QUOTE_CREATED:
                pending = await self._request_outgoing_grant(pending, client, seller)
        except op_errors.OpenPaymentsError as exc:
            unknown_outcome = isinstance(exc, op_errors.TransportError) or (
                isinstance(exc, op_errors.ResponseError) and exc.status >= 500
            )
            if unknown_outcome:
                # The server may or may not have acted; the row stays where it is for replay.
                self.store.record_error(pending.id, str(exc))
                raise FlowError(
                    f"Failed to initialize payment: {exc.message}",
                    hint=(exc.hint or "check the wallet is reachable")
                    + f"; resume with `opapprove pending replay {pending.id}`",
                    kind="transport" if isinstance(exc, op_errors.TransportError) else "wallet",
                    status=getattr(exc, "status", None),
                    pending_id=pending.id,
                ) from exc
            failed = self._fail(self._get(pending.id), str(exc))
            await self._close_incoming(failed)
            prefix = (
                "Invalid wallet address"
                if _is_wallet_problem(exc)
                else ("Failed to initialize payment")
            )
            raise FlowError(
                f"{prefix}: {exc.message}",
                hint=exc.hint,
                kind="wallet" if isinstance(exc, op_errors.ResponseError) else "protocol",
                status=getattr(exc, "status", None),
                code=getattr(exc, "code", None),
                pending_id=failed.id,
            ) from exc
        if fresh or pending.state == State.AWAITING_APPROVAL:
            await self._emit("approval.needed", pending, approvalUrl=pending.interact_redirect)
        return pending

    async def _fetch_wallets(self, pending: Pending, client: OpenPaymentsClient) -> Pending:
        if pending.buyer_doc and pending.seller_doc:
            return pending
        seller_url = pending.seller_wallet or self._seller_of(pending).wallet_address_url
        buyer_doc, seller_doc = await asyncio.gather(
            self._wallet_doc(client, pending.buyer_wallet),
            self._wallet_doc(client, seller_url),
        )
        return self.store.update(
            pending.id, event="wallets_fetched", buyer_doc=buyer_doc, seller_doc=seller_doc
        )

    async def _wallet_doc(self, client: OpenPaymentsClient, url: str) -> dict[str, Any]:
        # A bulk replay, a busy listener or the next `quote start` asks for the same few
        # wallets again and again; their documents hardly ever change, so one fetch serves
        # for a while: in this Flow's memory, then in the store for the next process.
        now = self.clock()
        hit = self._wallet_docs.get(url)
        if hit is not None and 0 <= now - hit[0] < WALLET_DOC_TTL:
            return dict(hit[1])
        stored = self.store.get_wallet_document(url, max_age=WALLET_DOC_TTL, now=now)
        if isinstance(stored, dict):
            self._wallet_docs[url] = (now, stored)
            return dict(stored)
        doc = _dump(await client.get_wallet_address(url))
        self._wallet_docs[url] = (now, doc)
        self.store.put_wallet_document(url, doc, now=now)
        return dict(doc)

    async def _grant_token(
        self,
        client: OpenPaymentsClient,
        seller: Seller,
        auth_server: str,
        access: dict[str, Any],
        *,
        fresh: bool = False,
    ) -> str:
        """A non-interactive grant's token, reused from the cache until it expires."""
        key = "|".join(
            [
                auth_server,
                seller.wallet_address_url,
                seller.key_id,
                access["type"],
                ",".join(access["actions"]),
                access.get("identifier", ""),
            ]
        )
        if not fresh:
            cached = self.store.get_cached_grant(key, now=self.clock())
            if cached is not None:
                return cached.access_token
        from opapprove.openpayments.client import is_pending
        from opapprove.openpayments.models import GrantRequest

        body = GrantRequest.model_validate(
            {"access_token": {"access": [access]}, "client": seller.wallet_address_url}
        )
        grant = await client.request_grant(auth_server, body)
        if is_pending(grant):
            raise FlowError(
                f"the wallet asks for interaction on a {access['type']} grant",
                hint="this wallet requires consent for it; opapprove expects it non-interactive",
                kind="wallet",
            )
        data = _dump(grant)
        token = data["access_token"]
        expires_in = token.get("expires_in")
        now = self.clock()
        self.store.put_cached_grant(
            CachedGrant(
                key=key,
                auth_server=auth_server,
                access_token=token["value"],
                manage_url=token["manage"],
                expires_at=now + float(expires_in) if expires_in else None,
                access=token.get("access", []),
                created_at=now,
            )
        )
        return str(token["value"])

    async def _with_grant(
        self,
        client: OpenPaymentsClient,
        seller: Seller,
        auth_server: str,
        access: dict[str, Any],
        call: Callable[[str], Awaitable[Any]],
    ) -> Any:
        token = await self._grant_token(client, seller, auth_server, access)
        try:
            return await call(token)
        except op_errors.ResourceError as exc:
            if not _token_dead(exc):
                raise
        # The cached token expired or was revoked at the server: get a fresh grant once.
        token = await self._grant_token(client, seller, auth_server, access, fresh=True)
        return await call(token)

    async def _create_incoming(
        self, pending: Pending, client: OpenPaymentsClient, seller: Seller
    ) -> Pending:
        from opapprove.openpayments.models import CreateIncomingPayment

        seller_doc = pending.seller_doc or {}
        try:
            incoming_amount = money.Amount.parse(
                pending.amount, seller_doc["assetCode"], int(seller_doc["assetScale"])
            )
        except op_errors.AmountError as exc:
            raise FlowError(
                f"invalid amount: {exc.message}",
                hint=exc.hint,
                kind="input",
                pending_id=pending.id,
            ) from exc
        body = CreateIncomingPayment.model_validate(
            {
                "walletAddress": seller_doc["id"],
                "incomingAmount": incoming_amount.to_wire(),
                "metadata": {"offerId": pending.offer_id, "pendingId": pending.id},
            }
        )
        incoming = await self._with_grant(
            client,
            seller,
            seller_doc["authServer"],
            INCOMING_ACCESS,
            lambda token: client.create_incoming_payment(seller_doc["resourceServer"], token, body),
        )
        data = _dump(incoming)
        return self._move(
            pending,
            State.INCOMING_CREATED,
            event="incoming_payment_created",
            data={"incomingPayment": data["id"]},
            incoming_payment_url=data["id"],
            incoming_payment=_public_incoming(data),
        )

    async def _create_quote(
        self, pending: Pending, client: OpenPaymentsClient, seller: Seller
    ) -> Pending:
        data = await self._new_quote(pending, client, seller)
        return self._move(
            pending,
            State.QUOTE_CREATED,
            expect=(State.INCOMING_CREATED, State.QUOTE_CREATED),
            event="quote_created",
            data={"quote": data["id"], "debitAmount": data["debitAmount"]},
            quote_url=data["id"],
            quote=data,
            debit_amount=data["debitAmount"],
            receive_amount=data["receiveAmount"],
        )

    async def _new_quote(
        self, pending: Pending, client: OpenPaymentsClient, seller: Seller
    ) -> dict[str, Any]:
        """A quote from the buyer's wallet for the grant's incoming payment."""
        from opapprove.openpayments.models import CreateQuote

        buyer_doc = pending.buyer_doc or {}
        body = CreateQuote.model_validate(
            {
                "walletAddress": buyer_doc["id"],
                "receiver": pending.incoming_payment_url,
                "method": "ilp",
            }
        )
        return _dump(
            await self._with_grant(
                client,
                seller,
                buyer_doc["authServer"],
                QUOTE_ACCESS,
                lambda token: client.create_quote(buyer_doc["resourceServer"], token, body),
            )
        )

    async def _request_outgoing_grant(
        self, pending: Pending, client: OpenPaymentsClient, seller: Seller
    ) -> Pending:
        from opapprove.openpayments.client import is_pending
        from opapprove.openpayments.models import GrantRequest

        buyer_doc = pending.buyer_doc or {}
        grant_url = buyer_doc["authServer"]
        nonce = pending.client_nonce or interaction.new_nonce()
        finish_uri = pending.finish_uri or finish_uri_for(self.settings.base_url, pending.id)
        # What the hash check needs is committed before the request leaves.
        pending = self.store.update(
            pending.id, client_nonce=nonce, finish_uri=finish_uri, grant_url=grant_url
        )
        interact: dict[str, Any] = {"start": ["redirect"]}
        if not pending.poll:
            interact["finish"] = {"method": "redirect", "uri": finish_uri, "nonce": nonce}
        body = GrantRequest.model_validate(
            {
                "access_token": {
                    "access": [
                        {
                            "type": "outgoing-payment",
                            "actions": OUTGOING_ACTIONS,
                            "identifier": buyer_doc["id"],
                            "limits": {
                                "debitAmount": pending.debit_amount,
                                "receiver": pending.incoming_payment_url,
                            },
                        }
                    ]
                },
                "client": seller.wallet_address_url,
                "interact": interact,
            }
        )
        grant = await client.request_grant(grant_url, body)
        data = _dump(grant)
        cont = data["continue"]
        if is_pending(grant):
            return self._move(
                pending,
                State.AWAITING_APPROVAL,
                event="approval_requested",
                data={"redirect": data["interact"]["redirect"]},
                interact_redirect=data["interact"]["redirect"],
                server_finish_nonce=data["interact"].get("finish"),
                continue_uri=cont["uri"],
                continue_token=cont["access_token"]["value"],
                continue_wait=cont.get("wait"),
                approval_expires_at=self.clock() + float(self.settings.approval_timeout),
            )
        # A wallet that grants without interaction: go straight on to paying.
        return self._move(
            pending,
            State.GRANT_ISSUED,
            event="grant_issued_without_interaction",
            **_token_fields(data, self.clock()),
        )

    # ------------------------------------------------------------------ finish (step 8)

    async def finish_url(self, url: str) -> Pending:
        try:
            parts = urlsplit(url.strip())
            query = parse_qs(
                parts.query, keep_blank_values=True, max_num_fields=20, strict_parsing=False
            )
        except ValueError as exc:
            raise FlowError(
                f"that is not a finish redirect URL ({exc})",
                hint="paste the whole URL the wallet sent the browser to",
                kind="input",
            ) from exc

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        pending_id = one("pendingId")
        if not pending_id:
            raise FlowError(
                "the URL has no pendingId",
                hint="paste the whole URL the wallet redirected to",
                kind="input",
            )
        return await self.finish(
            pending_id,
            interact_ref=one("interact_ref"),
            hash=one("hash"),
            result=one("result"),
            message=one("message"),
        )

    async def finish(
        self,
        pending_id: str,
        *,
        interact_ref: str | None = None,
        hash: str | None = None,
        result: str | None = None,
        message: str | None = None,
    ) -> Pending:
        """Finish from a redirect: verify it, then continue the grant and pay.

        A ``result`` (unverified) is recorded and answered with FlowError; the grant stays
        open. The listener uses :meth:`accept_approval` and :meth:`complete` separately, so
        the buyer's page does not wait for the payment.
        """
        pending = self._get(pending_id)
        if pending.state == State.AWAITING_APPROVAL and self._approval_expired(pending):
            # One expiry rule (see _expire): too late is too late, even with a valid hash.
            return await self._expire(pending, decided_here=True)
        if result:
            pending = await self.note_result(pending_id, result, message)
            raise _result_error(pending, result, message)
        pending = self.accept_approval(pending_id, interact_ref=interact_ref, hash=hash)
        if pending.state in FINAL_STATES:
            return pending
        return await self._after_approval(pending)

    async def complete(self, pending_id: str) -> Pending:
        """Continue and pay a grant whose approval was accepted (exactly once; see _leased)."""
        pending = self._get(pending_id)
        if pending.state in FINAL_STATES:
            return pending
        return await self._after_approval(pending)

    def accept_approval(
        self, pending_id: str, *, interact_ref: str | None, hash: str | None
    ) -> Pending:
        """Check a redirect's ``interact_ref`` and ``hash`` and commit ``approved``; no network.

        The same valid redirect again (a double click, a refresh, a second listener) gives
        the grant as it stands; anything else that does not verify is FlowError.
        """
        pending = self._get(pending_id)
        if pending.state == State.AWAITING_APPROVAL and self._approval_expired(pending):
            # Too late (see _expire); without network here, the next status or replay
            # cancels it at the wallet and marks it expired.
            self._refuse(pending, "callback_refused", "approval expired")
            raise FlowError(
                "Payment approval expired",
                hint="start a new quote",
                kind="expired",
                pending_id=pending.id,
            )
        if not interact_ref:
            raise FlowError(
                "the finish redirect has neither interact_ref nor result",
                hint="paste the whole URL the wallet redirected to",
                kind="input",
                pending_id=pending.id,
            )
        if pending.interact_ref is not None:
            if pending.interact_ref != interact_ref or not self._hash_ok(
                pending, interact_ref, hash
            ):
                self._refuse(pending, "callback_refused", "interact_ref does not match this grant")
                raise FlowError(
                    "this grant was already approved with another interact_ref",
                    hint="the callback is forged or replayed; nothing was changed",
                    kind="verification",
                    pending_id=pending.id,
                )
            return pending
        if pending.state != State.AWAITING_APPROVAL:
            self._refuse(pending, "callback_refused", f"grant is {pending.state}")
            raise _not_awaiting(pending)
        try:
            self._check_hash(pending, interact_ref, hash)
        except op_errors.InteractionHashError as exc:
            self._refuse(pending, "callback_refused", "hash mismatch")
            raise FlowError(
                exc.message, hint=exc.hint, kind="verification", pending_id=pending.id
            ) from exc
        try:
            return self._move(
                pending,
                State.APPROVED,
                expect=State.AWAITING_APPROVAL,
                event="approved",
                interact_ref=interact_ref,
            )
        except StaleState:
            # Another delivery took this callback first; carry on from what it committed.
            pending = self._get(pending.id)
            if pending.interact_ref != interact_ref:
                raise _not_awaiting(pending) from None
            return pending

    def _check_hash(self, pending: Pending, interact_ref: str, received: str | None) -> None:
        if not (pending.client_nonce and pending.server_finish_nonce):
            # Nonces the wallet never saw would make the hash computable by anyone.
            raise op_errors.InteractionHashError(
                "this grant holds no finish nonces to check the redirect against",
                hint="it was not started for a finish redirect; nothing was paid",
            )
        interaction.verify_finish_hash(
            received,
            pending.client_nonce,
            pending.server_finish_nonce,
            interact_ref,
            pending.grant_url or "",
        )

    def _hash_ok(self, pending: Pending, interact_ref: str, received: str | None) -> bool:
        try:
            self._check_hash(pending, interact_ref, received)
        except op_errors.InteractionHashError:
            return False
        return True

    def _refuse(self, pending: Pending, kind: str, why: str) -> None:
        self.store.add_event(pending.id, kind, {"reason": why})

    async def note_result(self, pending_id: str, result: str, message: str | None) -> Pending:
        """Record a redirect's ``result=``; the grant stays as it is (see approvals.results).

        Only the grant's own expiry ends it here: an approval past its time is expired,
        whatever the redirect says.
        """
        from opapprove.approvals.results import MAX_RECORDED, classify

        pending = self._get(pending_id)
        # The redirect's words come from the URL: keep them to one short, printable line.
        result, message = _one_line(result), _one_line(message) if message else None
        data = {
            "result": result,
            "message": message,
            "meaning": classify(result).kind,
            "verified": False,
            "state": str(pending.state),
        }
        noted = [e for e in self.store.events(pending.id) if e.kind == "wallet_result"]
        if len(noted) < MAX_RECORDED:
            self.store.add_event(pending.id, "wallet_result", data)
        if pending.state == State.AWAITING_APPROVAL and self._approval_expired(pending):
            await self._expire(pending, data)
        return pending

    async def _expire(
        self, pending: Pending, data: dict[str, Any] | None = None, *, decided_here: bool = False
    ) -> Pending:
        """Expire a grant awaiting approval.

        When opapprove decides it (``decided_here``: its approval_timeout passed) the grant
        is cancelled at the wallet first, so the buyer cannot approve it there afterwards;
        if the wallet cannot be reached the grant stays as it is (a FlowError of kind
        ``transport``) and the next command that finds it expired tries again. A wallet
        that said so itself has expired it already.
        """
        wallet = await self._cancel_at_wallet(pending) if decided_here else "expired there"
        if wallet.startswith("unreachable"):
            raise FlowError(
                f"grant {pending.id} expired, but the wallet could not be told: {wallet}",
                hint="it stays awaiting approval until the wallet answers; try again",
                kind="transport",
                pending_id=pending.id,
            )
        pending = self._move(
            pending,
            State.EXPIRED,
            event="expired",
            data={**(data or {}), "wallet": wallet},
            last_error="Payment approval expired",
        )
        await self._emit("payment.failed", pending, reason="expired")
        raise FlowError(
            "Payment approval expired",
            hint=f"start over: opapprove quote start --offer {pending.offer_id} --buyer "
            f"{pending.buyer_wallet} --amount {pending.amount}",
            kind="expired",
            pending_id=pending.id,
        )

    # ------------------------------------------------------------------ after approval

    async def _after_approval(self, pending: Pending) -> Pending:
        busy = f"another opapprove process is finishing grant {pending.id} right now"
        async with self._leased(pending.id, busy):
            pending = self._get(pending.id)
            seller = self._seller_of(pending)
            client = self.client_for(seller)
            try:
                if pending.state == State.APPROVED:
                    pending = await self._continue(pending, client)
                if pending.state in (State.GRANT_ISSUED, State.PAYING):
                    pending = await self._pay(pending, client)
                if pending.state == State.PAYMENT_CREATED:
                    pending = await self._check_payment(pending, client)
            except op_errors.TransportError as exc:
                self.store.record_error(pending.id, str(exc))
                raise FlowError(
                    f"could not finish the payment: {exc.message}",
                    hint=(exc.hint or "the wallet did not answer")
                    + f"; resume with `opapprove pending replay {pending.id}`"
                    " (it never pays twice)",
                    kind="transport",
                    pending_id=pending.id,
                ) from exc
            except op_errors.OpenPaymentsError as exc:
                self.store.record_error(pending.id, str(exc))
                raise FlowError(
                    f"could not finish the payment: {exc.message}",
                    hint=(exc.hint + "; " if exc.hint else "")
                    + f"resume with `opapprove pending replay {pending.id}`",
                    kind="wallet" if isinstance(exc, op_errors.ResponseError) else "protocol",
                    status=getattr(exc, "status", None),
                    code=getattr(exc, "code", None),
                    pending_id=pending.id,
                ) from exc
            return pending

    async def _continue(self, pending: Pending, client: OpenPaymentsClient) -> Pending:
        assert pending.continue_uri and pending.continue_token and pending.interact_ref
        await self._wait_out_continue(pending)
        # Committed before the request: the AS issues the token once, so a refusal after an
        # earlier attempt means that attempt's token was lost in a crash (see _reapprove).
        attempt = _ATTEMPT.get().get(pending.id)
        self.store.add_event(
            pending.id, "continue_sent", {"attempt": attempt.id if attempt else None}
        )
        try:
            grant = await self._continue_patiently(pending, client)
        except op_errors.GrantError as exc:
            if exc.status >= 500:
                raise  # unknown outcome: recorded by the caller, the row stays `approved`
            if _already_continued(exc):
                now = self._get(pending.id)
                if now.state != State.APPROVED:
                    return now  # another attempt was issued the token and saved it
                if self._continue_in_flight(pending, attempt):
                    raise FlowError(
                        f"another attempt is continuing grant {pending.id} right now",
                        hint="wait for it to finish; nothing was changed",
                        kind="busy",
                        pending_id=pending.id,
                    ) from exc
                if self._continued_before(pending):
                    await self._reapprove(pending, client, exc)
            failed = self._fail(pending, str(exc))
            await self._emit("payment.failed", failed, reason=exc.code or "continue_failed")
            raise FlowError(
                f"the wallet refused to continue the grant: {exc.message}",
                hint=exc.hint or "the grant was not approved, or was already continued once",
                kind="wallet",
                status=exc.status,
                code=exc.code,
                pending_id=pending.id,
            ) from exc
        data = _dump(grant)
        if "access_token" not in data:
            raise FlowError(
                "the wallet continued the grant but issued no access token",
                hint="the buyer may not have approved yet",
                kind="wallet",
                pending_id=pending.id,
            )
        return self._move(
            pending, State.GRANT_ISSUED, event="grant_issued", **_token_fields(data, self.clock())
        )

    def _continued_before(self, pending: Pending) -> bool:
        sent = [e for e in self.store.events(pending.id) if e.kind == "continue_sent"]
        return len(sent) > 1

    def _continue_in_flight(self, pending: Pending, mine: Holder | None) -> bool:
        """Whether an earlier continue of this grant belongs to an attempt still running here.

        Other processes' attempts cannot be: this attempt holds the lease, and a live
        attempt keeps renewing its own.
        """
        for event in self.store.events(pending.id):
            other = event.data.get("attempt") if event.kind == "continue_sent" else None
            if other and (mine is None or other != mine.id) and other in _LIVE_ATTEMPTS:
                return True
        return False

    async def _reapprove(
        self, pending: Pending, client: OpenPaymentsClient, exc: op_errors.GrantError
    ) -> NoReturn:
        """The token went to a run that died before committing it: ask for a new grant.

        No money has moved (nothing pays without that token), so the old grant is revoked
        and the buyer approves a fresh one; the quote is reused unless it expired.
        """
        assert pending.continue_uri and pending.continue_token
        old = await _quietly(client.cancel_grant(pending.continue_uri, pending.continue_token))
        pending = self._move(
            pending,
            State.QUOTE_CREATED,
            expect=State.APPROVED,
            event="approval_restarted",
            data={"reason": exc.description or exc.code or str(exc), "oldGrant": old},
            client_nonce=interaction.new_nonce(),
            interact_ref=None,
            interact_redirect=None,
            server_finish_nonce=None,
            continue_uri=None,
            continue_token=None,
            continue_wait=None,
            approval_expires_at=None,
        )
        pending = await self._setup(pending)
        raise FlowError(
            "the wallet issued this grant's token to an earlier run that stopped before saving"
            " it, so the buyer has to approve again",
            hint=f"send the buyer the new approval URL {pending.interact_redirect} , then"
            f" `opapprove finish URL` with the wallet's redirect (or `opapprove pending cancel"
            f" {pending.id}`)",
            kind="waiting",
            pending_id=pending.id,
        )

    async def _wait_out_continue(self, pending: Pending) -> None:
        """Sleep until the wallet's ``continue.wait`` has passed: sooner gets ``too_fast``."""
        wait = float(pending.continue_wait or 0)
        if wait and pending.approval_expires_at:
            granted_at = pending.approval_expires_at - float(self.settings.approval_timeout)
            early = granted_at + wait - self.clock()
            if early > 0:
                await self.sleep(min(early, wait))

    async def _continue_patiently(self, pending: Pending, client: OpenPaymentsClient) -> Any:
        """Continue; a wallet that still finds it too soon gets asked again, later."""
        wait = float(pending.continue_wait or 0)
        for attempt in range(TOO_FAST_RETRIES + 1):
            try:
                return await client.continue_grant(
                    pending.continue_uri or "",
                    pending.continue_token or "",
                    pending.interact_ref,
                )
            except op_errors.GrantError as exc:
                if exc.code != "too_fast" or attempt == TOO_FAST_RETRIES:
                    raise
                self.store.add_event(pending.id, "too_fast", {"wait": wait})
                await self.sleep(max(wait, 1.0) * 2**attempt)
        raise AssertionError("unreachable")

    async def _pay(self, pending: Pending, client: OpenPaymentsClient) -> Pending:
        buyer_doc = pending.buyer_doc or {}
        rs = buyer_doc["resourceServer"]
        if pending.state == State.PAYING:
            existing = await self._find_payment(pending, client)
            if existing is not None:
                return self._move(
                    pending,
                    State.PAYMENT_CREATED,
                    event="payment_found",
                    data={"outgoingPayment": existing["id"]},
                    outgoing_payment_url=existing["id"],
                    outgoing_payment=existing,
                )
        else:
            pending = self._move(pending, State.PAYING, expect=State.GRANT_ISSUED, event="paying")
        pending = self._get(pending.id)
        if is_expired(pending.quote, self.clock()):
            pending = await self._requote(pending, client)
        from opapprove.openpayments.models import CreateOutgoingPayment

        body = CreateOutgoingPayment.model_validate(
            {
                "walletAddress": buyer_doc["id"],
                "quoteId": pending.quote_url,
                "metadata": {"offerId": pending.offer_id, "pendingId": pending.id},
            }
        )
        try:
            payment = await self._with_access_token(
                pending, client, lambda token: client.create_outgoing_payment(rs, token, body)
            )
        except op_errors.ResourceError as exc:
            if exc.status >= 500:
                # The wallet may have made the payment before it failed: like a dropped
                # connection, stay in `paying` so a replay looks for it before paying again.
                self.store.record_error(pending.id, str(exc))
                raise FlowError(
                    f"the wallet failed while creating the payment: {exc.message}",
                    hint=f"replay it with `opapprove pending replay {pending.id}`: it checks"
                    " for a payment already made before making one",
                    kind="wallet",
                    status=exc.status,
                    code=exc.code,
                    pending_id=pending.id,
                ) from exc
            failed = self._fail(self._get(pending.id), str(exc))
            await self._emit("payment.failed", failed, reason=exc.description or "refused")
            raise FlowError(
                f"the wallet refused the outgoing payment: {exc.message}",
                hint=exc.hint,
                kind="wallet",
                status=exc.status,
                code=exc.code,
                pending_id=pending.id,
            ) from exc
        data = _dump(payment)
        return self._move(
            self._get(pending.id),
            State.PAYMENT_CREATED,
            expect=State.PAYING,
            event="payment_created",
            data={"outgoingPayment": data["id"]},
            outgoing_payment_url=data["id"],
            outgoing_payment=data,
        )

    async def _requote(self, pending: Pending, client: OpenPaymentsClient) -> Pending:
        """The buyer approved after the quote expired (quotes live 5 min, approvals 10):
        quote again for the same incoming payment and pay if it fits the approved limit."""
        quote = await self._new_quote(pending, client, self._seller_of(pending))
        approved = money.Amount.from_wire(pending.debit_amount)
        debit = money.Amount.from_wire(quote["debitAmount"])
        if not debit.same_asset(approved) or debit.value > approved.value:
            failed = self._fail(
                pending, f"the new quote debits {debit}, more than the {approved} approved"
            )
            await self._emit("payment.failed", failed, reason="requote_over_limit")
            raise FlowError(
                f"the quote expired and a new one debits {debit}, more than the {approved}"
                " the buyer approved",
                hint="start a new quote so the buyer can approve the new amount",
                kind="wallet",
                pending_id=pending.id,
            )
        # Committed before the payment is made, so a replay searches for the right quote.
        return self.store.update(
            pending.id,
            event="requoted",
            data={"old": pending.quote_url, "quote": quote["id"], "debitAmount": debit.to_wire()},
            quote_url=quote["id"],
            quote=quote,
            receive_amount=quote["receiveAmount"],
        )

    async def _find_payment(
        self, pending: Pending, client: OpenPaymentsClient
    ) -> dict[str, Any] | None:
        """The payment a crashed run may already have made for this quote, if any."""
        buyer_doc = pending.buyer_doc or {}

        async def search(token: str) -> dict[str, Any] | None:
            async for payment in client.iter_outgoing_payments(
                buyer_doc["resourceServer"], token, buyer_doc["id"]
            ):
                data = _dump(payment)
                metadata = data.get("metadata") or {}
                if data.get("quoteId") == pending.quote_url or (
                    isinstance(metadata, dict) and metadata.get("pendingId") == pending.id
                ):
                    return data
            return None

        found: dict[str, Any] | None = await self._with_access_token(pending, client, search)
        self.store.add_event(
            pending.id, "payment_search", {"found": found["id"] if found else None}
        )
        return found

    async def _with_access_token(
        self, pending: Pending, client: OpenPaymentsClient, call: Callable[[str], Awaitable[Any]]
    ) -> Any:
        # The row, not the caller's copy: an earlier call may have rotated the token.
        pending = self._get(pending.id)
        assert pending.access_token
        used = pending.access_token
        try:
            return await call(used)
        except op_errors.ResourceError as exc:
            if not _token_dead(exc):
                raise
            refused = exc
        # 403 Inactive Token (Rafiki's answer for a rotated-away, revoked or expired token).
        pending = self._get(pending.id)
        if pending.access_token and pending.access_token != used:
            # Another process rotated it meanwhile: its token is the live one.
            return await call(pending.access_token)
        if not pending.token_manage_url:
            raise _regrant_needed(pending, refused, "the wallet gave no manage URL to rotate it")
        try:
            rotated = _dump(await client.rotate_token(pending.token_manage_url, used))
        except op_errors.GrantError as exc:
            if exc.status >= 500:
                raise
            # Rotated away or revoked: this token cannot be renewed; the buyer must approve anew.
            why = f"rotating it was refused ({exc.message})"
            raise _regrant_needed(pending, refused, why) from exc
        token = rotated.get("access_token", rotated)
        pending = self.store.update(
            pending.id,
            event="token_rotated",
            access_token=token["value"],
            token_manage_url=token["manage"],
            token_expires_at=(self.clock() + float(token["expires_in"]))
            if token.get("expires_in")
            else None,
        )
        return await call(str(token["value"]))

    async def _check_payment(self, pending: Pending, client: OpenPaymentsClient) -> Pending:
        """Read the payment until the wallet reports it sent in full, or failed.

        A wallet creates it unsent (Rafiki: ``sentAmount`` 0) and sends it once funded, so
        the reads back off from ``PAYMENT_POLL_FIRST`` s up to ``PAYMENT_POLL_MAX`` s, for
        at most the request timeout in all; still unsent then, the grant stays
        ``payment_created`` and ``status`` or ``pending replay`` looks again later.
        """
        delay, waited = PAYMENT_POLL_FIRST, 0.0
        budget = float(self.settings.timeout)
        while True:
            pending = await self._read_payment(pending, client)
            if pending.state != State.PAYMENT_CREATED or waited >= budget:
                return pending
            await self.sleep(delay)
            waited += delay
            delay = min(delay * 2, PAYMENT_POLL_MAX)

    async def _read_payment(self, pending: Pending, client: OpenPaymentsClient) -> Pending:
        assert pending.outgoing_payment_url
        payment = _dump(
            await self._with_access_token(
                pending,
                client,
                lambda token: client.get_outgoing_payment(
                    pending.outgoing_payment_url or "", token
                ),
            )
        )
        pending = self.store.update(pending.id, outgoing_payment=payment)
        if payment.get("failed"):
            failed = self._fail(pending, "the wallet gave up on the payment (failed: true)")
            await self._emit("payment.failed", failed, reason="payment_failed")
            return failed
        if sent_in_full(payment):
            done = self._move(
                pending,
                State.COMPLETED,
                event="completed",
                data={"sentAmount": payment["sentAmount"]},
            )
            await self._emit("payment.completed", done)
            return done
        return pending

    # ------------------------------------------------------------------ other entry points

    async def wait_for_approval(self, pending_id: str, *, timeout: float) -> Pending:
        """For ``--poll`` grants (no finish redirect): poll continuation until approved."""
        pending = self._get(pending_id)
        if pending.state != State.AWAITING_APPROVAL:
            return await self.replay(pending_id)
        if not pending.poll:
            raise FlowError(
                "this grant has a finish redirect and cannot be polled",
                hint="wait for the redirect with `opapprove listen`, or paste it to `finish`",
                kind="input",
                pending_id=pending.id,
            )
        if self._approval_expired(pending):
            return await self._expire(pending, decided_here=True)
        seller = self._seller_of(pending)
        client = self.client_for(seller)
        assert pending.continue_uri and pending.continue_token
        try:
            grant = await client.poll_grant(
                pending.continue_uri,
                pending.continue_token,
                wait=float(pending.continue_wait or 0),
                timeout=timeout,
                sleep=self.sleep,
                min_interval=1.0,  # a server `wait` of 0 must not make us spin
            )
        except op_errors.GrantError as exc:
            ended = _poll_ended(exc)
            if ended is None:
                raise
            state, message = ended
            failed = self._move(pending, state, event=str(state), last_error=message)
            await self._emit("payment.failed", failed, reason=str(state))
            raise FlowError(
                message, hint="start a new quote", kind="rejected", pending_id=pending.id
            ) from exc
        except op_errors.TransportError as exc:
            raise FlowError(
                f"gave up waiting for approval: {exc.message}",
                hint=exc.hint,
                kind="timeout",
                pending_id=pending.id,
            ) from exc
        pending = self._move(
            pending,
            State.GRANT_ISSUED,
            event="grant_issued",
            **_token_fields(_dump(grant), self.clock()),
        )
        return await self._after_approval(pending)

    async def refresh(self, pending_id: str) -> Pending:
        """Re-read where a grant's payment stands (``status``); completes it when sent."""
        pending = self._get(pending_id)
        if pending.state == State.PAYMENT_CREATED:
            return await self._after_approval(pending)
        if pending.state == State.AWAITING_APPROVAL and self._approval_expired(pending):
            try:
                await self._expire(pending, decided_here=True)
            except FlowError:
                return self._get(pending.id)
        return pending

    def _approval_expired(self, pending: Pending) -> bool:
        return bool(pending.approval_expires_at and self.clock() > pending.approval_expires_at)

    async def replay(self, pending_id: str) -> Pending:
        """Carry a grant on from its last committed state, never paying twice."""
        pending = self._get(pending_id)
        self.store.add_event(pending.id, "replay", {"state": str(pending.state)})
        if pending.state in FINAL_STATES:
            return pending
        if pending.state in SETUP_STATES:
            return await self._setup(pending)
        if pending.state == State.AWAITING_APPROVAL:
            if self._approval_expired(pending):
                return await self._expire(pending, decided_here=True)
            if pending.poll:
                return await self.wait_for_approval(
                    pending.id, timeout=float(pending.continue_wait or 0) + 1
                )
            raise FlowError(
                "still awaiting the buyer's approval; real wallets cannot be polled for grants"
                " with a finish redirect",
                hint=f"paste the wallet's redirect with `opapprove finish URL`, or `opapprove"
                f" pending cancel {pending.id}` and start again",
                kind="waiting",
                pending_id=pending.id,
            )
        return await self._after_approval(pending)

    async def _cancel_at_wallet(self, pending: Pending) -> str:
        """DELETE the grant's continuation: ``ok``, ``already cancelled``, or what failed.

        A second cancel is no error: Rafiki answers it 401 invalid_continuation "invalid
        grant" (an old sandbox 404), which means the grant is gone, as wanted.
        """
        if not (pending.continue_uri and pending.continue_token):
            return "nothing to cancel"
        client = self.client_for(self._seller_of(pending))
        try:
            await client.cancel_grant(pending.continue_uri, pending.continue_token)
        except op_errors.GrantError as exc:
            if exc.code == "invalid_continuation" or exc.status == 404:
                return "already cancelled"
            return f"{exc.status} {exc.description or exc.code or ''}".strip()
        except op_errors.TransportError as exc:
            return f"unreachable: {exc.message}"
        return "ok"

    async def cancel(self, pending_id: str) -> Pending:
        pending = self._get(pending_id)
        if pending.state == State.CANCELLED:
            return pending
        if pending.state in FINAL_STATES or pending.state in (State.PAYING, State.PAYMENT_CREATED):
            raise FlowError(
                f"grant {pending.id} is {pending.state}; there is nothing left to cancel",
                hint="a payment that was made cannot be cancelled here"
                if pending.state in (State.PAYING, State.PAYMENT_CREATED, State.COMPLETED)
                else None,
                kind="input",
                pending_id=pending.id,
            )
        busy = f"another opapprove process is working on grant {pending.id}"
        async with self._leased(pending.id, busy, hint="try again shortly"):
            # Read again under the lease: an attempt that held it may have paid meanwhile.
            if self._get(pending.id).state != pending.state:
                return await self.cancel(pending.id)
            notes: dict[str, Any] = {}
            at_wallet = bool(
                (pending.continue_uri and pending.continue_token)
                or (pending.access_token and pending.token_manage_url)
            )
            # A grant that never got as far as the wallet's grant has nothing to revoke there:
            # no key, no network (it may be a typo whose seller is gone since).
            if at_wallet:
                client = self.client_for(self._seller_of(pending))
                if pending.continue_uri and pending.continue_token:
                    notes["grant"] = await self._cancel_at_wallet(pending)
                if pending.access_token and pending.token_manage_url:
                    notes["token"] = await _quietly(
                        client.revoke_token(pending.token_manage_url, pending.access_token)
                    )
            told = pending.interact_redirect is not None
            pending = self._move(
                self._get(pending.id), State.CANCELLED, event="cancelled", data=notes
            )
        if told:  # the marketplace heard of it (approval.needed): say it will not be paid
            await self._emit("payment.failed", pending, reason="cancelled")
        return pending


# ---------------------------------------------------------------------- helpers


def _one_line(text: str, limit: int = 120) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return cleaned[:limit]


async def _quietly(call: Awaitable[None]) -> str:
    try:
        await call
    except op_errors.ResponseError as exc:
        return f"{exc.status} {exc.description or exc.code or ''}".strip()
    except op_errors.TransportError as exc:
        return f"unreachable: {exc.message}"
    return "ok"


def _token_fields(grant: dict[str, Any], now: float) -> dict[str, Any]:
    token = grant["access_token"]
    cont = grant.get("continue") or {}
    fields: dict[str, Any] = {
        "access_token": token["value"],
        "token_manage_url": token.get("manage"),
        "token_expires_at": now + float(token["expires_in"]) if token.get("expires_in") else None,
    }
    if cont.get("uri"):
        fields["continue_uri"] = cont["uri"]
        fields["continue_token"] = cont["access_token"]["value"]
    return fields


def _public_incoming(data: dict[str, Any]) -> dict[str, Any]:
    # The ilp sharedSecret is a secret: the store keeps the payment without it.
    return {k: v for k, v in data.items() if k != "methods"}


def _already_continued(exc: op_errors.GrantError) -> bool:
    # Rafiki's answer to a second continue: 401 request_denied "grant interaction not approved".
    return exc.status == 401 and exc.code == "request_denied"


def _regrant_needed(pending: Pending, exc: op_errors.ResourceError, why: str) -> FlowError:
    return FlowError(
        f"the wallet no longer accepts this grant's access token ({exc.description or exc.status})"
        f" and {why}",
        hint="the grant was revoked at the wallet: the buyer has to approve a new one "
        f"(opapprove quote start --offer {pending.offer_id} ...); nothing was paid twice",
        kind="wallet",
        status=exc.status,
        pending_id=pending.id,
    )


def sent_in_full(payment: dict[str, Any]) -> bool:
    """The wallet reports the payment sent in full: ``sentAmount`` reached ``debitAmount``,
    or, the fee being in the debit, the ``receiveAmount`` when both are in one asset."""
    sent = money.parse_wire_value(payment["sentAmount"]["value"])
    if sent <= 0:
        return False
    if sent >= money.parse_wire_value(payment["debitAmount"]["value"]):
        return True
    receive = payment.get("receiveAmount") or {}
    same_asset = all(
        receive.get(k) == payment["sentAmount"].get(k) for k in ("assetCode", "assetScale")
    )
    return same_asset and sent >= money.parse_wire_value(str(receive.get("value", "0")))


def _poll_ended(exc: op_errors.GrantError) -> tuple[State, str] | None:
    """What a refused poll of a grant still awaiting approval says about it, if final.

    Rafiki answers a rejected grant's poll 401 request_denied ("grant cannot be
    continued", the words it also uses once a token went out, which never happened to a
    grant we still await), and a cancelled grant's 401 invalid_continuation "invalid
    grant". Older sandboxes said 404 for both.
    """
    description = (exc.description or "").lower()
    if exc.code == "invalid_continuation" and exc.status == 401:
        return State.CANCELLED, "the grant was cancelled at the wallet"
    if exc.status == 404 or (
        exc.status == 401
        and exc.code == "request_denied"
        and ("cannot be continued" in description or "cannot be polled" in description)
    ):
        return State.REJECTED, "the buyer rejected the payment in the wallet"
    return None


def _token_dead(exc: op_errors.ResourceError) -> bool:
    text = f"{exc.description or ''} {exc.message}".lower()
    return (exc.status == 403 and "inactive token" in text) or (
        exc.status == 401 and "invalid token" in text
    )


def _is_wallet_problem(exc: op_errors.OpenPaymentsError) -> bool:
    if isinstance(exc, op_errors.WalletAddressError):
        return True
    if isinstance(exc, op_errors.ResponseError):
        return (
            exc.status in (404, 302, 301, 303, 307, 308)
            and "/jwks" not in exc.url
            and (exc.method == "GET")
        )
    return False


def _not_awaiting(pending: Pending) -> FlowError:
    messages = {
        State.EXPIRED: ("Payment approval expired", "start a new quote"),
        State.CANCELLED: ("this approval was cancelled", "start a new quote"),
        State.REJECTED: ("the buyer already rejected this payment", "start a new quote"),
        State.COMPLETED: ("this payment is already completed", None),
        State.FAILED: ("this payment already failed", "see `opapprove pending show`"),
    }
    message, hint = messages.get(
        pending.state,
        (
            f"grant {pending.id} is not awaiting approval (it is {pending.state})",
            "nothing was changed",
        ),
    )
    # A callback for a grant that has moved on is refused (a conflict), not a fresh rejection.
    kind = "expired" if pending.state == State.EXPIRED else "stale"
    if pending.state not in FINAL_STATES:
        kind = "input"
    return FlowError(message, hint=hint, kind=kind, pending_id=pending.id)


def _result_error(pending: Pending, result: str, message: str | None) -> FlowError:
    """What ``finish`` says about a ``result=`` redirect: the wallet's words, and that they
    changed nothing."""
    from opapprove.approvals.results import classify

    if pending.state in FINAL_STATES:
        return _not_awaiting(pending)
    said = classify(_one_line(result))
    words = f"result={said.value}" + (f": {_one_line(message)}" if message else "")
    if pending.state != State.AWAITING_APPROVAL:
        return FlowError(
            f"the wallet's redirect says {said.meaning} ({words}), but grant {pending.id} is"
            f" already {pending.state}",
            hint="a result carries no hash, so it changed nothing; see `opapprove pending show"
            f" {pending.id}`",
            kind="stale",
            pending_id=pending.id,
        )
    return FlowError(
        f"the wallet's redirect says {said.meaning} ({words}); it carries no hash, so grant"
        f" {pending.id} stays open",
        hint=f"if the buyer really declined, end it now with `opapprove pending cancel"
        f" {pending.id}`; otherwise it completes when the buyer approves, or expires",
        kind="rejected" if said.kind == "declined" else "waiting",
        pending_id=pending.id,
    )
