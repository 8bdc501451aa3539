"""``opapprove status ID``: where one grant's payment stands; ``--watch`` until it is settled.

The seed's job-status polling. Reading a grant also moves it on where that needs no
person: a created payment is re-checked (and completed once sent), an approval whose
window has passed is marked expired.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError, unknown_pending
from opapprove.cli.options import seconds_option
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from opapprove.approvals.flow import Flow
    from opapprove.approvals.records import Leg, Pending
    from opapprove.cli.output import Output


def status(
    ctx: typer.Context,
    pending_id: Annotated[str, typer.Argument(metavar="PENDING_ID", help="The grant's id.")],
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep checking until the grant reaches a final state.")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", metavar="S", min=0.05, help="With --watch: seconds between checks."
        ),
    ] = 2.0,
    timeout: Annotated[
        float | None,
        seconds_option("--timeout", "With --watch: give up after this many seconds (exit 8)."),
    ] = None,
) -> None:
    """Show a grant: state, amounts, payments, last error, approval URL, age.

    With --watch the exit code is the final state's: 0 completed, 6 rejected, expired or
    cancelled, 5 failed, 8 if --timeout passed first.
    """
    runtime = Runtime.of(ctx)
    if not watch and timeout is not None:
        raise CliError("--timeout goes with --watch", hint="add --watch, or leave --timeout out")
    settings = runtime.settings()
    limit = float(timeout if timeout is not None else settings.poll_timeout)
    if not runtime.store_exists():  # looking must not create a store
        raise unknown_pending(pending_id, runtime.missing_store())
    import time

    store = runtime.store()
    stored = store.get_pending(pending_id)

    async def go() -> tuple[Pending, list[Leg]]:
        from opapprove.cli.flows import open_flow

        async with open_flow(runtime) as session:
            flow = session.flow
            # Unknown ids get the flow's own error; a grant someone else is moving is shown.
            pending = await (flow.refresh(pending_id) if stored is None else _refresh(flow, stored))
            if watch:
                pending = await _watch(runtime, session.flow, pending, interval, limit)
            return pending, store.legs(pending.id) if pending.is_split else []

    if stored is not None and not watch and not stored.needs_refresh(time.time()):
        # Nothing to check at the wallet: shown as stored, without the flow and its imports.
        pending, legs = stored, store.legs(stored.id) if stored.is_split else []
    else:
        pending, legs = runtime.run(go())
    code = (exitcodes.for_state(str(pending.state)) or 0) if watch else 0
    _show(runtime, pending, code, legs)


async def _watch(
    runtime: Runtime, flow: Flow, pending: Pending, interval: float, limit: float
) -> Pending:
    import time

    from opapprove.cli.views import clock_time

    output = runtime.output
    deadline = time.monotonic() + limit
    output.info(f"{clock_time(time.time())}  {pending.id}  {pending.state}")
    runtime.resume = (pending.id, f"opapprove status {pending.id} --watch")
    with output.waiting(f"waiting: {pending.state}") as say:
        return await _watch_loop(flow, pending, interval, deadline, limit, say, output)


async def _watch_loop(
    flow: Flow,
    pending: Pending,
    interval: float,
    deadline: float,
    limit: float,
    say: Callable[[str], None],
    output: Output,
) -> Pending:
    import asyncio
    import time

    from opapprove.cli.views import clock_time

    seen = pending.state
    while not pending.is_final:
        if time.monotonic() >= deadline:
            raise CliError(
                f"grant {pending.id} is still {pending.state} after {limit:g} s",
                hint=f"watch longer with --timeout, or see `opapprove pending show {pending.id}`",
                kind="timeout",
                pending_id=pending.id,
            )
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        pending = await _refresh(flow, pending)
        if pending.state != seen:
            seen = pending.state
            say(f"waiting: {pending.state}")
            output.info(f"{clock_time(time.time())}  {pending.id}  {pending.state}")
    return pending


async def _refresh(flow: Flow, pending: Pending) -> Pending:
    from opapprove.approvals.errors import FlowError

    try:
        return await flow.refresh(pending.id)
    except FlowError as exc:
        if exc.kind != "busy":
            raise
        # Another process (a listener, a replay) is moving it on: watch what it commits.
        return flow.store.get_pending(pending.id) or pending


def _show(runtime: Runtime, pending: Pending, code: int, legs: list[Leg]) -> None:
    import time

    from opapprove.cli.views import detail_rows, pending_json, print_rows

    now = time.time()
    data = pending_json(pending, now=now, legs=legs)

    def render(console: Console) -> None:
        print_rows(console, detail_rows(pending, now=now, legs=legs))

    runtime.conclude(data, render, exit_code=code)
