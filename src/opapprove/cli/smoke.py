"""``opapprove smoke``: the flow up to the buyer's approval, then cancelled, for CI.

Nobody clicks Approve in CI: the run checks the seller's key and wallet, the buyer's
wallet, steps 1-7 of the flow, that the approval URL answers, and cancels the grant.
One line per step, ``--json``, ``--junit FILE`` for dashboards; the exit code is the
first failure's. No webhooks are sent for smoke grants.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opapprove.cli.options import AMOUNT_OPTION, OFFER_OPTION, BuyerOption, SellerOption
from opapprove.cli.runtime import Runtime
from opapprove.openpayments.redaction import redact_text

if TYPE_CHECKING:
    from rich.console import Console

    from opapprove.diagnostics.smoke import SmokeReport

MARKS = {"pass": "pass", "fail": "FAIL", "skip": "skip"}


def _redacted(report: SmokeReport) -> SmokeReport:
    """The report with anything token-like in messages masked (it goes to files and CI logs)."""
    steps = [
        dataclasses.replace(
            step,
            message=redact_text(step.message),
            hint=redact_text(step.hint) if step.hint else None,
        )
        for step in report.steps
    ]
    return dataclasses.replace(report, steps=steps)


def smoke(
    ctx: typer.Context,
    buyer: BuyerOption,
    amount: Annotated[str, AMOUNT_OPTION],
    seller_id: SellerOption = None,
    offer: Annotated[str | None, OFFER_OPTION] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", metavar="FILE", help="Also write JUnit XML here.")
    ] = None,
) -> None:
    """Smoke-test real wallets up to the approval URL, then cancel the grant (for CI).

    Without --offer the offer id is smoke-<time>. Exit 0 when every step passes, else the
    first failing step's exit code.
    """
    from opapprove.approvals.flow import Flow
    from opapprove.diagnostics.smoke import run_smoke, to_junit

    runtime = Runtime.of(ctx)
    settings = runtime.settings()
    store = runtime.store()

    async def go() -> SmokeReport:
        async with Flow(store, settings, on_exchange=runtime.on_exchange()) as flow:
            return await run_smoke(
                flow, buyer=buyer, amount=amount, seller_id=seller_id, offer_id=offer
            )

    report = _redacted(runtime.run(go()))
    if junit is not None:
        from opapprove.cli.files import write_report

        write_report(
            junit, to_junit(report), what="the JUnit report", hint="choose another --junit path"
        )

    def render(console: Console) -> None:
        width = max(len(step.name) for step in report.steps)
        for step in report.steps:
            line = f"{MARKS[step.status]}  {step.name:<{width}}  {step.message}"
            if step.status != "skip":
                line += f"  ({step.seconds * 1000:.0f} ms)"
            console.print(line, markup=False, soft_wrap=True)
            if step.status == "fail" and step.hint:
                console.print(f"      {'':<{width}}  → {step.hint}", markup=False, soft_wrap=True)
        failed = report.first_failure
        verdict = "smoke: ok" if failed is None else f"smoke: FAILED at {failed.name}"
        console.print(verdict, markup=False)

    runtime.conclude(report.to_json(), render, ok=report.ok, exit_code=report.exit_code)
