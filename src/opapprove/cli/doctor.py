"""``opapprove doctor``: is this machine ready to run approvals? One line per check.

Config and file modes, the store, the seller and its key, the seller wallet and its auth
and resource servers, the key published in the wallet's JWKS, the clock against the
servers' Date header. The exit code is the first failure's (0 when nothing failed;
warnings count too with ``--strict``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli import exitcodes
from opapprove.cli.options import SellerOption
from opapprove.cli.runtime import Runtime
from opapprove.openpayments.redaction import redact_text

if TYPE_CHECKING:
    from rich.console import Console

    from opapprove.diagnostics.doctor import Check

MARKS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}
# Colours only reach a terminal, and rich drops them when NO_COLOR is set.
STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def exit_code_for(checks: list[Check], *, strict: bool = False) -> int:
    """The first failed check's code; with ``strict`` a warning counts as a failure."""
    bad = ("fail", "warn") if strict else ("fail",)
    for wanted in bad:
        for check in checks:
            if check.status == wanted:
                # A check is about set-up unless its kind says otherwise.
                return exitcodes.exit_code(check.kind, default=exitcodes.CONFIG)
    return exitcodes.OK


def doctor(
    ctx: typer.Context,
    seller_id: SellerOption = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit non-zero on warnings too (for CI).")
    ] = False,
) -> None:
    """Check config, store, seller key, wallet, servers, published JWK and clock.

    One line per check: pass, WARN or FAIL, with what to do. Exit 0 unless a check
    failed (or warned, with --strict); then the exit code says what kind of problem.
    """
    from opapprove.diagnostics.doctor import Check, run_checks, worst
    from opapprove.settings import SettingsError

    runtime = Runtime.of(ctx)
    try:
        settings = runtime.settings()
    except SettingsError as exc:
        checks = [Check("config", "fail", exc.message, exc.hint, kind="config")]
    else:
        from opapprove.cli.startup import settled

        settled()  # the checks' own event loop; see cli/startup.py
        checks = run_checks(settings, settings.store, seller_id, on_exchange=runtime.on_exchange())
    code = exit_code_for(checks, strict=strict)
    verdict = worst(checks)
    data: dict[str, Any] = {
        "worst": verdict,
        "checks": [c.to_json() for c in checks],
    }

    def render(console: Console) -> None:
        width = max(len(c.name) for c in checks)
        for check in checks:
            from rich.text import Text

            line = Text(MARKS[check.status], style=STYLES[check.status])
            line.append(f"  {check.name:<{width}}  {redact_text(check.message)}")
            console.print(line, soft_wrap=True)
            if check.hint:
                console.print(
                    f"      {'':<{width}}  → {redact_text(check.hint)}",
                    markup=False,
                    soft_wrap=True,
                )
        warned = sum(1 for c in checks if c.status == "warn")
        failed = sum(1 for c in checks if c.status == "fail")
        console.print(
            f"doctor: {len(checks)} checks, {warned} warning(s), {failed} failure(s)",
            markup=False,
        )

    runtime.conclude(data, render, ok=code == exitcodes.OK, exit_code=code)
