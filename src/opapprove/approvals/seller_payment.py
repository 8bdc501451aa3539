"""One seller's payment, from its incoming payment to its outgoing payment: a single grant's
payment and each leg of a split payment go through these same steps.

The step that moves money is guarded: ``paying`` is committed (durably) before the
outgoing payment is created, and from ``paying`` the buyer's wallet is first searched for
the payment a crashed run may have made (:func:`find_payment`), so a replay never pays
twice. What a grant and a leg do differently (which row moves, their events' names, what a
refusal ends) is each kind of :class:`SellerPayment`'s: ``payment_steps.GrantPayment`` and
``split_flow.LegPayment``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from opapprove.approvals import quote_check
from opapprove.approvals.access import incoming_grant, quote_grant, wallet_of
from opapprove.approvals.errors import translated
from opapprove.approvals.records import Leg, Pending, Seller
from opapprove.approvals.sellers import resolve_seller
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import models, money

if TYPE_CHECKING:
    from opapprove.approvals.flow import Flow
    from opapprove.openpayments.client import OpenPaymentsClient

# Reading a payment the wallet has not sent yet: first wait, and the longest one.
PAYMENT_POLL_FIRST = 0.05
PAYMENT_POLL_MAX = 2.0


@dataclass(frozen=True)
class Move:
    """A step's move of a payment's row; states are named by their value (``"paying"``):
    a grant's and a leg's share them."""

    to: str
    expect: tuple[str, ...]
    event: str
    data: dict[str, Any] | None
    fields: dict[str, Any]


class SellerPayment(ABC):
    """One seller's payment as the steps see it: the row that holds its quote and outgoing
    payment (the grant's own, or its leg's), and how that row moves."""

    # The state a payment starts paying from.
    ready: str
    # Whether a payment whose metadata names this grant is this one. A single grant's is;
    # every leg of a split carries the grant's id (a failed one too, before its retry),
    # so a leg's payment is known by its quote alone.
    found_by_grant: bool

    def __init__(self, flow: Flow, pending: Pending) -> None:
        self.flow = flow
        self.pending = pending

    @property
    @abstractmethod
    def row(self) -> Pending | Leg: ...

    @property
    def about(self) -> dict[str, Any]:
        """What tells this payment apart in its events and in the payment's metadata."""
        return {}

    @property
    def label(self) -> str:
        """How messages name it, before what happened to it."""
        return ""

    def move(
        self,
        to: str,
        *,
        expect: tuple[str, ...],
        event: str,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """The row from one of ``expect`` to ``to``, with ``fields``, logged as ``event``."""
        self._transition(Move(to, expect, event, data, fields))

    @abstractmethod
    def _transition(self, move: Move) -> None: ...

    @abstractmethod
    def save(
        self, event: str | None = None, data: dict[str, Any] | None = None, **fields: Any
    ) -> None:
        """``fields`` of the row without a state change; with ``event``, logged."""

    @abstractmethod
    def record_error(self, message: str) -> None: ...

    @abstractmethod
    async def refused(self, exc: op_errors.ResourceError) -> None:
        """The wallet refused to make the payment (a 4xx: it made none)."""

    @abstractmethod
    async def over_limit(self, debit: money.Amount, approved: money.Amount) -> NoReturn:
        """A new quote debits more than the buyer approved for this payment."""

    @abstractmethod
    async def gave_up(self, payment: models.OutgoingPayment) -> None:
        """The wallet reports the payment failed."""

    @abstractmethod
    async def sent(self, payment: models.OutgoingPayment) -> None:
        """The wallet reports the payment sent in full."""

    async def new_quote(self) -> models.Quote:
        """A quote from the buyer's wallet for the incoming payment (the grant's seller's
        quote grant: a split's lead seller asks for every leg)."""
        seller = self.flow._seller_of(self.pending)
        buyer = wallet_of(self.pending.buyer_doc)
        receiver = self.row.incoming_payment_url
        assert receiver
        body = models.CreateQuote(wallet_address=buyer.id, receiver=receiver)
        client = self.flow.access.client_for(seller)
        return await self.flow.access.with_grant(
            seller,
            buyer.auth_server,
            quote_grant(seller),
            lambda token: client.create_quote(buyer.resource_server, token, body),
        )


async def create_incoming(
    step: SellerPayment,
    seller: Seller,
    wallet: models.WalletAddress,
    amount: money.Amount,
    **fields: Any,
) -> None:
    """Step 2: the seller's incoming payment for ``amount``, kept with ``fields``."""
    body = models.CreateIncomingPayment(
        wallet_address=wallet.id,
        incoming_amount=models.AmountModel.of(amount),
        metadata={"offerId": step.pending.offer_id, "pendingId": step.pending.id, **step.about},
    )
    client = step.flow.access.client_for(seller)
    incoming = await step.flow.access.with_grant(
        seller,
        wallet.auth_server,
        incoming_grant(seller),
        lambda token: client.create_incoming_payment(wallet.resource_server, token, body),
    )
    step.move(
        "incoming_created",
        expect=("started",),
        event="incoming_payment_created",
        data={"incomingPayment": incoming.id},
        incoming_payment_url=incoming.id,
        incoming_payment=kept(incoming),
        **fields,
    )


async def create_quote(step: SellerPayment) -> None:
    """Step 3: the quote, kept with what it debits and delivers (a stale one is replaced)."""
    quote = await step.new_quote()
    debit = quote.debit_amount.to_wire()
    step.move(
        "quote_created",
        expect=("incoming_created", "quote_created"),
        event="quote_created",
        data={"quote": quote.id, "debitAmount": debit},
        quote_url=quote.id,
        quote=quote.to_wire(),
        debit_amount=debit,
        receive_amount=quote.receive_amount.to_wire(),
    )


async def quote_within_approval(step: SellerPayment) -> models.Quote:
    """A new quote, refused (:meth:`SellerPayment.over_limit`) if it debits more than the
    buyer approved for this payment (quotes live 5 min, approvals 10)."""
    quote = await step.new_quote()
    approved = money.Amount.from_wire(step.row.debit_amount)
    debit = quote.debit_amount.to_amount()
    if not debit.same_asset(approved) or debit.value > approved.value:
        await step.over_limit(debit, approved)
    return quote


async def pay(step: SellerPayment, client: OpenPaymentsClient) -> None:
    """Step 8: ``paying``, then the outgoing payment, made once; ends ``payment_created``,
    or as the refusal of a payment ends it."""
    if step.row.state == "paying":
        found = await find_payment(step, client)
        if found is not None:
            made(step, found, event="payment_found")
            return
    else:
        step.move("paying", expect=(step.ready,), event="paying")
    if quote_check.is_expired(step.row.quote, step.flow.clock()):
        quote = await quote_within_approval(step)
        # Committed before the payment is made, so a replay searches for the right quote.
        step.save(
            "requoted",
            {
                "old": step.row.quote_url,
                "quote": quote.id,
                "debitAmount": quote.debit_amount.to_wire(),
            },
            quote_url=quote.id,
            quote=quote.to_wire(),
            receive_amount=quote.receive_amount.to_wire(),
        )
    quote_url = step.row.quote_url
    assert quote_url
    try:
        payment = await create_payment(step.flow, step.pending, client, quote_url, **step.about)
    except op_errors.ResourceError as exc:
        if exc.status >= 500:
            # The wallet may have made the payment before it failed: like a dropped
            # connection, stay `paying` so a replay looks for it before paying again.
            step.record_error(str(exc))
            raise translated(
                exc,
                f"{step.label}the wallet failed while creating the payment",
                hint=f"replay it with `opapprove pending replay {step.pending.id}`: it checks"
                " for a payment already made before making one",
                pending_id=step.pending.id,
            ) from exc
        await step.refused(exc)
        return
    made(step, payment, event="payment_created")


def made(step: SellerPayment, payment: models.OutgoingPayment, *, event: str) -> None:
    """``paying`` → ``payment_created``: the payment made now, or found made before."""
    step.move(
        "payment_created",
        expect=("paying",),
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


async def find_payment(
    step: SellerPayment, client: OpenPaymentsClient
) -> models.OutgoingPayment | None:
    """The payment a crashed run may already have made for this quote, if any."""
    buyer = wallet_of(step.pending.buyer_doc)
    quote_url, pending_id = step.row.quote_url, step.pending.id

    async def search(token: str) -> models.OutgoingPayment | None:
        async for payment in client.iter_outgoing_payments(buyer.resource_server, token, buyer.id):
            named = step.found_by_grant and (payment.metadata or {}).get("pendingId") == pending_id
            if payment.quote_id == quote_url or named:
                return payment
        return None

    found = await step.flow.access.with_access_token(step.pending, client, search)
    step.flow.store.add_event(
        pending_id, "payment_search", {**step.about, "found": found.id if found else None}
    )
    return found


async def read_payment(step: SellerPayment, client: OpenPaymentsClient) -> None:
    """The payment as the wallet has it now: failed, sent in full, or saved as it stands."""
    url = step.row.outgoing_payment_url
    assert url
    payment = await step.flow.access.with_access_token(
        step.pending, client, lambda token: client.get_outgoing_payment(url, token)
    )
    if payment.failed:
        await step.gave_up(payment)
    elif not sent_in_full(payment):
        step.save(outgoing_payment=payment.to_wire())
    else:
        # The buyer's wallet says it sent the payment; the seller is paid when the seller's
        # own wallet says it received it. A buyer can name any wallet, one of their own
        # making too, and that wallet can report a payment that never left.
        incoming = await seller_received(step)
        if arrived(incoming, payment):
            await step.sent(payment)
            return
        first = not receipt_awaited(step.row.outgoing_payment)
        step.save(
            "receipt_awaited" if first else None,
            {"receivedAmount": incoming.received_amount.to_wire()} if first else None,
            outgoing_payment=payment.to_wire(),
            incoming_payment=kept(incoming),  # what `status` shows: received so far
        )


def kept(incoming: models.IncomingPayment) -> dict[str, Any]:
    """An incoming payment as the store keeps it: without its methods, whose ilp
    sharedSecret is a secret."""
    return {k: v for k, v in incoming.to_wire().items() if k != "methods"}


async def seller_received(step: SellerPayment) -> models.IncomingPayment:
    """The payment's incoming payment as the seller's own wallet has it now."""
    row, flow = step.row, step.flow
    url = row.incoming_payment_url
    assert url
    seller = resolve_seller(flow.settings, flow.store, row.seller_id)
    client = flow.access.client_for(seller)
    return await flow.access.with_grant(
        seller,
        wallet_of(row.seller_doc).auth_server,
        incoming_grant(seller),
        lambda token: client.get_incoming_payment(url, token),
    )


def arrived(incoming: models.IncomingPayment, payment: models.OutgoingPayment) -> bool:
    """The seller's wallet has received what the payment was to deliver (its incoming
    payment's ``incomingAmount``, else the payment's ``receiveAmount``)."""
    wanted = incoming.incoming_amount or payment.receive_amount
    received = incoming.received_amount
    return received.same_asset(wanted) and int(received.value) >= int(wanted.value)


async def read_until_done(flow: Flow, read: Callable[[], Awaitable[bool]]) -> None:
    """``read()`` until it is done (it returns true), for at most the request timeout.

    A wallet creates a payment unsent (Rafiki: ``sentAmount`` 0) and sends it once funded,
    so the reads back off from ``PAYMENT_POLL_FIRST`` s up to ``PAYMENT_POLL_MAX`` s; a
    payment still unsent then stays ``payment_created``, and ``status`` or ``pending
    replay`` looks again later."""
    delay, waited = PAYMENT_POLL_FIRST, 0.0
    budget = float(flow.settings.timeout)
    while not await read() and waited < budget:
        await flow.sleep(delay)
        waited += delay
        delay = min(delay * 2, PAYMENT_POLL_MAX)


def receipt_awaited(payment: dict[str, Any] | None) -> bool:
    """A created payment (as stored) that the buyer's wallet reports sent in full: what is
    awaited is the seller's wallet showing it received, not the buyer's wallet sending."""
    return payment is not None and sent_in_full(models.OutgoingPayment.model_validate(payment))


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
