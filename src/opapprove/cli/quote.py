"""``opapprove quote start``: steps 1-7 of the seed's flow, ending at the buyer's approval URL.

The seed's ``startQuoteFlow`` / ``POST /offers/{offerId}/quotes/start``. With ``--poll``
the grant asks for no finish redirect and the command waits until the buyer approved
and the payment went out, which needs no listener at all.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError
from opapprove.cli.options import (
    AMOUNT_OPTION,
    OFFER_OPTION,
    BuyerOption,
    SellerOption,
    seconds_option,
)
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from rich.console import Console

    from opapprove.approvals.flow import Flow
    from opapprove.approvals.quote_check import QuoteTerms
    from opapprove.approvals.records import Leg, Pending
    from opapprove.approvals.split import Payee
    from opapprove.openpayments.rates import Rates

app = typer.Typer(
    help="Start a quote: everything up to the buyer's approval.", no_args_is_help=True
)

# Between checks of a created payment that the wallet is still sending (--poll).
SENDING_CHECK_INTERVAL = 0.5


@app.command("start")
def start(
    ctx: typer.Context,
    offer: Annotated[str, OFFER_OPTION],
    buyer: BuyerOption,
    amount: Annotated[str | None, AMOUNT_OPTION] = None,
    pay: Annotated[
        list[str] | None,
        typer.Option(
            "--pay",
            metavar="SELLER=AMOUNT",
            help="Split: pay this seller this share (repeat per seller; one approval for all).",
        ),
    ] = None,
    seller_id: SellerOption = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the approval URL in this machine's browser.")
    ] = False,
    qr: Annotated[bool, typer.Option("--qr", help="Also draw the approval URL as a QR code.")] = (
        False
    ),
    poll: Annotated[
        bool,
        typer.Option(
            "--poll",
            help="Ask for no finish redirect; wait here until approved and paid (no listener).",
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        seconds_option("--timeout", "With --poll: seconds to wait (default: poll_timeout)."),
    ] = None,
    max_debit: Annotated[
        str | None,
        typer.Option(
            "--max-debit",
            metavar="AMOUNT",
            help="Refuse a quote that debits the buyer more than this (the buyer's asset).",
        ),
    ] = None,
    currency: Annotated[
        str | None,
        typer.Option(
            "--currency",
            metavar="CODE",
            help="The offer's asset; refused unless the seller's wallet holds it.",
        ),
    ] = None,
) -> None:
    """Start a quote for an offer and print the buyer's approval URL.

    Steps 1-7: wallet addresses, incoming payment, quote, interactive outgoing grant.
    The buyer approves at the URL; the wallet then redirects to the listener
    (`opapprove listen`), or paste that redirect to `opapprove finish URL`.
    """
    runtime = Runtime.of(ctx)
    if timeout is not None and not poll:
        raise CliError("--timeout goes with --poll", hint="add --poll, or leave --timeout out")
    payees = _payees(pay, amount=amount, seller_id=seller_id)
    settings = runtime.settings()
    wait = float(timeout if timeout is not None else settings.poll_timeout)

    legs: list[Leg] = []

    async def go() -> tuple[Pending, Pending]:
        from opapprove.approvals.records import State
        from opapprove.cli.flows import open_flow

        async with open_flow(runtime) as session:
            flow = session.flow
            started = await flow.start_quote(
                offer_id=offer,
                buyer_wallet=buyer,
                amount=amount or "",
                seller_id=seller_id,
                poll=poll,
                max_debit=max_debit,
                currency=currency,
                payees=payees,
            )
            if started.state != State.AWAITING_APPROVAL:
                # A wallet that grants without asking the buyer: pay right away.
                done = await flow.replay(started.id)
            else:
                legs[:] = flow.store.legs(started.id)
                _show_started(runtime, started, legs, qr=qr, open_browser=open_browser, poll=poll)
                if not poll:
                    return started, started
                done = await _wait_until_paid(runtime, flow, started, wait)
            legs[:] = flow.store.legs(started.id)
            return started, done

    started, pending = runtime.run(go())
    _finish_output(runtime, started, pending, legs)


def _payees(
    pay: list[str] | None, *, amount: str | None, seller_id: str | None
) -> list[Payee] | None:
    """``--pay`` as payees (a split payment), or ``None`` for one seller (``--amount``).

    Only what the command's options say is checked here; the payees themselves (each
    share, the sum) are the flow's to check, before anything is stored."""
    if not pay:
        if amount is None:
            raise CliError(
                "give what the seller receives",
                hint="--amount AMOUNT for one seller, or --pay SELLER=AMOUNT per seller",
            )
        return None
    if seller_id is not None:
        raise CliError(
            "--seller names one seller, but --pay names the sellers of a split payment",
            hint="leave --seller out and give each seller as --pay SELLER=AMOUNT",
        )
    from opapprove.approvals.split import parse_pay

    return [parse_pay(text) for text in pay]


def _show_started(
    runtime: Runtime,
    pending: Pending,
    legs: list[Leg],
    *,
    qr: bool,
    open_browser: bool,
    poll: bool,
) -> None:
    """What a person needs at once: the steps done and the URL (before any waiting)."""
    url = pending.interact_redirect or ""
    output = runtime.output
    if not output.json_mode:
        _render_steps(output.out, pending, _reference_rates(runtime), legs)
        output.out.print("Approval URL (open it in the buyer's browser):", markup=False)
        output.out.print(url, markup=False, soft_wrap=True)
        if qr:
            _draw_qr(url, sys.stdout)
        sys.stdout.flush()
        if poll:
            output.info("Waiting for the buyer to approve (polling the wallet; Ctrl-C stops)...")
        else:
            finish = pending.finish_uri or ""
            output.info(
                f"After approval the wallet redirects the browser to {finish.split('?')[0]}: run "
                "`opapprove listen` there, or paste the redirect URL to `opapprove finish URL`."
            )
    else:
        if poll:
            # stdout's one document comes when the wait ends; a script needs the URL now
            # (to hand it to a headless approver), so it gets one JSON line on stderr first.
            from opapprove.cli.output import dumps

            line = {"event": "approvalNeeded", "pendingId": pending.id, "approvalUrl": url}
            output.raw_stderr(dumps(line))
        if qr:
            # stdout holds exactly one JSON document; the picture is for a person, on stderr.
            _draw_qr(url, sys.stderr)
    if open_browser and url:
        import webbrowser

        if not webbrowser.open(url):
            output.warn("could not open a browser here; open the URL yourself")


def _draw_qr(url: str, out: Any) -> None:
    import segno

    try:
        code = segno.make(url, error="l")
    except segno.DataOverflowError:
        # The wallet picks the URL; past ~2,900 bytes no QR code holds it. The grant is
        # stored and the URL shown: a picture that cannot be drawn is no failure.
        out.write(f"(no QR code: the approval URL is {len(url)} characters, too long for one)\n")
    else:
        code.terminal(out=out, compact=True)
    out.flush()


async def _wait_until_paid(runtime: Runtime, flow: Flow, pending: Pending, wait: float) -> Pending:
    import asyncio
    import time

    from opapprove.approvals.records import State
    from opapprove.openpayments.client import GrantTimeout

    deadline = time.monotonic() + wait
    runtime.resume = (pending.id, f"opapprove pending replay {pending.id}")
    try:
        with runtime.output.waiting("waiting for the buyer to approve"):
            pending = await flow.wait_for_approval(pending.id, timeout=wait)
    except GrantTimeout as exc:
        raise CliError(
            f"the buyer did not approve within {wait:g} s (grant {pending.id})",
            hint=f"the grant is still open: `opapprove pending replay {pending.id}` polls again,"
            f" `opapprove pending cancel {pending.id}` gives up",
            kind="timeout",
            pending_id=pending.id,
        ) from exc
    runtime.output.info(f"Approved; state {pending.state}.")
    runtime.resume = (pending.id, f"opapprove status {pending.id} --watch")
    with runtime.output.waiting("waiting for the payment to be sent"):
        while pending.state == State.PAYMENT_CREATED and time.monotonic() < deadline:
            await asyncio.sleep(SENDING_CHECK_INTERVAL)
            pending = await flow.refresh(pending.id)
    if pending.state == State.PAYMENT_CREATED:
        from opapprove.approvals.replay import waiting_on

        raise CliError(
            f"the payment was created and not seen through within {wait:g} s:"
            f" {waiting_on(pending)}",
            hint=f"follow it with `opapprove status {pending.id} --watch`",
            kind="timeout",
            pending_id=pending.id,
        )
    return pending


def quote_terms(pending: Pending, rates: Rates) -> QuoteTerms | None:
    from opapprove.approvals.quote_check import terms_or_none

    return terms_or_none(pending.debit_amount, pending.receive_amount, rates)


def _reference_rates(runtime: Runtime) -> Rates:
    from opapprove.openpayments.errors import AmountError
    from opapprove.openpayments.rates import Rates

    try:
        return Rates.parse(runtime.settings().reference_rates)
    except AmountError:
        return Rates()  # refused with its own line when a flow starts


def _render_steps(console: Console, pending: Pending, rates: Rates, legs: list[Leg]) -> None:
    from opapprove.approvals import quote_check
    from opapprove.cli.views import amount

    buyer_doc = pending.buyer_doc or {}
    seller_doc = pending.seller_doc or {}
    quote = pending.quote or {}
    terms = quote_terms(pending, rates)
    incoming = pending.incoming_payment or {}

    def asset(doc: dict[str, Any]) -> str:
        return f"{doc.get('assetCode', '?')}, scale {doc.get('assetScale', '?')}"

    lines = [
        f"Quote started for offer {pending.offer_id}: pending {pending.id}",
        f"  1. wallet addresses   buyer {buyer_doc.get('id', pending.buyer_wallet)}"
        f" ({asset(buyer_doc)}); seller {seller_doc.get('id', pending.seller_wallet)}"
        f" ({asset(seller_doc)})",
        f"  2. incoming payment   {pending.incoming_payment_url}"
        f" for {amount(incoming.get('incomingAmount')) or pending.amount}",
        "  3. quote              "
        + (terms.line() if terms else f"debit {amount(pending.debit_amount)}")
        + (f", expires {quote['expiresAt']}" if quote.get("expiresAt") else ""),
    ]
    if legs:
        # A split payment: an incoming payment and a quote per seller, one grant for the sum.
        lines[1] = f"  1. wallet addresses   buyer {buyer_doc.get('id', pending.buyer_wallet)}"
        lines[2:] = [
            f"  {'2-3. leg ' + str(leg.leg):<21}{leg.seller_id} {leg.seller_wallet}:"
            f" incoming payment {leg.incoming_payment_url}; quote "
            + (
                t.line()
                if (t := quote_check.terms_or_none(leg.debit_amount, leg.receive_amount, rates))
                else f"debit {amount(leg.debit_amount)}"
            )
            for leg in legs
        ]
    lines.append(
        f"  4. approval           interactive outgoing-payment grant for"
        f" {amount(pending.debit_amount)} requested from {pending.grant_url}"
        if legs
        else f"  4. approval           interactive outgoing-payment grant requested from"
        f" {pending.grant_url}"
    )
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


def _finish_output(runtime: Runtime, started: Pending, pending: Pending, legs: list[Leg]) -> None:
    import time

    from opapprove.cli.views import amount, leg_line, pending_json

    data = pending_json(pending, now=time.time(), legs=legs)
    data["approvalUrl"] = started.interact_redirect
    # Debit, receive, the rate the quote implies and its fee, on every run (issue 16).
    terms = quote_terms(pending, _reference_rates(runtime))
    data["quoteTerms"] = terms.to_json() if terms else None

    def render(console: Console) -> None:
        line = f"Payment {pending.state}"
        paid = pending.outgoing_payment or {}
        if paid.get("sentAmount"):
            line += f": sent {amount(paid['sentAmount'])}"
        if pending.outgoing_payment_url:
            line += f" ({pending.outgoing_payment_url})"
        if pending.last_error and pending.is_final and str(pending.state) != "completed":
            line += f" — {pending.last_error}"
        console.print(line, markup=False, soft_wrap=True)
        for leg in legs:
            console.print(f"  leg {leg.leg}  {leg_line(leg)}", markup=False, soft_wrap=True)

    code = exitcodes.for_state(str(pending.state)) or exitcodes.OK
    if runtime.output.json_mode:
        runtime.conclude(data, exit_code=code)
    elif started is not pending:  # else everything was shown before waiting
        runtime.conclude(data, render, exit_code=code)
