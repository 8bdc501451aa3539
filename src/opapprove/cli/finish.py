"""``opapprove finish URL``: the wallet's redirect, pasted by hand instead of caught by ``listen``.

The same verification as the listener: the interaction hash must match this grant's
nonces, or nothing is paid (exit 7).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console

    from opapprove.approvals.records import Leg, Pending


def finish(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL",
            help="The whole URL the wallet redirected the browser to (.../payments/finish?...);"
            " '-' reads it from stdin.",
        ),
    ],
) -> None:
    """Finish a payment from the wallet's redirect URL: verify, continue the grant, pay.

    Exit 0 when the payment was made, 6 if the buyer rejected or the approval expired,
    7 if the URL does not verify (nothing is paid).
    """
    runtime = Runtime.of(ctx)
    if url.strip() == "-":
        if sys.stdin.isatty():
            raise CliError("'-' reads the URL from stdin, but stdin is a terminal", hint="pipe it")
        url = sys.stdin.readline()
    if not url.strip():
        raise CliError("the URL is empty", hint="paste the whole redirect URL, in quotes")
    _refuse_a_cut_url(url)

    async def go() -> tuple[Pending, list[Leg]]:
        from opapprove.cli.flows import open_flow

        async with open_flow(runtime) as session:
            # Continuing the grant can wait as long as the wallet's continue.wait says.
            with runtime.output.waiting("continuing the grant and paying"):
                pending = await session.flow.finish_url(url)
            return pending, session.flow.store.legs(pending.id) if pending.is_split else []

    pending, legs = runtime.run(go())
    show_outcome(runtime, pending, legs)


def _refuse_a_cut_url(url: str) -> None:
    """A redirect pasted unquoted reaches us cut at its first ``&``: say so, not "forged"."""
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(url.strip()).query)
    if "pendingId" in query and not {"interact_ref", "hash", "result"} & query.keys():
        raise CliError(
            "the URL ends after pendingId: a wallet's redirect also carries interact_ref and"
            " hash (or result)",
            hint="put the whole URL in quotes: unquoted, the shell cuts it at the first &",
        )


def show_outcome(runtime: Runtime, pending: Pending, legs: Sequence[Leg] = ()) -> None:
    import time

    from opapprove.approvals.replay import waiting_on
    from opapprove.cli.views import amount, leg_line, pending_json

    data = pending_json(pending, now=time.time(), legs=legs)

    def render(console: Console) -> None:
        paid = pending.outgoing_payment or {}
        state = str(pending.state)
        if state == "completed":
            line = f"Payment completed for offer {pending.offer_id}"
            if paid.get("sentAmount"):
                line += f": sent {amount(paid['sentAmount'])}"
        elif state == "payment_created":
            line = (
                f"Payment created for offer {pending.offer_id}; {waiting_on(pending)}"
                f" (follow it: opapprove status {pending.id} --watch)"
            )
        else:
            line = f"Grant {pending.id} is {state}"
            if pending.last_error:
                line += f": {pending.last_error}"
        console.print(line, markup=False, soft_wrap=True)
        if pending.outgoing_payment_url:
            console.print(f"  outgoing payment: {pending.outgoing_payment_url}", markup=False)
        for leg in legs:
            console.print(f"  leg {leg.leg}:  {leg_line(leg)}", markup=False, soft_wrap=True)
        console.print(f"  pending id:       {pending.id}", markup=False)

    runtime.conclude(data, render, exit_code=exitcodes.for_state(str(pending.state)) or 0)
