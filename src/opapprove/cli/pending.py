"""``opapprove pending list/show/replay/cancel``: the grants in the store, for support staff.

``replay`` carries each grant on from its last committed step (approvals.replay), which
never pays twice; ``show`` is everything known about one grant, tokens masked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from rich.console import Console

    from opapprove.approvals.replay import ReplayOutcome
    from opapprove.approvals.store import Pending, Store

app = typer.Typer(
    help="List, show, replay and cancel pending grants (the store's).", no_args_is_help=True
)

# Replay outcomes that need nobody's attention now.
_FINE = frozenset({"completed", "advanced", "unchanged", "waiting"})
# Worst first: which exit code a batch with mixed failures reports.
_SEVERITY = (
    exitcodes.UNEXPECTED,
    exitcodes.CONFIG,
    exitcodes.VERIFICATION,
    exitcodes.REFUSED,
    exitcodes.TRANSPORT,
    exitcodes.USAGE,
    exitcodes.NOT_APPROVED,
)


def _runtime(ctx: typer.Context) -> Runtime:
    runtime = ctx.obj
    assert isinstance(runtime, Runtime)
    return runtime


def _existing_store(runtime: Runtime) -> Store | None:
    """The store if it exists: looking must not create an empty store file."""
    if not runtime.store_exists():
        return None
    return runtime.store()


def _unknown(pending_id: str) -> CliError:
    return CliError(
        f"unknown pendingId {pending_id!r}", hint="list grants with `opapprove pending list`"
    )


# --------------------------------------------------------------------------- list


@app.command("list")
def list_(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", metavar="STATE", help="Only grants in this state; repeatable."),
    ] = None,
    stuck: Annotated[
        bool,
        typer.Option("--stuck", help="Only unfinished grants with no progress for stuck_after s."),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="T", help="Created since: an ISO time, or 2h, 30m, 1d."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", metavar="N", min=1, help="At most N grants.")
    ] = None,
) -> None:
    """List pending grants, newest first: id, offer, buyer, amount, state, age, last error."""
    import time

    from opapprove.approvals.replay import diagnose
    from opapprove.cli.views import parse_since, parse_states, pending_json

    runtime = _runtime(ctx)
    now = time.time()
    states = parse_states(state)
    since_ts = parse_since(since, now) if since else None
    settings = runtime.settings()
    store = _existing_store(runtime)
    rows: list[Pending] = []
    if store is not None:
        rows = store.list_pending(
            states=states,
            since=since_ts,
            stuck_after=float(settings.stuck_after) if stuck else None,
            now=now,
            limit=limit,
            newest_first=True,
        )
    items = []
    for p in rows:
        item = pending_json(p, now=now)
        found = diagnose(p, now=now)
        item["diagnosis"] = {"where": found.where, "why": found.why, "next": found.next_step}
        items.append(item)

    def render(console: Console) -> None:
        _render_list(console, rows, now, stuck=stuck)

    runtime.output.result({"pending": items, "count": len(items)}, render)


def _render_list(console: Console, rows: list[Pending], now: float, *, stuck: bool) -> None:
    from rich.table import Table

    from opapprove.cli.views import age

    if not rows:
        what = "stuck grants" if stuck else "pending grants"
        console.print(f"No {what}.", markup=False)
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    # Ids and states stay whole (they are copied into the next command); the rest folds.
    for name in ("id", "offer", "buyer", "amount", "state", "age", "last error"):
        whole = name in ("id", "state", "age", "amount")
        table.add_column(name, overflow="fold", no_wrap=whole, min_width=None if whole else 12)
    for p in rows:
        table.add_row(
            p.id,
            p.offer_id,
            p.buyer_wallet,
            p.amount,
            str(p.state),
            age(now - p.created_at),
            p.last_error or "",
        )
    console.print(table)


# --------------------------------------------------------------------------- show


@app.command("show")
def show(
    ctx: typer.Context,
    pending_id: Annotated[str, typer.Argument(metavar="ID", help="The grant's id.")],
) -> None:
    """Everything known about one grant and its event trail (tokens masked)."""
    import time

    from opapprove.approvals.replay import diagnose
    from opapprove.cli.views import iso

    runtime = _runtime(ctx)
    store = _existing_store(runtime)
    pending = store.get_pending(pending_id) if store is not None else None
    if store is None or pending is None:
        raise _unknown(pending_id)
    now = time.time()
    events = [
        {
            "at": iso(e.at),
            "kind": e.kind,
            "from": e.from_state,
            "to": e.to_state,
            "data": e.data,
        }
        for e in store.events(pending.id)
    ]
    found = diagnose(pending, now=now)
    data: dict[str, Any] = {
        "pending": pending.as_dict(redact_secrets=True),
        "diagnosis": {"where": found.where, "why": found.why, "next": found.next_step},
        "events": events,
    }

    def render(console: Console) -> None:
        _render_show(console, pending, events, found.why, found.next_step, now)

    runtime.output.result(data, render)


def _render_show(
    console: Console,
    pending: Pending,
    events: list[dict[str, Any]],
    why: str,
    next_step: str,
    now: float,
) -> None:
    import json

    from rich.table import Table

    from opapprove.cli.views import detail_rows
    from opapprove.openpayments.redaction import redact_json

    for label, value in detail_rows(pending, now=now):
        console.print(f"  {label:<17} {value}", markup=False, soft_wrap=True)
    console.print(f"  {'why':<17} {why}", markup=False, soft_wrap=True)
    console.print(f"  {'next step':<17} {next_step}", markup=False, soft_wrap=True)
    console.print("Events:", markup=False)
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in ("at (UTC)", "event", "state", "data"):
        table.add_column(name, overflow="fold", no_wrap=name != "data")
    for e in events:
        moved = f"-> {e['to']}" if e["to"] else ""
        detail = json.dumps(redact_json(e["data"]), ensure_ascii=False) if e["data"] else ""
        when = (e["at"] or "").replace("T", " ").removesuffix("Z")
        table.add_row(when, e["kind"], moved, detail)
    console.print(table)


# --------------------------------------------------------------------------- replay


AUTO_WORKERS_FROM = 200


def auto_workers(grants: int) -> int:
    """One process is plenty for a few grants; a bulk replay uses the machine's cores."""
    import os

    if grants < AUTO_WORKERS_FROM:
        return 1
    return max(1, min(os.cpu_count() or 1, 4, grants // (AUTO_WORKERS_FROM // 2)))


@app.command("replay")
def replay(
    ctx: typer.Context,
    pending_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="The grants to replay.", show_default=False),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every unfinished grant.")] = False,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", metavar="N", min=1, max=64, help="Grants replayed at once."),
    ] = 8,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", metavar="STATE", help="With --all: only this state; repeatable."),
    ] = None,
    stuck: Annotated[
        bool, typer.Option("--stuck", help="With --all: only grants stuck for stuck_after s.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            max=16,
            help="Processes sharing the grants (default: one per CPU, up to 4, from"
            f" {AUTO_WORKERS_FROM} grants on; replay is CPU-bound past ~100 grants/s).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Carry grants on from their last committed step; a payment is never made twice.

    Exit 0 when every grant completed, moved on or is waiting for the buyer; otherwise
    the worst outcome's code (1, 3, 7, 5, 4, 2, then 6, in that order).
    """
    from opapprove.approvals.replay import replay_many, select_for_replay
    from opapprove.cli.views import parse_states

    runtime = _runtime(ctx)
    ids = list(pending_ids or [])
    if ids and (all_ or state or stuck):
        raise CliError("give grant ids or --all, not both", hint="see `pending replay --help`")
    if not ids and not all_:
        if state or stuck:
            raise CliError("--state and --stuck go with --all", hint="add --all")
        raise CliError("nothing to replay", hint="give grant ids, or --all (with --state/--stuck)")
    settings = runtime.settings()
    store = _existing_store(runtime)
    if store is None:
        if ids:
            raise _unknown(ids[0])
        chosen: list[str] = []
    elif ids:
        chosen = ids
    else:
        chosen = [
            p.id
            for p in select_for_replay(
                store,
                all=not stuck,
                states=parse_states(state),
                stuck_after=float(settings.stuck_after) if stuck else None,
            )
        ]
    output = runtime.output

    def shown(outcome: ReplayOutcome) -> None:
        if not output.json_mode:
            output.out.print(_outcome_line(outcome), markup=False, soft_wrap=True)

    import asyncio

    if workers is None:
        workers = auto_workers(len(chosen))
    shards = [chosen[i::workers] for i in range(min(workers, len(chosen)))] or [[]]

    async def go() -> list[ReplayOutcome]:
        from opapprove.cli.flows import open_flow

        others = [
            asyncio.create_task(_replay_in_worker(runtime, shard, concurrency))
            for shard in shards[1:]
        ]
        async with open_flow(runtime) as session:
            mine = await replay_many(
                session.flow,
                shards[0],
                concurrency=concurrency,
                webhooks=session.webhooks,
                on_outcome=shown,
            )
        for outcomes_of_worker in await asyncio.gather(*others):
            for outcome in outcomes_of_worker:
                shown(outcome)
                mine.append(outcome)
        return mine

    outcomes = runtime.run(go()) if chosen else []
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
    code = _batch_exit_code(outcomes)
    data = {
        "outcomes": [o.as_dict() for o in outcomes],
        "summary": counts,
        "exitCode": code,
    }

    def render(console: Console) -> None:
        if not outcomes:
            console.print("No grants to replay.", markup=False)
            return
        parts = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
        noun = "grant" if len(outcomes) == 1 else "grants"
        console.print(f"Replayed {len(outcomes)} {noun}: {parts}", markup=False)

    output.result(data, render, ok=code == exitcodes.OK)
    if code:
        raise typer.Exit(code)


async def _replay_in_worker(
    runtime: Runtime, ids: list[str], concurrency: int
) -> list[ReplayOutcome]:
    """One more `pending replay` process for a share of the grants; its outcomes as JSON.

    Safe to run side by side: each grant is driven under its lease, and the store is made
    for several processes."""
    import asyncio
    import json
    import os
    import sys

    from opapprove.approvals.replay import ReplayOutcome
    from opapprove.paths import DatabaseURL
    from opapprove.settings import STORE_ENV_VAR

    argv = [sys.executable, "-m", "opapprove", "--json"]
    env = dict(os.environ)
    location = runtime.settings().store
    if isinstance(location, DatabaseURL):
        env[STORE_ENV_VAR] = location.secret()  # not on the command line, where ps shows it
    else:
        argv += ["--store", str(location)]
    if runtime.config is not None:
        argv += ["--config", str(runtime.config)]
    argv += ["pending", "replay", "--concurrency", str(concurrency), *ids]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await proc.communicate()
    try:
        return [ReplayOutcome.from_dict(d) for d in json.loads(out)["outcomes"]]
    except (ValueError, KeyError, TypeError):
        why = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        return [
            ReplayOutcome(i, None, None, "error", f"the worker process failed: {why[0]}")
            for i in ids
        ]


def _outcome_line(o: ReplayOutcome) -> str:
    if o.before is None:
        moved = "-"
    elif o.before != o.after:
        moved = f"{o.before} -> {o.after}"
    else:
        moved = str(o.after)
    line = f"{o.pending_id}  {moved}  {o.outcome}: {o.message}"
    if o.hint and o.outcome not in ("completed",):
        line += f" — {o.hint}"
    return " ".join(line.split())


def outcome_exit_code(o: ReplayOutcome) -> int:
    if o.outcome in _FINE:
        return exitcodes.OK
    if o.outcome == "expired":
        return exitcodes.NOT_APPROVED
    if o.outcome == "failed":
        state = str(o.after or "")
        return exitcodes.for_state(state) or exitcodes.REFUSED
    return exitcodes.exit_code(o.error_kind)


def _batch_exit_code(outcomes: list[ReplayOutcome]) -> int:
    codes = {outcome_exit_code(o) for o in outcomes} - {exitcodes.OK}
    for code in _SEVERITY:
        if code in codes:
            return code
    return max(codes) if codes else exitcodes.OK


# --------------------------------------------------------------------------- cancel


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    pending_id: Annotated[str, typer.Argument(metavar="ID", help="The grant to cancel.")],
) -> None:
    """Cancel a grant that has not paid: revoke it at the wallet, mark it cancelled.

    Cancelling a cancelled grant again is fine (exit 0).
    """
    import time

    from opapprove.cli.views import pending_json

    runtime = _runtime(ctx)
    store = _existing_store(runtime)
    before = store.get_pending(pending_id) if store is not None else None
    if before is None:
        raise _unknown(pending_id)
    already = str(before.state) == "cancelled"

    async def go() -> Pending:
        from opapprove.cli.flows import open_flow

        async with open_flow(runtime) as session:
            return await session.flow.cancel(pending_id)

    pending = runtime.run(go())
    data = pending_json(pending, now=time.time())
    data["alreadyCancelled"] = already

    def render(console: Console) -> None:
        if already:
            console.print(f"Grant {pending.id} was already cancelled.", markup=False)
        else:
            console.print(
                f"Grant {pending.id} cancelled (was {before.state}); nothing was paid.",
                markup=False,
            )

    runtime.output.result(data, render)
