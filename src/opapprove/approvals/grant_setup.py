"""Setting a grant up, steps 1-7: the two wallets, the seller's incoming payment, the
buyer's quote and its check, and the interactive outgoing-payment grant the buyer approves.

Each step commits its result before the next request leaves (design.md, "The pending
grant"), so ``setup`` carries on from whichever step a crash stopped at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from opapprove.approvals import payment_steps, quote_check, seller_payment, split_flow
from opapprove.approvals.access import grant_fields, incoming_grant, quote_grant, wallet_of
from opapprove.approvals.errors import FlowError, translated
from opapprove.approvals.records import Pending, Seller, State
from opapprove.approvals.store import StaleState
from opapprove.approvals.webhooks import Notice
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import interaction, models, money

if TYPE_CHECKING:
    from opapprove.approvals.flow import Flow
    from opapprove.approvals.store_idempotency import Claim

# ``list`` lets a replay find a payment that was made before a crash (money moves once).
OUTGOING_ACTIONS: tuple[models.OutgoingPaymentAction, ...] = ("create", "read", "list")
SETUP_STATES = (State.STARTED, State.INCOMING_CREATED, State.QUOTE_CREATED)
# The longest continue.wait we keep to (Rafiki asks 5 s). The buyer's wallet sets it, and
# the finish sleeps it out after the approval, holding the buyer's page and the grant's
# lease: a hostile one asked 10^9 s. Asked to wait longer, the continue retries with
# backoff on too_fast (payment_steps), so waits of a few minutes still go through.
MAX_CONTINUE_WAIT = 60
APPROVAL_NEEDED = Notice("approval.needed")


def finish_uri_for(base_url: str, pending_id: str) -> str:
    return f"{base_url.rstrip('/')}/payments/finish?{urlencode({'pendingId': pending_id})}"


async def check_wallets(
    flow: Flow, seller: Seller, buyer: str
) -> tuple[models.WalletAddress, models.WalletAddress]:
    """Both wallet documents, before anything is stored, or a FlowError naming the address."""

    async def fetch(url: str, whose: str) -> models.WalletAddress:
        try:
            return await flow.access.wallet(seller, url)
        except op_errors.OpenPaymentsError as exc:
            fix = (
                f"check the buyer's wallet address {url} (http or https, host, port, path)"
                if whose == "buyer"
                else f"check seller {seller.id}'s wallet address {url} "
                f"(`opapprove seller add {seller.id} --replace ...`)"
            )
            raise translated(
                exc,
                _what_failed(exc),
                hint=f"{exc.hint + '; ' if exc.hint else ''}{fix}; nothing was stored",
                kind=None if isinstance(exc, op_errors.TransportError) else "input",
            ) from exc

    buyer_doc, seller_doc = await asyncio.gather(
        fetch(buyer, "buyer"), fetch(seller.wallet_address_url, "seller")
    )
    return buyer_doc, seller_doc


async def store_and_set_up(
    flow: Flow,
    seller: Seller,
    wallets: tuple[models.WalletAddress, models.WalletAddress],
    *,
    offer_id: str,
    buyer: str,
    amount: str,
    note: dict[str, Any] | None,
    poll: bool,
    legs: Sequence[Mapping[str, Any]] = (),
    claim: Claim | None = None,
) -> Pending:
    """Store a grant whose inputs and ``wallets`` (the buyer's, the seller's) were checked,
    with those documents, and set it up (steps 1-7). ``seller`` signs the grant (a split's
    first payee); ``legs`` make it a split payment."""
    pending = flow.store.create_pending(
        seller_id=seller.id,
        offer_id=offer_id,
        buyer_wallet=buyer,
        amount=amount,
        note=note,
        seller_wallet=seller.wallet_address_url,
        poll=poll,
        legs=legs,
        claim=claim,
    )
    buyer_doc, seller_doc = wallets
    pending = flow.store.update(
        pending.id,
        event="wallets_fetched",
        buyer_doc=buyer_doc.to_wire(),
        seller_doc=seller_doc.to_wire(),
    )
    return await setup(flow, pending, fresh=True)


async def setup(flow: Flow, pending: Pending, *, fresh: bool = False) -> Pending:
    """Steps 1-7 from wherever ``pending`` stopped; ends awaiting approval.

    Under the grant's lease, so a replay cannot race the `quote start` still setting it
    up (two incoming payments or quotes for one grant)."""
    busy = f"another opapprove process is setting up grant {pending.id} right now"
    async with flow._leased(pending, busy) as current:
        try:
            return await _setup_leased(flow, current, fresh=fresh)
        except StaleState as exc:
            raise FlowError(
                f"grant {pending.id} was moved on by another process while being set up",
                hint="see `opapprove pending show`",
                kind="busy",
                pending_id=pending.id,
            ) from exc


async def _setup_leased(flow: Flow, pending: Pending, *, fresh: bool) -> Pending:
    seller = flow._seller_of(pending)
    flow.access.client_for(seller)  # a broken key fails here, before anything is written
    checked: dict[str, Any] | None = None
    needed = APPROVAL_NEEDED
    try:
        pending = await _fetch_wallets(flow, pending, seller)
        if pending.is_split:
            # Several sellers: a leg each (split_flow), then one grant for the sum below.
            pending, checked = await split_flow.set_up_legs(flow, pending)
        elif pending.state == State.STARTED:
            # Both non-interactive grants at once: they only need the wallet documents.
            await asyncio.gather(
                flow.access.grant_token(
                    seller, wallet_of(pending.seller_doc).auth_server, incoming_grant(seller)
                ),
                flow.access.grant_token(
                    seller, wallet_of(pending.buyer_doc).auth_server, quote_grant(seller)
                ),
            )
            pending = await _create_incoming(flow, pending, seller)
        if not pending.is_split and (
            pending.state == State.INCOMING_CREATED
            or (
                pending.state == State.QUOTE_CREATED
                and quote_check.is_expired(pending.quote, flow.clock())
            )
        ):
            step = payment_steps.GrantPayment(flow, pending)
            await seller_payment.create_quote(step)
            pending = step.pending
        if pending.state == State.QUOTE_CREATED:
            if not pending.is_split:  # a split's legs were checked one by one
                checked = await _check_quote(flow, pending, seller)
            # Told once (a split's legs read once), to the delivery and to on_event below.
            needed = flow._told(APPROVAL_NEEDED, pending)
            pending = await _request_outgoing_grant(flow, pending, seller, checked, needed)
    except op_errors.OpenPaymentsError as exc:
        unknown_outcome = isinstance(exc, op_errors.TransportError) or (
            isinstance(exc, op_errors.ResponseError) and exc.status >= 500
        )
        if unknown_outcome:
            # The server may or may not have acted; the row stays where it is for replay.
            flow.store.record_error(pending.id, str(exc))
            raise translated(
                exc,
                "Failed to initialize payment",
                hint=(exc.hint or "check the wallet is reachable")
                + f"; resume with `opapprove pending replay {pending.id}`",
                pending_id=pending.id,
            ) from exc
        failed = await flow._fail(flow._get(pending.id), str(exc))
        await flow._close_incoming(failed)
        raise translated(exc, _what_failed(exc), pending_id=failed.id) from exc
    if fresh or pending.state == State.AWAITING_APPROVAL:
        url = {"approvalUrl": pending.interact_redirect}
        await flow._emit(Notice(needed.kind, {**needed.data, **url}), pending)
    return pending


def _what_failed(exc: op_errors.OpenPaymentsError) -> str:
    """The seed's words for a failed set-up: the address is wrong, or the wallet failed."""
    wallet_problem = isinstance(exc, op_errors.WalletAddressError) or (
        isinstance(exc, op_errors.ResponseError)
        and exc.status in (404, 302, 301, 303, 307, 308)
        and "/jwks" not in exc.url
        and exc.method == "GET"
    )
    return "Invalid wallet address" if wallet_problem else "Failed to initialize payment"


async def _fetch_wallets(flow: Flow, pending: Pending, seller: Seller) -> Pending:
    if pending.buyer_doc and pending.seller_doc:
        return pending
    buyer_doc, seller_doc = await asyncio.gather(
        flow.access.wallet(seller, pending.buyer_wallet),
        flow.access.wallet(seller, pending.seller_wallet or seller.wallet_address_url),
    )
    return flow.store.update(
        pending.id,
        event="wallets_fetched",
        buyer_doc=buyer_doc.to_wire(),
        seller_doc=seller_doc.to_wire(),
    )


async def _create_incoming(flow: Flow, pending: Pending, seller: Seller) -> Pending:
    wallet = wallet_of(pending.seller_doc)
    try:
        incoming_amount = wallet.amount(pending.amount)
    except op_errors.AmountError as exc:
        raise translated(exc, "invalid amount", kind="input", pending_id=pending.id) from exc
    step = payment_steps.GrantPayment(flow, pending)
    await seller_payment.create_incoming(step, seller, wallet, incoming_amount)
    return step.pending


def quote_policy(flow: Flow, pending: Pending) -> quote_check.QuotePolicy:
    """The quote check's limits: the settings', with what ``quote start`` asked for (its
    ``--max-debit`` and ``--currency``, kept in the grant's ``created`` event)."""
    note = flow.store.creation_note(pending.id)
    return quote_check.QuotePolicy.from_settings(
        flow.settings, max_debit=note.get("maxDebit"), currency=note.get("currency")
    )


async def _check_quote(flow: Flow, pending: Pending, seller: Seller) -> dict[str, Any]:
    """Refuse a quote the offer cannot take (approvals/quote_check.py) before the buyer
    is asked: the grant ends ``cancelled`` and its incoming payment is closed. What was
    checked, for the ``quote_checked`` event."""
    policy = quote_policy(flow, pending)
    wanted = (pending.incoming_payment or {}).get("incomingAmount")
    offer = (
        money.Amount.from_wire(wanted)
        if wanted
        else wallet_of(pending.seller_doc).amount(pending.amount)
    )
    try:
        terms = quote_check.check_quote(
            pending.quote or {},
            offer=offer,
            buyer_doc=pending.buyer_doc or {},
            policy=policy,
            now=flow.clock(),
        )
    except FlowError as exc:
        renewed = await renewed_or_refused(flow, pending, seller, exc)
        return await _check_quote(flow, renewed, seller)
    return terms.to_json()


async def renewed_or_refused(
    flow: Flow, pending: Pending, seller: Seller, exc: FlowError
) -> Pending:
    """After the quote check failed with ``exc``: the grant with the buyer's wallet document
    renewed, to be checked again (``_renewed_buyer``); else, for a refusal, the grant is
    cancelled (``refuse_quote``), and ``exc`` is raised."""
    if exc.kind == quote_check.REFUSED_KIND:
        renewed = await _renewed_buyer(flow, pending, seller)
        if renewed is not None:
            return renewed
        await refuse_quote(flow, pending, exc)
    raise exc


async def _renewed_buyer(flow: Flow, pending: Pending, seller: Seller) -> Pending | None:
    """The grant with the buyer's wallet document fetched again, when it differs from the
    one the refused check read; else ``None``.

    The document may come from the cache (``WALLET_DOC_TTL``), and a wallet redefined at
    the same address meanwhile (a restarted sandbox with another asset) would otherwise be
    refused as "quoted in another asset", naming the wrong culprit. Once only: the
    renewed document is the wallet's own.
    """
    doc = (await flow.access.wallet(seller, pending.buyer_wallet, fresh=True)).to_wire()
    if doc == pending.buyer_doc:
        return None
    return flow.store.update(pending.id, event="buyer_wallet_renewed", buyer_doc=doc)


async def refuse_quote(flow: Flow, pending: Pending, exc: FlowError) -> None:
    """The quote check said no: the grant ends ``cancelled`` before the buyer is asked, and
    the marketplace is told (which closes the incoming payments); ``exc`` names the grant."""
    # payment.failed closes the incoming payment, as on every side exit.
    await flow._end(
        pending,
        State.CANCELLED,
        Notice.failed("quote_refused"),
        "quote_refused",
        data={"reason": exc.message},
        last_error=exc.message,
    )
    exc.pending_id = pending.id


async def _request_outgoing_grant(
    flow: Flow,
    pending: Pending,
    seller: Seller,
    checked: dict[str, Any] | None,
    needed: Notice,
) -> Pending:
    buyer = wallet_of(pending.buyer_doc)
    grant_url = buyer.auth_server
    nonce = pending.client_nonce or interaction.new_nonce()
    finish_uri = pending.finish_uri or finish_uri_for(flow.settings.base_url, pending.id)
    # What the hash check needs is committed before the request leaves; the quote check's
    # verdict (``checked``) is logged in the same transaction.
    pending = flow.store.update(
        pending.id,
        event=None if checked is None else "quote_checked",
        data=checked,
        client_nonce=nonce,
        finish_uri=finish_uri,
        grant_url=grant_url,
    )
    assert pending.debit_amount is not None
    body = models.outgoing_payment_grant(
        seller.wallet_address_url,
        buyer.id,
        models.AmountModel.model_validate(pending.debit_amount),
        # A split pays several receivers: the wallet sums the debit over the payments.
        receiver=None if pending.is_split else pending.incoming_payment_url,
        finish_uri=None if pending.poll else finish_uri,
        nonce=None if pending.poll else nonce,
        actions=OUTGOING_ACTIONS,
    )
    grant = await flow.access.client_for(seller).request_grant(grant_url, body)
    if isinstance(grant, models.PendingGrant):
        return flow._move(
            pending,
            State.AWAITING_APPROVAL,
            event="approval_requested",
            data={"redirect": grant.redirect},
            notice=needed,
            interact_redirect=grant.redirect,
            server_finish_nonce=grant.finish_nonce,
            continue_uri=grant.continue_.uri,
            continue_token=grant.continue_.token,
            continue_wait=(
                None
                if grant.continue_.wait is None
                else min(grant.continue_.wait, MAX_CONTINUE_WAIT)
            ),
            approval_expires_at=flow.clock() + float(flow.settings.approval_timeout),
        )
    # A wallet that grants without interaction: go straight on to paying.
    return flow._move(
        pending,
        State.GRANT_ISSUED,
        event="grant_issued_without_interaction",
        **grant_fields(grant, flow.clock()),
    )
