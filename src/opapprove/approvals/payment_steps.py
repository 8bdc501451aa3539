"""After the buyer approved: continue the grant, pay (re-quoting an expired quote), and read
the payment until the wallet sent it.

Paying is :mod:`seller_payment`'s, the same steps as a split payment's legs; here a
single grant's payment ends the grant (:class:`GrantPayment`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from opapprove.approvals import grant_setup, leases, seller_payment, split_flow
from opapprove.approvals.access import grant_fields
from opapprove.approvals.errors import FlowError, quietly, translated
from opapprove.approvals.records import Pending, State
from opapprove.approvals.seller_payment import Move, SellerPayment
from opapprove.approvals.webhooks import Notice
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import interaction, models, money

if TYPE_CHECKING:
    from opapprove.approvals.flow import Flow
    from opapprove.approvals.leases import Holder
    from opapprove.openpayments.client import OpenPaymentsClient

TOO_FAST_RETRIES = 3
COMPLETED = Notice("payment.completed")


async def after_approval(flow: Flow, pending: Pending) -> Pending:
    """Continue, pay and check an approved grant, under its lease, from where it stands."""
    busy = f"another opapprove process is finishing grant {pending.id} right now"
    async with flow._leased(pending, busy) as pending:
        seller = flow._seller_of(pending)
        client = flow.access.client_for(seller)
        try:
            if pending.state == State.APPROVED:
                pending = await _continue(flow, pending, client)
            if pending.is_split:
                # Pays and reads every leg; legs still unsent leave it payment_created.
                if pending.state in split_flow.PAYING_STATES:
                    pending = await split_flow.pay_legs(flow, pending, client)
            else:
                if pending.state in (State.GRANT_ISSUED, State.PAYING):
                    step = GrantPayment(flow, pending)
                    await seller_payment.pay(step, client)
                    pending = step.pending
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
        await flow._fail(pending, str(exc), Notice.failed(exc.code or "continue_failed"))
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


class GrantPayment(SellerPayment):
    """A single grant's payment: the grant's own row moves, and its end is the grant's."""

    ready = "grant_issued"
    found_by_grant = True

    @property
    def row(self) -> Pending:
        return self.pending

    def _transition(self, move: Move) -> None:
        expected = tuple(State(s) for s in move.expect)
        self.pending = self.flow._move(
            self.pending,
            State(move.to),
            expect=expected,
            event=move.event,
            data=move.data,
            **move.fields,
        )

    def save(
        self, event: str | None = None, data: dict[str, Any] | None = None, **fields: Any
    ) -> None:
        self.pending = self.flow.store.update(self.pending.id, event=event, data=data, **fields)

    def record_error(self, message: str) -> None:
        self.flow.store.record_error(self.pending.id, message)

    async def refused(self, exc: op_errors.ResourceError) -> None:
        await self._fail(str(exc), Notice.failed(exc.description or "refused"))
        raise translated(
            exc, "the wallet refused the outgoing payment", pending_id=self.pending.id
        ) from exc

    async def over_limit(self, debit: money.Amount, approved: money.Amount) -> NoReturn:
        why = f"the new quote debits {debit}, more than the {approved} approved"
        await self._fail(why, Notice.failed("requote_over_limit"))
        raise FlowError(
            f"the quote expired and a new one debits {debit}, more than the {approved}"
            " the buyer approved",
            hint="start a new quote so the buyer can approve the new amount",
            kind="wallet",
            pending_id=self.pending.id,
        )

    async def gave_up(self, payment: models.OutgoingPayment) -> None:
        self.save(outgoing_payment=payment.to_wire())
        await self._fail(
            "the wallet gave up on the payment (failed: true)", Notice.failed("payment_failed")
        )

    async def sent(self, payment: models.OutgoingPayment) -> None:
        self.save(outgoing_payment=payment.to_wire())
        self.pending = await self.flow._end(
            self.pending,
            State.COMPLETED,
            COMPLETED,
            "completed",
            data={"sentAmount": payment.sent_amount.to_wire()},
        )

    async def _fail(self, message: str, notice: Notice) -> None:
        """The grant ends ``failed``, and the marketplace is told."""
        self.pending = await self.flow._fail(self.flow._get(self.pending.id), message, notice)


async def check_payment(flow: Flow, pending: Pending, client: OpenPaymentsClient) -> Pending:
    """Read the payment until the wallet reports it sent in full, or failed
    (:func:`seller_payment.read_until_done`)."""
    step = GrantPayment(flow, pending)

    async def read() -> bool:
        await seller_payment.read_payment(step, client)
        return step.pending.state != State.PAYMENT_CREATED

    await seller_payment.read_until_done(flow, read)
    return step.pending
