"""``opapprove demo``: the whole flow on the embedded sandbox, offline, with no config.

It runs in a temporary folder of its own (a fresh key, store and sandbox) and never
touches the user's store; ``--keep DIR`` puts those files in DIR and leaves them there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError
from opapprove.cli.options import FeeOption, LatencyOption, RateOption
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from rich.console import Console

    from opapprove.demo import DemoResult, DemoStep

PERSON_TIMEOUT = 600.0


def demo(
    ctx: typer.Context,
    amount: Annotated[
        str, typer.Option("--amount", metavar="AMOUNT", help="What the seller receives (USD).")
    ] = "12.34",
    browser: Annotated[
        bool,
        typer.Option("--browser", help="Open the real consent page; you click Approve yourself."),
    ] = False,
    keep: Annotated[
        Path | None,
        typer.Option("--keep", metavar="DIR", help="Keep the demo's key and store in DIR."),
    ] = None,
    latency: LatencyOption = 0.0,
    buyer_asset: Annotated[
        str | None,
        typer.Option(
            "--buyer-asset",
            metavar="CODE[:SCALE]",
            help="The buyer's wallet holds this (EUR, JPY, EUR:2...); the seller holds USD.",
        ),
    ] = None,
    fee: FeeOption = None,
    rate: RateOption = None,
    split: Annotated[
        int,
        typer.Option(
            "--split",
            metavar="N",
            min=0,
            max=20,
            help="Pay N sellers their share of --amount with one approval (a split payment).",
        ),
    ] = 0,
) -> None:
    """Run the whole approval flow on the embedded sandbox and show each step's timing.

    Seller, buyer, wallets, auth server, listener: all on 127.0.0.1, nothing else
    touched. Exit 0 only when the payment completed.
    """
    import tempfile

    from opapprove.openpayments.errors import AmountError
    from opapprove.openpayments.money import check_decimal

    runtime = Runtime.of(ctx)
    try:
        check_decimal(amount)
    except AmountError as exc:
        raise CliError(f"invalid --amount: {exc.message}", hint=exc.hint or "e.g. 12.34") from exc
    from opapprove.demo import DemoMoney, shares

    try:
        money = DemoMoney.parse(buyer_asset, fee, rate or [])
        if split:
            shares(amount.strip(), split)
    except AmountError as exc:
        raise CliError(exc.message, hint=exc.hint) from exc
    output = runtime.output

    def on_step(step: DemoStep) -> None:
        output.info(f"  step {step.number} done: {step.title}")

    def wait_for_person(url: str) -> None:
        import webbrowser

        # A person is watching in this mode, so the URL goes to stderr even with --json.
        output.raw_stderr(f"Approve (or reject) the payment in your browser:\n{url}")
        if not webbrowser.open(url):
            output.warn("could not open a browser here; open the URL above yourself")
        output.raw_stderr(f"Waiting up to {PERSON_TIMEOUT:g} s for the wallet's redirect...")

    def run_in(work: Path) -> DemoResult:
        from opapprove.demo import run_demo

        where = f"files kept in {work}" if keep is not None else "temporary files"
        output.info(f"Running the demo on an embedded sandbox ({where})")
        try:
            return runtime.run(
                run_demo(
                    amount=amount.strip(),
                    work_dir=work,
                    on_step=on_step,
                    on_exchange=runtime.on_exchange(),
                    wait_for_person=wait_for_person if browser else None,
                    person_timeout=PERSON_TIMEOUT,
                    latency=latency,
                    money=money,
                    split=split,
                )
            )
        except TimeoutError as exc:
            raise CliError(
                "nobody approved the payment in time",
                hint="run the demo again and click Approve on the consent page",
                kind="timeout",
            ) from exc

    if keep is not None:
        work = keep.expanduser().absolute()
        if work.exists() and not work.is_dir():
            raise CliError(f"--keep {keep} is not a directory", hint="give a directory path")
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        result = run_in(work)
    else:
        with tempfile.TemporaryDirectory(prefix="opapprove-demo-") as tmp:
            result = run_in(Path(tmp))
    _show(runtime, result, kept=keep is not None)


def _show(runtime: Runtime, result: DemoResult, *, kept: bool) -> None:
    from opapprove.cli.views import pending_json

    pending = result.pending
    data: dict[str, Any] = {
        "state": str(pending.state),
        "pendingId": pending.id,
        "amount": pending.amount,
        "approvalUrl": result.approval_url,
        "steps": [
            {
                "step": s.number,
                "what": s.title,
                "requests": s.requests,
                "ms": round(s.seconds * 1000, 1),
                "detail": s.detail,
            }
            for s in result.steps
        ],
        # Every leg's debit and receive, its rate and fee (one leg per seller).
        "legs": result.legs,
        "balancesBefore": result.balances_before,
        "balancesAfter": result.balances_after,
        "sandboxUrl": result.sandbox_url,
        "listenerUrl": result.listener_url,
        "requests": result.exchanges,
        "seconds": round(result.seconds, 3),
        "store": str(result.store_path) if kept else None,
        "pending": pending_json(pending, now=pending.updated_at),
    }

    def render(console: Console) -> None:
        _render(console, result, kept=kept)

    done = str(pending.state) == "completed"
    code = 0 if done else exitcodes.for_state(str(pending.state)) or exitcodes.UNEXPECTED
    runtime.conclude(data, render, ok=done, exit_code=code)


def _render(console: Console, result: DemoResult, *, kept: bool) -> None:
    from rich.table import Table

    from opapprove.cli.views import amount

    pending = result.pending
    table = Table(title="opapprove demo: the seed's eight steps", header_style="bold")
    table.add_column("step", justify="right")
    table.add_column("what")
    table.add_column("requests", justify="right")
    table.add_column("ms", justify="right")
    table.add_column("detail", overflow="fold")
    for s in result.steps:
        table.add_row(
            str(s.number), s.title, str(s.requests), f"{s.seconds * 1000:.1f}", s.detail or ""
        )
    console.print(table)
    lines = [
        f"sandbox:       {result.sandbox_url}",
        f"listener:      {result.listener_url}",
        "approval URL:",
        f"  {result.approval_url}",
        f"debit:         {amount(pending.debit_amount)}  receive: {amount(pending.receive_amount)}",
        *(
            f"  {leg['seller']}: rate {leg['rateText']}, fee "
            + (f"{leg['fee']} {leg['feeAssetCode']} ({leg['feePercent']}%)" if leg["fee"] else "?")
            for leg in result.legs
            if leg.get("rateText")
        ),
        "balances:      "
        + "; ".join(
            f"{name} {before} -> {result.balances_after.get(name, '?')}"
            for name, before in result.balances_before.items()
        ),
        f"requests:      {result.exchanges} in {result.seconds:.2f} s",
        f"final state:   {pending.state}"
        + (f" ({pending.last_error})" if pending.last_error else ""),
    ]
    if kept:
        lines.append(f"store kept:    {result.store_path}")
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)
    style = "bold green" if str(pending.state) == "completed" else "bold red"
    verdict = (
        "Payment completed." if str(pending.state) == "completed" else "Payment NOT completed."
    )
    console.print(verdict, style=style, markup=False)
    sys.stdout.flush()
