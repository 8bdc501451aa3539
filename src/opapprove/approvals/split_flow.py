"""A split payment's steps: one approval, one outgoing payment per seller (docs/split-payments.md).

The grant (``Pending``) goes through the same states as a single payment; its legs
(``store_legs``) carry each seller's incoming payment, quote and outgoing payment. Set-up
makes every leg's incoming payment and quote and checks each quote before the buyer is
asked; one interactive grant is requested for the sum of the debits. After approval each
leg is paid with the grant's token, guarded like a single payment: the leg's ``paying`` is
committed first, and a replay from it looks for that leg's payment (by its quote) before
it makes one. A leg the wallet refuses for good ends ``failed``; the grant then ends
``partially_paid`` (some legs paid) or ``failed`` (none), and a replay of a partially paid
grant quotes its failed legs again and pays only them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, NoReturn

from opapprove.approvals import grant_setup, payment_steps, quote_check, seller_payment
from opapprove.approvals.access import wallet_of
from opapprove.approvals.errors import FlowError
from opapprove.approvals.records import LEG_FINAL_STATES, Leg, LegState, Pending, State
from opapprove.approvals.seller_payment import Move, SellerPayment
from opapprove.approvals.sellers import resolve_seller
from opapprove.approvals.split import Payee, check_payees
from opapprove.approvals.webhooks import Notice
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import models, money

if TYPE_CHECKING:
    from opapprove.approvals.flow import Flow
    from opapprove.approvals.records import Seller
    from opapprove.approvals.store_idempotency import Claim
    from opapprove.openpayments.client import OpenPaymentsClient


def _sum(amounts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The sum of wire amounts in one asset; ``None`` when they are in several (or none)."""
    parsed = [money.Amount.from_wire(a) for a in amounts if a]
    if not parsed or len(parsed) != len(amounts):
        return None
    first = parsed[0]
    if not all(a.same_asset(first) for a in parsed):
        return None
    total = sum(a.value for a in parsed)
    return {"value": str(total), "assetCode": first.asset_code, "assetScale": first.asset_scale}


def _payee_seller(flow: Flow, payee: Payee) -> Seller:
    try:
        return resolve_seller(flow.settings, flow.store, payee.seller_id)
    except FlowError as exc:
        raise FlowError(
            f"payee {payee.seller_id!r} has no seller entry",
            hint=f"add it first (`opapprove seller add {payee.seller_id} --wallet URL --key-id"
            " KID --key FILE`, or POST /sellers); nothing was stored",
            kind="input",
        ) from exc


# ---------------------------------------------------------------------- start


async def start_split(
    flow: Flow,
    *,
    offer_id: str,
    buyer: str,
    payees: list[Payee],
    amount: str | None,
    seller_id: str | None,
    poll: bool,
    policy: quote_check.QuotePolicy,
    claim: Claim | None = None,
) -> Pending:
    """Check every payee and wallet, then store the grant with its legs and set it up.

    ``buyer`` is the checked wallet address; nothing is stored before every check passed."""
    if seller_id is not None:
        raise FlowError(
            f"seller {seller_id!r} was named beside the payees of a split payment",
            hint="name every seller among the payees, and no seller besides",
            kind="input",
        )
    total = check_payees(payees, amount=amount)
    sellers = [_payee_seller(flow, p) for p in payees]
    for seller in sellers:
        flow.access.client_for(seller)  # a broken key fails before a row exists
    pairs = await asyncio.gather(*(grant_setup.check_wallets(flow, s, buyer) for s in sellers))
    buyer_doc = pairs[0][0].to_wire()
    legs: list[dict[str, Any]] = []
    for payee, seller, (_, wallet) in zip(payees, sellers, pairs, strict=True):
        seller_doc = wallet.to_wire()
        quote_check.check_wallets(policy, seller_doc, buyer_doc)
        code, scale = wallet.asset_code, wallet.asset_scale
        try:
            wallet.amount(payee.amount)
        except op_errors.AmountError as exc:
            raise FlowError(
                f"the share of {payee.seller_id!r} is not a positive amount in its wallet's"
                f" {code}: {exc.message}",
                hint=f"{seller.wallet_address_url} counts {code} to {scale} decimal places;"
                " round the share to that; nothing was stored",
                kind="input",
            ) from exc
        legs.append(
            {
                "seller_id": seller.id,
                "seller_wallet": seller.wallet_address_url,
                "amount": payee.amount,
                "seller_doc": seller_doc,
            }
        )
    assets = [wallet.asset_code for _, wallet in pairs]
    if len(set(assets)) > 1:  # a sum across assets means nothing: say each share in its own
        total = " + ".join(f"{p.amount} {a}" for p, a in zip(payees, assets, strict=True))
    return await grant_setup.store_and_set_up(
        flow,
        sellers[0],
        pairs[0],
        offer_id=offer_id,
        buyer=buyer,
        amount=total,
        note={**policy.note(), "payees": [p.seller_id for p in payees]},
        poll=poll,
        legs=legs,
        claim=claim,
    )


# ---------------------------------------------------------------------- set-up (steps 2-5)


def _steps(flow: Flow, pending: Pending) -> list[LegPayment]:
    """Each leg's payment, its row read once for the step at hand: each keeps its own row
    current as it moves it."""
    return [LegPayment(flow, pending, leg) for leg in flow.store.legs(pending.id)]


async def set_up_legs(flow: Flow, pending: Pending) -> tuple[Pending, dict[str, Any] | None]:
    """Incoming payments, quotes and the quote check of every leg. Ends ``quote_created``
    with what was checked (logged by the grant's next update, as a single grant's check
    is), or ``cancelled`` (a quote refused: FlowError ``quote_refused``)."""
    steps = _steps(flow, pending)
    if pending.state == State.STARTED:
        for step in steps:
            if step.leg.state == LegState.STARTED:
                await _create_incoming(flow, step)
        pending = flow._move(
            pending,
            State.INCOMING_CREATED,
            event="incoming_payments_created",
            data={"legs": pending.leg_count},
        )
    now = flow.clock()

    def unquoted(leg: Leg) -> bool:
        expired = leg.state == LegState.QUOTE_CREATED and quote_check.is_expired(leg.quote, now)
        return expired or leg.state == LegState.INCOMING_CREATED

    stale = [step for step in steps if unquoted(step.leg)]
    if pending.state == State.INCOMING_CREATED or (pending.state == State.QUOTE_CREATED and stale):
        for step in stale:
            await seller_payment.create_quote(step)
        debit = _sum([step.leg.debit_amount for step in steps])
        pending = flow._move(
            pending,
            State.QUOTE_CREATED,
            expect=(State.INCOMING_CREATED, State.QUOTE_CREATED),
            event="quotes_created",
            data={"debitAmount": debit},
            debit_amount=debit,
            receive_amount=_sum([step.leg.receive_amount for step in steps]),
        )
    if pending.state != State.QUOTE_CREATED:
        return pending, None
    return pending, await _check_quotes(flow, pending, [step.leg for step in steps])


async def _create_incoming(flow: Flow, step: LegPayment) -> None:
    leg = step.leg
    seller = resolve_seller(flow.settings, flow.store, leg.seller_id)
    wallet = wallet_of(leg.seller_doc) if leg.seller_doc else None
    if wallet is None:
        wallet = await flow.access.wallet(seller, leg.seller_wallet)
    # Kept with the leg: a wallet document fetched here is not fetched again on replay.
    await seller_payment.create_incoming(
        step, seller, wallet, wallet.amount(leg.amount), seller_doc=wallet.to_wire()
    )


async def _check_quotes(flow: Flow, pending: Pending, legs: list[Leg]) -> dict[str, Any]:
    """Each leg's quote by the quote check's rules, and the summed debit by --max-debit;
    a refusal cancels the grant before the buyer is asked (as for a single payment).
    What was checked, each leg's terms, for the ``quote_checked`` event."""
    policy = grant_setup.quote_policy(flow, pending)
    buyer_doc = pending.buyer_doc or {}
    checked: list[dict[str, Any]] = []
    try:
        for leg in legs:
            offer = money.Amount.from_wire((leg.incoming_payment or {})["incomingAmount"])
            try:
                terms = quote_check.check_quote(
                    leg.quote or {},
                    offer=offer,
                    buyer_doc=buyer_doc,
                    policy=policy,
                    now=flow.clock(),
                )
            except FlowError as exc:
                exc.message = f"leg {leg.leg} ({leg.seller_id}): {exc.message}"
                raise
            checked.append({"leg": leg.leg, **terms.to_json()})
        cap = quote_check.buyer_max_debit(policy, buyer_doc)
        total = money.Amount.from_wire(pending.debit_amount)
        if cap is not None and total.value > cap.value:
            raise FlowError(
                f"quote refused: the {len(checked)} legs debit {total} together, over"
                f" --max-debit {cap}",
                hint=f"pass --max-debit {total.decimal} or more to accept it, or use a cheaper"
                " wallet",
                kind=quote_check.REFUSED_KIND,
            )
    except FlowError as exc:
        # A stale cached buyer document is renewed and checked again, as for one seller; a
        # refusal closes every leg's incoming payment.
        seller = flow._seller_of(pending)
        renewed = await grant_setup.renewed_or_refused(flow, pending, seller, exc)
        return await _check_quotes(flow, renewed, legs)
    return {"legs": checked}


# ---------------------------------------------------------------------- paying (step 8)

# The grant's states from which its legs are paid (a partially paid one: its failed legs).
PAYING_STATES = (State.GRANT_ISSUED, State.PAYING, State.PAYMENT_CREATED, State.PARTIALLY_PAID)


class LegPayment(SellerPayment):
    """One leg's payment: the leg's row moves (its events named ``leg_…``); a refusal ends
    the leg, and the grant ends once every leg has (:func:`_settle`)."""

    ready = "quote_created"
    found_by_grant = False

    def __init__(self, flow: Flow, pending: Pending, leg: Leg) -> None:
        super().__init__(flow, pending)
        self.leg = leg

    @property
    def row(self) -> Leg:
        return self.leg

    @property
    def about(self) -> dict[str, Any]:
        return {"leg": self.leg.leg}

    @property
    def label(self) -> str:
        return f"leg {self.leg.leg} ({self.leg.seller_id}): "

    def _transition(self, move: Move) -> None:
        expected = tuple(LegState(s) for s in move.expect)
        self.leg = self.flow.store.transition_leg(
            self.pending.id,
            self.leg.leg,
            LegState(move.to),
            expect=expected,
            event=f"leg_{move.event}",
            data=move.data,
            **move.fields,
        )

    def save(
        self, event: str | None = None, data: dict[str, Any] | None = None, **fields: Any
    ) -> None:
        named = f"leg_{event}" if event else None
        self.leg = self.flow.store.update_leg(
            self.pending.id, self.leg.leg, event=named, data=data, **fields
        )

    def record_error(self, message: str) -> None:
        self.flow.store.record_leg_error(self.pending.id, self.leg.leg, message)

    async def refused(self, exc: op_errors.ResourceError) -> None:
        self._failed(str(exc), expect="paying")

    async def over_limit(self, debit: money.Amount, approved: money.Amount) -> NoReturn:
        message = f"the new quote debits {debit}, more than the {approved} approved"
        if self.leg.state == LegState.PAYING:
            # As a single grant fails: else every replay asks for the same refused quote.
            self._failed(message, expect="paying")
            pending = self.flow._get(self.pending.id)
            await _settle(self.flow, pending, self.flow.store.legs(pending.id))
        else:  # a failed leg's retry: it stays failed, and its grant partially paid
            self.record_error(message)
        raise FlowError(
            f"{self.label}{message}",
            hint="start a new quote for this seller so the buyer can approve the new amount",
            kind="wallet",
            pending_id=self.pending.id,
        )

    async def gave_up(self, payment: models.OutgoingPayment) -> None:
        message = "the wallet gave up on the payment (failed: true)"
        self._failed(message, expect="payment_created", outgoing_payment=payment.to_wire())

    async def sent(self, payment: models.OutgoingPayment) -> None:
        self.move(
            "completed",
            expect=("payment_created",),
            event="completed",
            data={"sentAmount": payment.sent_amount.to_wire()},
            outgoing_payment=payment.to_wire(),
        )

    def _failed(self, message: str, *, expect: str, **fields: Any) -> None:
        data = {"error": message}
        self.move(
            "failed", expect=(expect,), event="failed", data=data, last_error=message, **fields
        )


async def pay_legs(flow: Flow, pending: Pending, client: OpenPaymentsClient) -> Pending:
    """Pay every leg that has not paid, check the payments, and settle the grant."""
    steps = _steps(flow, pending)
    if pending.state == State.PARTIALLY_PAID:
        pending = await _retry_failed(flow, pending, steps)
    elif pending.state == State.GRANT_ISSUED:
        pending = flow._move(
            pending, State.PAYING, event="paying", data={"legs": pending.leg_count}
        )
    if pending.state == State.PAYING:
        for step in steps:
            if step.leg.state in (LegState.QUOTE_CREATED, LegState.PAYING):
                await seller_payment.pay(step, client)
        pending = flow._move(
            pending,
            State.PAYMENT_CREATED,
            expect=State.PAYING,
            event="payments_created",
            data={"legs": [str(step.leg.state) for step in steps]},
        )
    if pending.state == State.PAYMENT_CREATED:
        # Only a cancel that stopped half-way (stop_paying) leaves legs unsent here; its
        # failed legs are given up on too (they would be paid by the next replay otherwise).
        failed = any(step.leg.state == LegState.FAILED for step in steps)
        given_up = ON_CANCEL if failed and cancel_requested(flow, pending) else UNSENT
        await _give_up(steps, given_up, client)
        pending = await _check_payments(flow, pending, client, steps)
    return pending


async def _retry_failed(flow: Flow, pending: Pending, steps: list[LegPayment]) -> Pending:
    """A replay of a partially paid grant: quote each failed leg again (its old quote may be
    spent or expired), within what the buyer approved for it, then pay only those.

    Every new quote first: one over its leg's approval leaves the grant partially paid and
    every leg as they were, so the marketplace, told once, is not told again."""
    failed = [step for step in steps if step.leg.state == LegState.FAILED]
    quotes = [await seller_payment.quote_within_approval(step) for step in failed]
    for step, quote in zip(failed, quotes, strict=True):
        step.move(
            "quote_created",
            expect=("failed",),
            event="requoted",
            data={"old": step.leg.quote_url, "quote": quote.id},
            quote_url=quote.id,
            quote=quote.to_wire(),
            receive_amount=quote.receive_amount.to_wire(),
            outgoing_payment_url=None,
            outgoing_payment=None,
        )
    # A replay that stopped after some of those moves finds them quote_created here.
    retried = [step.leg.leg for step in steps if step.leg.state == LegState.QUOTE_CREATED]
    return flow._move(
        pending,
        State.PAYING,
        expect=State.PARTIALLY_PAID,
        event="retrying_legs",
        data={"legs": retried},
    )


async def _check_payments(
    flow: Flow, pending: Pending, client: OpenPaymentsClient, steps: list[LegPayment]
) -> Pending:
    """Read each created payment until the wallet reports it sent in full or failed (backing
    off as for a single payment); then settle the grant from its legs."""

    async def read() -> bool:
        open_steps = [step for step in steps if step.leg.state == LegState.PAYMENT_CREATED]
        for step in open_steps:
            await seller_payment.read_payment(step, client)
        return not open_steps or all(step.leg.state in LEG_FINAL_STATES for step in steps)

    await seller_payment.read_until_done(flow, read)
    return await _settle(flow, pending, [step.leg for step in steps])


async def _settle(flow: Flow, pending: Pending, legs: list[Leg]) -> Pending:
    """The grant's end once every leg has one: completed; cancelled (a cancel gave up on
    legs that were not sent); partially paid; or failed."""
    if pending.is_final or not all(leg.state in LEG_FINAL_STATES for leg in legs):
        return pending
    paid = [leg.leg for leg in legs if leg.paid]
    if len(paid) == len(legs):
        told = payment_steps.COMPLETED.with_legs(legs)
        return await flow._end(
            pending, State.COMPLETED, told, "completed", data={"legs": len(legs)}
        )
    cancelled = [leg.leg for leg in legs if leg.state == LegState.CANCELLED]
    if cancelled:
        told = Notice.failed("cancelled").with_legs(legs)
        which = {"paid": paid, "cancelled": cancelled}
        return await flow._end(pending, State.CANCELLED, told, "cancelled", data=which)
    failed = [leg for leg in legs if not leg.paid]
    message = "; ".join(f"leg {leg.leg} ({leg.seller_id}): {leg.last_error}" for leg in failed)
    end = State.PARTIALLY_PAID if paid else State.FAILED
    told = Notice.failed(str(end)).with_legs(legs)
    which = {"paid": paid, "failed": [leg.leg for leg in failed]}
    return await flow._end(pending, end, told, str(end), data=which, last_error=message)


# ---------------------------------------------------------------------- cancel

# A leg's states with no payment sent yet (a ``paying`` leg's may have been made: searched).
UNSENT = (LegState.QUOTE_CREATED, LegState.PAYING)
# The legs a cancel gives up on: those not sent, and the failed ones a replay would pay.
ON_CANCEL = (*UNSENT, LegState.FAILED)
CANCEL_REQUESTED = "cancel_requested"


async def stop_paying(flow: Flow, pending: Pending) -> Pending:
    """``pending cancel`` of a split still paying (a run stopped half-way): the legs not sent
    and the failed ones are given up on; the legs whose payment was made go on, as a made
    payment cannot be unmade. The grant ends ``cancelled`` once those are sent (or failed);
    one the wallet is still sending stays ``payment_created`` until ``status`` reads it.

    ``payment_created`` is committed first: from it a replay pays no leg but finishes the
    cancel (:func:`pay_legs`), so a cancel that stops half-way never turns into payments."""
    steps = _steps(flow, pending)
    if not any(step.leg.state in ON_CANCEL for step in steps):
        raise FlowError(
            f"grant {pending.id} is {pending.state} and every leg's payment was made; there"
            " is nothing left to cancel",
            hint="a payment that was made cannot be cancelled here; `opapprove status"
            f" {pending.id}` follows them",
            kind="input",
            pending_id=pending.id,
        )
    pending = request_cancel(flow, pending)
    client = flow.access.client_for(flow._seller_of(pending))
    await _give_up(steps, ON_CANCEL, client)
    return await _check_payments(flow, pending, client, steps)


def request_cancel(flow: Flow, pending: Pending) -> Pending:
    """Commit a cancel's intent before anything is given up on: from then on no leg of the
    grant is paid, and a replay after a crash finishes the cancel (``cancel_requested``).
    A split paying is moved to ``payment_created`` with it (a replay pays no leg from there)."""
    if pending.state == State.PAYING:
        return flow._move(
            pending, State.PAYMENT_CREATED, expect=State.PAYING, event=CANCEL_REQUESTED
        )
    flow.store.add_event(pending.id, CANCEL_REQUESTED, {"state": str(pending.state)})
    return pending


def cancel_requested(flow: Flow, pending: Pending) -> bool:
    """Whether a ``pending cancel`` committed its intent on the grant (and may have stopped
    since, with legs not yet given up on)."""
    return any(event.kind == CANCEL_REQUESTED for event in flow.store.events(pending.id))


def cancel_failed_legs(flow: Flow, pending: Pending) -> list[int]:
    """``pending cancel`` of a partially paid grant gives up on its failed legs; the paid
    legs stay as they are. The numbers of the legs cancelled."""
    cancelled = []
    for step in _steps(flow, pending):
        if step.leg.state == LegState.FAILED:
            _cancel_leg(step)
            cancelled.append(step.leg.leg)
    return cancelled


async def _give_up(
    steps: list[LegPayment], states: tuple[LegState, ...], client: OpenPaymentsClient
) -> None:
    """Cancel each leg in one of ``states``; of a ``paying`` one, unless the buyer's wallet
    has its payment (a run made it, then stopped): that one is made, and goes on."""
    for step in steps:
        if step.leg.state not in states:
            continue
        if step.leg.state == LegState.PAYING:
            found = await seller_payment.find_payment(step, client)
            if found is not None:
                seller_payment.made(step, found, event="payment_found")
                continue
        _cancel_leg(step)


def _cancel_leg(step: LegPayment) -> None:
    """The leg ends ``cancelled``; its incoming payment is closed when the grant ends."""
    leg = step.leg
    data = {"error": leg.last_error}
    step.move("cancelled", expect=(str(leg.state),), event="cancelled", data=data)


async def close_incoming(flow: Flow, pending: Pending) -> None:
    """Complete the incoming payments of the legs that will not be paid (best effort).

    A partially paid grant keeps its failed legs' incoming payments open: its replay
    pays into them."""
    if pending.state == State.PARTIALLY_PAID:
        return
    for leg in flow.store.legs(pending.id):
        url, seller_doc = leg.incoming_payment_url, leg.seller_doc or {}
        if leg.paid or not url or "authServer" not in seller_doc:
            continue
        outcome = await flow.close_incoming_payment(leg.seller_id, url, seller_doc)
        flow.store.add_event(
            pending.id, "incoming_payment_closed", {"leg": leg.leg, "outcome": outcome}
        )
