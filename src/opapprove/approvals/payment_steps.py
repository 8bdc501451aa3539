"""After the buyer approved: continue the grant, pay (re-quoting an expired quote), and read
the payment until the wallet sent it.

The step that moves money is guarded: ``paying`` is committed before the outgoing payment
is created, and from ``paying`` the wallet is first searched for the payment a crashed
run may have made (``find_payment``), so a replay never pays twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from opapprove.approvals import grant_setup, leases, quote_check, split_flow
from opapprove.approvals.access import grant_fields, wallet_of
from opapprove.approvals.errors import FlowError, quietly, translated
from opapprove.approvals.store import Pending, Seller, State
from opapprove.approvals.webhooks import Notice
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import interaction, models, money

if TYPE_CHECKING:
    from opapprove.approvals.flow import Flow
    from opapprove.approvals.leases import Holder
    from opapprove.openpayments.client import OpenPaymentsClient

TOO_FAST_RETRIES = 3
COMPLETED = Notice("payment.completed")
# Reading a payment the wallet has not sent yet: first wait, and the longest one.
PAYMENT_POLL_FIRST = 0.05
PAYMENT_POLL_MAX = 2.0


async def after_approval(flow: Flow, pending: Pending) -> Pending:
    """Continue, pay and check an approved grant, under its lease, from where it stands."""
    busy = f"another opapprove process is finishing grant {pending.id} right now"
    async with flow._leased(pending, busy) as pending:
        seller = flow._seller_of(pending)
        client = flow.access.client_for(seller)
        try:
            if pending.state == State.APPROVED:
                pending = await _continue(flow, pending, client)
            if pending.is_split and pending.state in split_flow.PAYING_STATES:
                pending = await split_flow.pay_legs(flow, pending, client)
            elif pending.state in (State.GRANT_ISSUED, State.PAYING):
                pending = await _pay(flow, pending, client, seller)
            if pending.state == State.PAYMENT_CREATED:
                pending = await check_payment(flow, pending, client)
        except op_errors.OpenPaymentsError as exc:
            flow.store.record_error(pending.id, str(exc))
            resume = f"resume with `opapprove pending replay {pending.id}`"
            if isinstance(exc, op_errors.TransportError):
                hint = f"{exc.hint or 'the wallet did not answer'}; {resume} (it never pays twice)"
            else:
                hint = f"{exc.hint}; {resume}" if exc.hint else resume
            raise translated(
                exc, "could not finish the payment", hint=hint, pending_id=pending.id
            ) from exc
        return pending


async def _continue(flow: Flow, pending: Pending, client: OpenPaymentsClient) -> Pending:
    assert pending.continue_uri and pending.continue_token and pending.interact_ref
    await _wait_out_continue(flow, pending)
    # Committed before the request: the AS issues the token once, so a refusal after an
    # earlier attempt means that attempt's token was lost in a crash (see _reapprove).
    attempt = leases.current_attempt(pending.id)
    flow.store.add_event(pending.id, "continue_sent", {"attempt": attempt.id if attempt else None})
    try:
        grant = await _continue_patiently(flow, pending, client)
    except op_errors.GrantError as exc:
        if exc.status >= 500:
            raise  # unknown outcome: recorded by the caller, the row stays `approved`
        # Rafiki's answer to a second continue: 401 request_denied "grant interaction not
        # approved".
        if exc.status == 401 and exc.code == "request_denied":
            now = flow._get(pending.id)
            if now.state != State.APPROVED:
                return now  # another attempt was issued the token and saved it
            if _continue_in_flight(flow, pending, attempt):
                raise FlowError(
                    f"another attempt is continuing grant {pending.id} right now",
                    hint="wait for it to finish; nothing was changed",
                    kind="busy",
                    pending_id=pending.id,
                ) from exc
            if _continued_before(flow, pending):
                await _reapprove(flow, pending, client, exc)
        refused = Notice.failed(exc.code or "continue_failed")
        failed = flow._fail(pending, str(exc), refused)
        await flow._emit(refused, failed)
        raise translated(
            exc,
            "the wallet refused to continue the grant",
            hint=exc.hint or "the grant was not approved, or was already continued once",
            pending_id=pending.id,
        ) from exc
    if not isinstance(grant, models.Grant) or grant.access_token is None:
        raise FlowError(
            "the wallet continued the grant but issued no access token",
            hint="the buyer may not have approved yet",
            kind="wallet",
            pending_id=pending.id,
        )
    return flow._move(
        pending, State.GRANT_ISSUED, event="grant_issued", **grant_fields(grant, flow.clock())
    )


def _continued_before(flow: Flow, pending: Pending) -> bool:
    sent = [e for e in flow.store.events(pending.id) if e.kind == "continue_sent"]
    return len(sent) > 1


def _continue_in_flight(flow: Flow, pending: Pending, mine: Holder | None) -> bool:
    """Whether an earlier continue of this grant belongs to an attempt still running here.

    Other processes' attempts cannot be: this attempt holds the lease, and a live
    attempt keeps renewing its own.
    """
    for event in flow.store.events(pending.id):
        other = event.data.get("attempt") if event.kind == "continue_sent" else None
        if other and (mine is None or other != mine.id) and leases.attempt_running(other):
            return True
    return False


async def _reapprove(
    flow: Flow, pending: Pending, client: OpenPaymentsClient, exc: op_errors.GrantError
) -> NoReturn:
    """The token went to a run that died before committing it: ask for a new grant.

    No money has moved (nothing pays without that token), so the old grant is revoked
    and the buyer approves a fresh one; the quote is reused unless it expired.
    """
    assert pending.continue_uri and pending.continue_token
    old = await quietly(client.cancel_grant(pending.continue_uri, pending.continue_token))
    pending = flow._move(
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
    pending = await grant_setup.setup(flow, pending)
    raise FlowError(
        "the wallet issued this grant's token to an earlier run that stopped before saving"
        " it, so the buyer has to approve again",
        hint=f"send the buyer the new approval URL {pending.interact_redirect} , then"
        f" `opapprove finish URL` with the wallet's redirect (or `opapprove pending cancel"
        f" {pending.id}`)",
        kind="waiting",
        pending_id=pending.id,
    )


async def _wait_out_continue(flow: Flow, pending: Pending) -> None:
    """Sleep until the wallet's ``continue.wait`` has passed: sooner gets ``too_fast``."""
    wait = float(pending.continue_wait or 0)
    if wait and pending.approval_expires_at:
        granted_at = pending.approval_expires_at - float(flow.settings.approval_timeout)
        early = granted_at + wait - flow.clock()
        if early > 0:
            await flow.sleep(min(early, wait))


async def _continue_patiently(
    flow: Flow, pending: Pending, client: OpenPaymentsClient
) -> models.PendingGrant | models.Grant:
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
            flow.store.add_event(pending.id, "too_fast", {"wait": wait})
            await flow.sleep(max(wait, 1.0) * 2**attempt)
    raise AssertionError("unreachable")


async def _pay(flow: Flow, pending: Pending, client: OpenPaymentsClient, seller: Seller) -> Pending:
    if pending.state == State.PAYING:
        existing = await find_payment(flow, pending, client)
        if existing is not None:
            return _payment_made(flow, pending, existing, event="payment_found")
    else:
        pending = flow._move(pending, State.PAYING, expect=State.GRANT_ISSUED, event="paying")
    pending = flow._get(pending.id)
    if quote_check.is_expired(pending.quote, flow.clock()):
        pending = await _requote(flow, pending, seller)
    assert pending.quote_url
    try:
        payment = await create_payment(flow, pending, client, pending.quote_url)
    except op_errors.ResourceError as exc:
        if exc.status >= 500:
            # The wallet may have made the payment before it failed: like a dropped
            # connection, stay in `paying` so a replay looks for it before paying again.
            flow.store.record_error(pending.id, str(exc))
            raise translated(
                exc,
                "the wallet failed while creating the payment",
                hint=f"replay it with `opapprove pending replay {pending.id}`: it checks"
                " for a payment already made before making one",
                pending_id=pending.id,
            ) from exc
        refused = Notice.failed(exc.description or "refused")
        failed = flow._fail(flow._get(pending.id), str(exc), refused)
        await flow._emit(refused, failed)
        raise translated(
            exc, "the wallet refused the outgoing payment", pending_id=pending.id
        ) from exc
    return _payment_made(flow, flow._get(pending.id), payment, event="payment_created")


def _payment_made(
    flow: Flow, pending: Pending, payment: models.OutgoingPayment, *, event: str
) -> Pending:
    """``paying`` → ``payment_created``: the payment made now, or found made before."""
    return flow._move(
        pending,
        State.PAYMENT_CREATED,
        expect=State.PAYING,
        event=event,
        data={"outgoingPayment": payment.id},
        outgoing_payment_url=payment.id,
        outgoing_payment=payment.to_wire(),
    )


async def create_payment(
    flow: Flow, pending: Pending, client: OpenPaymentsClient, quote_url: str, **metadata: Any
) -> models.OutgoingPayment:
    """The outgoing payment for ``quote_url`` from the buyer's wallet, with the grant's token
    (metadata: the offer, the grant, and ``metadata``, e.g. a split payment's leg)."""
    buyer = wallet_of(pending.buyer_doc)
    body = models.CreateOutgoingPayment(
        wallet_address=buyer.id,
        quote_id=quote_url,
        metadata={"offerId": pending.offer_id, "pendingId": pending.id, **metadata},
    )
    return await flow.access.with_access_token(
        pending,
        client,
        lambda token: client.create_outgoing_payment(buyer.resource_server, token, body),
    )


async def _requote(flow: Flow, pending: Pending, seller: Seller) -> Pending:
    """The buyer approved after the quote expired (quotes live 5 min, approvals 10):
    quote again for the same incoming payment and pay if it fits the approved limit."""
    quote = await grant_setup.new_quote(flow, pending, seller)
    approved = money.Amount.from_wire(pending.debit_amount)
    debit = quote.debit_amount.to_amount()
    if not debit.same_asset(approved) or debit.value > approved.value:
        over = Notice.failed("requote_over_limit")
        failed = flow._fail(
            pending, f"the new quote debits {debit}, more than the {approved} approved", over
        )
        await flow._emit(over, failed)
        raise FlowError(
            f"the quote expired and a new one debits {debit}, more than the {approved}"
            " the buyer approved",
            hint="start a new quote so the buyer can approve the new amount",
            kind="wallet",
            pending_id=pending.id,
        )
    # Committed before the payment is made, so a replay searches for the right quote.
    return flow.store.update(
        pending.id,
        event="requoted",
        data={"old": pending.quote_url, "quote": quote.id, "debitAmount": debit.to_wire()},
        quote_url=quote.id,
        quote=quote.to_wire(),
        receive_amount=quote.receive_amount.to_wire(),
    )


async def find_payment(
    flow: Flow, pending: Pending, client: OpenPaymentsClient
) -> models.OutgoingPayment | None:
    """The payment a crashed run may already have made for this quote, if any."""
    buyer = wallet_of(pending.buyer_doc)

    async def search(token: str) -> models.OutgoingPayment | None:
        async for payment in client.iter_outgoing_payments(buyer.resource_server, token, buyer.id):
            metadata = payment.metadata or {}
            if payment.quote_id == pending.quote_url or metadata.get("pendingId") == pending.id:
                return payment
        return None

    found = await flow.access.with_access_token(pending, client, search)
    flow.store.add_event(pending.id, "payment_search", {"found": found.id if found else None})
    return found


async def check_payment(flow: Flow, pending: Pending, client: OpenPaymentsClient) -> Pending:
    """Read the payment until the wallet reports it sent in full, or failed.

    A wallet creates it unsent (Rafiki: ``sentAmount`` 0) and sends it once funded, so
    the reads back off from ``PAYMENT_POLL_FIRST`` s up to ``PAYMENT_POLL_MAX`` s, for
    at most the request timeout in all; still unsent then, the grant stays
    ``payment_created`` and ``status`` or ``pending replay`` looks again later.
    """
    delay, waited = PAYMENT_POLL_FIRST, 0.0
    budget = float(flow.settings.timeout)
    while True:
        pending = await _read_payment(flow, pending, client)
        if pending.state != State.PAYMENT_CREATED or waited >= budget:
            return pending
        await flow.sleep(delay)
        waited += delay
        delay = min(delay * 2, PAYMENT_POLL_MAX)


async def _read_payment(flow: Flow, pending: Pending, client: OpenPaymentsClient) -> Pending:
    url = pending.outgoing_payment_url
    assert url
    payment = await flow.access.with_access_token(
        pending, client, lambda token: client.get_outgoing_payment(url, token)
    )
    pending = flow.store.update(pending.id, outgoing_payment=payment.to_wire())
    if payment.failed:
        gave_up = Notice.failed("payment_failed")
        failed = flow._fail(pending, "the wallet gave up on the payment (failed: true)", gave_up)
        await flow._emit(gave_up, failed)
        return failed
    if sent_in_full(payment):
        done = flow._move(
            pending,
            State.COMPLETED,
            event="completed",
            data={"sentAmount": payment.sent_amount.to_wire()},
            notice=COMPLETED,
        )
        await flow._emit(COMPLETED, done)
        return done
    return pending


def sent_in_full(payment: models.OutgoingPayment) -> bool:
    """The wallet reports the payment sent in full: ``sentAmount`` reached ``debitAmount``,
    or, the fee being in the debit, the ``receiveAmount`` when both are in one asset."""
    sent = int(payment.sent_amount.value)
    if sent <= 0:
        return False
    if sent >= int(payment.debit_amount.value):
        return True
    receive = payment.receive_amount
    return receive.same_asset(payment.sent_amount) and sent >= int(receive.value)
