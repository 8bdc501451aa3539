"""The approval flow as a resumable state machine (design.md, "The pending grant").

Every transition is committed to the store before the next network call, so a crash at
any point leaves a row that ``replay`` carries on from. The one step that moves money,
creating the outgoing payment, is guarded twice: ``paying`` is committed first and a
replay from ``paying`` looks for the payment already made for the quote; and a lease
keeps two processes (a listener and a replay, say) from driving one grant at once.

:class:`Flow` is the grant's state machine and its entry points; the steps live beside it:
``grant_setup`` (steps 1-7), ``finish_redirect`` (reading and verifying the wallet's
redirect, no side effects), ``payment_steps`` (continue, pay, check), ``lifecycle`` (poll,
refresh, replay, cancel, expire), and ``access`` (the seller's clients, wallet documents and
tokens), which a Flow holds as ``flow.access``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

from opapprove.approvals import (
    finish_redirect,
    grant_setup,
    ids,
    leases,
    lifecycle,
    payment_steps,
    quote_check,
    results,
    split_flow,
)
from opapprove.approvals.access import Access, incoming_grant, wallet_of
from opapprove.approvals.errors import FlowError, translated
from opapprove.approvals.finish_redirect import FinishRedirect
from opapprove.approvals.records import FINAL_STATES, Pending, Seller, State
from opapprove.approvals.sellers import resolve_seller
from opapprove.approvals.split import Payee
from opapprove.approvals.store import StaleState
from opapprove.approvals.webhooks import Notice
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import money, urls

if TYPE_CHECKING:
    import httpx

    from opapprove.approvals.store import Store
    from opapprove.approvals.store_idempotency import Claim
    from opapprove.openpayments.client import Exchange, OpenPaymentsClient
    from opapprove.settings import Settings

EventHook = Callable[[str, Pending, dict[str, Any]], Awaitable[None] | None]


@dataclass(eq=False)
class Flow:
    """Drives pending grants through the state machine; one instance per command or server.

    ``lease_seconds``: how long a grant's lease lasts unless renewed (0: six request
    timeouts, at least a minute).
    """

    store: Store = field(repr=False)
    settings: Settings = field(repr=False)
    _: KW_ONLY
    on_exchange: Callable[[Exchange], None] | None = None
    on_event: EventHook | None = None
    transport: httpx.AsyncBaseTransport | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    lease_seconds: float = 0.0
    holder: str = field(init=False)
    access: Access = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lease_seconds = self.lease_seconds or max(60.0, float(self.settings.timeout) * 6)
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.access = Access(
            self.store, self.settings, self.transport, self.on_exchange, self.clock, self.sleep
        )

    # ------------------------------------------------------------------ plumbing

    async def aclose(self) -> None:
        await self.access.aclose()

    async def __aenter__(self) -> Flow:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def client_for(self, seller: Seller) -> OpenPaymentsClient:
        """The seller's client, made once per Flow (a broken key is FlowError ``config``)."""
        return self.access.client_for(seller)

    def _seller_of(self, pending: Pending) -> Seller:
        return resolve_seller(self.settings, self.store, pending.seller_id)

    async def _emit(self, notice: Notice, pending: Pending) -> None:
        """Tell ``on_event`` (the webhook sender sends the delivery the transition wrote)."""
        if notice.kind == "payment.failed":
            # Every side exit (rejected, cancelled, expired, failed) passes here: the
            # seller's incoming payment would otherwise stay pending at the wallet for good.
            await self._close_incoming(pending)
        if self.on_event is None:
            return
        result = self.on_event(notice.kind, pending, dict(self._told(notice, pending).data))
        if result is not None:
            await result

    def _told(self, notice: Notice, pending: Pending) -> Notice:
        """What the marketplace is told; of a split payment, with each seller's leg."""
        if not pending.is_split or "legs" in notice.data:
            return notice
        return notice.with_legs(self.store.legs(pending.id))

    async def _close_incoming(self, pending: Pending) -> None:
        """Complete the incoming payment of a grant that ended unpaid (best effort, logged)."""
        if pending.is_split:
            await split_flow.close_incoming(self, pending)
            return
        url = pending.incoming_payment_url
        if not url or not pending.seller_doc:
            return
        outcome = await self.close_incoming_payment(pending.seller_id, url, pending.seller_doc)
        self.store.add_event(pending.id, "incoming_payment_closed", {"outcome": outcome})

    async def close_incoming_payment(
        self, seller_id: str, url: str, seller_doc: dict[str, Any]
    ) -> str:
        """Complete one incoming payment at the seller's wallet: what came of it, in words."""
        try:
            seller = resolve_seller(self.settings, self.store, seller_id)
            client = self.access.client_for(seller)
            await self.access.with_grant(
                seller,
                wallet_of(seller_doc).auth_server,
                incoming_grant(seller),
                lambda token: client.complete_incoming_payment(url, token),
            )
        except op_errors.ResponseError as exc:
            # 409 wrong state: it was completed (or expired) already, which is the aim.
            return "already closed" if exc.status == 409 else f"refused: {exc.message}"
        except (op_errors.OpenPaymentsError, FlowError) as exc:
            return f"not closed: {exc}"
        return "completed"

    def _get(self, pending_id: str) -> Pending:
        # Undecodable bytes from a URL or argv arrive as lone surrogates SQLite cannot take.
        pending = self.store.get_pending(pending_id) if ids.plausible(pending_id) else None
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
        notice: Notice | None = None,
        **fields: Any,
    ) -> Pending:
        """The transition; with a webhook URL, ``notice``'s delivery is written with it."""
        return self.store.transition(
            pending.id,
            to,
            expect=expect if expect is not None else pending.state,
            event=event,
            data=data,
            outbox=self._told(notice, pending).outbox()
            if notice is not None and self.settings.webhook_url
            else None,
            **fields,
        )

    async def _end(
        self, pending: Pending, to: State, notice: Notice | None, event: str, **fields: Any
    ) -> Pending:
        """Move the grant to its end ``to`` and tell the marketplace (its delivery is written
        with the move); ``fields`` as for :meth:`_move`."""
        # Told once, for the delivery and for on_event alike (a split's legs are read once).
        told = None if notice is None else self._told(notice, pending)
        ended = self._move(pending, to, event=event, notice=told, **fields)
        if told is not None:
            await self._emit(told, ended)
        return ended

    async def _fail(self, pending: Pending, message: str, notice: Notice | None = None) -> Pending:
        """The grant ends ``failed`` (and, with ``notice``, the marketplace is told); a grant
        another process moved meanwhile is left as that process left it."""
        try:
            data = {"error": message}
            return await self._end(
                pending, State.FAILED, notice, "failed", data=data, last_error=message
            )
        except StaleState:
            current = self._get(pending.id)
            if notice is not None:
                await self._emit(notice, current)
            return current

    @contextlib.asynccontextmanager
    async def _leased(
        self, pending: Pending, busy: str, *, hint: str | None = None
    ) -> AsyncIterator[Pending]:
        """The grant read again under its lease, held for one attempt (see leases.attempt);
        FlowError ``busy`` if another attempt holds it."""
        refusal = FlowError(
            busy,
            hint=hint
            or f"wait for it; if it crashed, retry: a stopped process's lease on this host"
            f" is taken at once, another host's after {int(self.lease_seconds)} s",
            kind="busy",
            pending_id=pending.id,
        )
        async with leases.attempt(
            self.store, pending.id, prefix=self.holder, seconds=self.lease_seconds, busy=refusal
        ):
            yield self._get(pending.id)

    def _approval_expired(self, pending: Pending) -> bool:
        return pending.approval_expired(self.clock())

    def _refuse(self, pending: Pending, kind: str, why: str) -> None:
        self._record_capped(pending, kind, {"reason": why})

    def _record_capped(self, pending: Pending, kind: str, data: dict[str, Any]) -> None:
        """Record an event anyone who knows the pending id can cause (a refused callback, a
        ``result=``), at most MAX_RECORDED of ``kind`` a grant: a pending id is no secret,
        and forged ones must not grow the store forever."""
        if sum(e.kind == kind for e in self.store.events(pending.id)) < results.MAX_RECORDED:
            self.store.add_event(pending.id, kind, data)

    # ------------------------------------------------------------------ start (steps 1-7)

    async def start_quote(
        self,
        *,
        offer_id: str,
        buyer_wallet: str,
        amount: str,
        seller_id: str | None = None,
        poll: bool = False,
        max_debit: str | None = None,
        currency: str | None = None,
        payees: list[Payee] | None = None,
        claim: Claim | None = None,
    ) -> Pending:
        """Check the inputs and both wallets, store the grant, and set it up (steps 1-7).

        With ``payees`` it is a split payment (split_flow): one leg per seller, one approval;
        ``amount``, when given, must be the sum of their shares. ``claim``: the request's
        Idempotency-Key, stored with the grant (store_idempotency)."""
        if not buyer_wallet or not buyer_wallet.strip():
            raise FlowError(
                "Configure wallet address first: no buyer wallet address was given",
                hint="pass the buyer's wallet address, e.g. --buyer https://ilp.example/alice",
                kind="input",
            )
        try:
            allow_http = bool(self.settings.allow_http)
            buyer = urls.parse_wallet_address(buyer_wallet, allow_http=allow_http)
            text = money.check_decimal(amount) if payees is None else ""
        except (op_errors.WalletAddressError, op_errors.AmountError) as exc:
            what = (
                "Invalid wallet address"
                if isinstance(exc, op_errors.WalletAddressError)
                else "invalid amount"
            )
            raise translated(exc, what, kind="input") from exc
        if payees is None and not any(ch in "123456789" for ch in text):
            raise FlowError(
                f"invalid amount: {amount.strip()!r} is zero",
                hint="pay more than nothing, e.g. --amount 0.01",
                kind="input",
            )
        if not offer_id.strip():
            raise FlowError("the offer id is empty", hint="pass --offer ID", kind="input")
        if not ids.plausible(offer_id):
            raise FlowError(
                f"the offer id {offer_id[:40]!r} is not 1 to {ids.MAX_ID_CHARS} printable"
                " characters",
                hint="use the marketplace's offer id as it is; nothing was stored",
                kind="input",
            )
        max_debit, currency = quote_check.check_inputs(max_debit, currency)
        policy = quote_check.QuotePolicy.from_settings(
            self.settings, max_debit=max_debit, currency=currency
        )
        if payees is not None:
            return await split_flow.start_split(
                self,
                offer_id=offer_id,
                buyer=buyer,
                payees=payees,
                amount=amount if amount.strip() else None,
                seller_id=seller_id,
                poll=poll,
                policy=policy,
                claim=claim,
            )
        seller = resolve_seller(self.settings, self.store, seller_id)
        self.access.client_for(seller)  # a broken key fails here, before anything is stored
        # Both wallet documents (cached, and needed next anyway) before a row exists: a typo in
        # an address or an amount finer than the wallet's scale leaves nothing to clean up.
        buyer_doc, seller_doc = await grant_setup.check_wallets(self, seller, buyer)
        quote_check.check_wallets(policy, seller_doc.to_wire(), buyer_doc.to_wire())
        try:
            seller_doc.amount(text)
        except op_errors.AmountError as exc:
            raise translated(
                exc,
                "invalid amount",
                hint=f"{seller.wallet_address_url} counts {seller_doc.asset_code} to "
                f"{seller_doc.asset_scale} decimal places; round the amount to that",
                kind="input",
            ) from exc
        return await grant_setup.store_and_set_up(
            self,
            seller,
            (buyer_doc, seller_doc),
            offer_id=offer_id,
            buyer=buyer,
            amount=amount.strip(),
            note=policy.note() or None,
            poll=poll,
            claim=claim,
        )

    # ------------------------------------------------------------------ finish (step 8)

    async def finish_url(self, url: str) -> Pending:
        """Finish from a pasted redirect URL (see :meth:`finish`)."""
        return await self.finish(finish_redirect.parse_finish_url(url))

    async def finish(self, redirect: FinishRedirect) -> Pending:
        """Finish from a redirect: verify it, then continue the grant and pay.

        A ``result`` (unverified) is recorded and answered with FlowError; the grant stays
        open. The listener uses :meth:`accept_approval` and :meth:`complete` separately, so
        the buyer's page does not wait for the payment.
        """
        pending = self._get(redirect.pending_id)
        if pending.state == State.AWAITING_APPROVAL and self._approval_expired(pending):
            # One expiry rule (see lifecycle.expire): too late is too late, even with a
            # valid hash.
            return await lifecycle.expire(self, pending, decided_here=True)
        if redirect.result:
            pending = await self.note_result(pending.id, redirect.result, redirect.message)
            raise finish_redirect.result_error(pending, redirect.result, redirect.message)
        pending = self.accept_approval(
            pending.id, interact_ref=redirect.interact_ref, hash=redirect.hash
        )
        if pending.state in FINAL_STATES:
            return pending
        return await payment_steps.after_approval(self, pending)

    async def complete(self, pending_id: str) -> Pending:
        """Continue and pay a grant whose approval was accepted (exactly once: under its
        lease)."""
        pending = self._get(pending_id)
        if pending.state in FINAL_STATES:
            return pending
        return await payment_steps.after_approval(self, pending)

    def accept_approval(
        self, pending_id: str, *, interact_ref: str | None, hash: str | None
    ) -> Pending:
        """Check a redirect's ``interact_ref`` and ``hash`` and commit ``approved``; no network.

        The same valid redirect again (a double click, a refresh, a second listener) gives
        the grant as it stands; anything else that does not verify is FlowError. An expired
        approval is refused here without network; the next status or replay cancels it at
        the wallet and marks it expired.
        """
        pending = self._get(pending_id)
        verdict = finish_redirect.judge(
            pending, interact_ref, hash, expired=self._approval_expired(pending)
        )
        if verdict.action == "approved":
            return pending
        if verdict.error is not None:
            if verdict.reason is not None:
                self._refuse(pending, "callback_refused", verdict.reason)
            raise verdict.error
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
                raise finish_redirect.not_awaiting(pending) from None
            return pending

    async def note_result(self, pending_id: str, result: str, message: str | None) -> Pending:
        """Record a redirect's ``result=``; the grant stays as it is (see approvals.results).

        Only the grant's own expiry ends it here: an approval past its time is expired,
        whatever the redirect says.
        """
        pending = self._get(pending_id)
        data = finish_redirect.result_note(pending, result, message)
        self._record_capped(pending, "wallet_result", data)
        if pending.state == State.AWAITING_APPROVAL and self._approval_expired(pending):
            await lifecycle.expire(self, pending, data)
        return pending

    # ------------------------------------------------------------------ other entry points

    async def wait_for_approval(self, pending_id: str, *, timeout: float) -> Pending:
        """For ``--poll`` grants (no finish redirect): poll continuation until approved."""
        return await lifecycle.wait_for_approval(self, pending_id, timeout=timeout)

    async def refresh(self, pending_id: str) -> Pending:
        """Re-read where a grant's payment stands (``status``); completes it when sent."""
        return await lifecycle.refresh(self, pending_id)

    async def replay(self, pending_id: str) -> Pending:
        """Carry a grant on from its last committed state, never paying twice."""
        return await lifecycle.replay(self, pending_id)

    async def cancel(self, pending_id: str) -> Pending:
        """Cancel a grant not yet paid: at the wallet (grant and token), then here; of a split
        payment, the legs not paid (split_flow.stop_paying, cancel_failed_legs)."""
        return await lifecycle.cancel(self, pending_id)
