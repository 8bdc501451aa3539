"""``opapprove pending list/show/replay/cancel/prune``: the grants in the store, for support staff.

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
    from collections.abc import Callable

    from rich.console import Console

    from opapprove.approvals.replay import ReplayOutcome
    from opapprove.approvals.store import Pending, Store

app = typer.Typer(
    help="List, show, replay, cancel and prune pending grants (the store's).", no_args_is_help=True
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
        f"unknown pendingId {pending_id!r}",
        hint="list grants with `opapprove pending list`",
        pending_id=pending_id,
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
    format_: Annotated[str | None, FORMAT_OPTION] = None,
) -> None:
    """List pending grants, newest first: id, offer, buyer, amount, state, age, last error."""
    import time

    from opapprove.approvals.replay import diagnose
    from opapprove.cli.views import parse_since, parse_states, pending_json

    runtime = _runtime(ctx)
    plain = _plain(runtime, format_)
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
        _render_list(console, rows, now, stuck=stuck, plain=plain)

    runtime.output.result({"pending": items, "count": len(items)}, render)


def _render_list(
    console: Console, rows: list[Pending], now: float, *, stuck: bool, plain: bool
) -> None:
    from opapprove.cli.views import age

    def clean(text: str | None) -> str:
        return " ".join((text or "").split())  # one line, no tabs: rows stay rows

    if not rows:
        what = "stuck grants" if stuck else "pending grants"
        console.print(f"No {what}.", markup=False)
        return
    if plain:
        # One line per grant, tab-separated, for grep, cut and support tickets.
        # Written as is: rich would expand the tabs into spaces.
        console.file.write("\t".join(PLAIN_LIST_COLUMNS) + "\n")
        for p in rows:
            values = (
                p.id,
                p.offer_id,
                p.buyer_wallet,
                p.amount,
                str(p.state),
                age(now - p.created_at),
                p.last_error or "",
            )
            console.file.write("\t".join(clean(v) for v in values) + "\n")
        return
    # Short columns side by side; the buyer's URL and the error on lines of their own, so
    # neither is ever folded mid-token however narrow the terminal.
    head = ("id", "offer", "amount", "state", "age")
    cells = [(p.id, p.offer_id, p.amount, str(p.state), age(now - p.created_at)) for p in rows]
    widths = [max(len(h), *(len(c[k]) for c in cells)) for k, h in enumerate(head)]
    widths[1] = min(widths[1], 16)

    def line(values: tuple[str, ...]) -> str:
        offer = values[1] if len(values[1]) <= widths[1] else values[1][: widths[1] - 1] + "…"
        parts = (values[0], offer, *values[2:])
        return "  ".join(
            f"{v:>{w}}" if k in (2, 4) else f"{v:<{w}}"
            for k, (v, w) in enumerate(zip(parts, widths, strict=True))
        ).rstrip()

    console.print(line(head), markup=False, style="bold", soft_wrap=True)
    for p, row in zip(rows, cells, strict=True):
        console.print(line(row), markup=False, soft_wrap=True)
        console.print(f"    buyer  {p.buyer_wallet}", markup=False, soft_wrap=True)
        if p.last_error:
            console.print(f"    error  {clean(p.last_error)}", markup=False, soft_wrap=True)


PLAIN_LIST_COLUMNS = ("id", "offer", "buyer", "amount", "state", "age", "lastError")
FORMAT_OPTION = typer.Option(
    "--format",
    metavar="table|plain|json",
    help="table on a terminal; plain (one line per row) otherwise; json = --json.",
    show_default=False,
)


def _plain(runtime: Runtime, format_: str | None) -> bool:
    """Whether to print one line per row; ``--format json`` switches the output to JSON."""
    import sys

    if format_ is None:
        return not sys.stdout.isatty()
    if format_ not in ("table", "plain", "json"):
        raise CliError(f"--format {format_!r} is not one of table, plain, json")
    if format_ == "json":
        runtime.json = True  # errors too, from here on
    return format_ == "plain"


# --------------------------------------------------------------------------- show


@app.command("show")
def show(
    ctx: typer.Context,
    pending_id: Annotated[str, typer.Argument(metavar="ID", help="The grant's id.")],
    format_: Annotated[str | None, FORMAT_OPTION] = None,
) -> None:
    """Everything known about one grant and its event trail (tokens masked)."""
    import time

    from opapprove.approvals.replay import diagnose
    from opapprove.cli.views import iso

    runtime = _runtime(ctx)
    _plain(runtime, format_)  # the event trail is one line per event either way
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

    from opapprove.cli.views import detail_rows
    from opapprove.openpayments.redaction import redact_json

    for label, value in detail_rows(pending, now=now):
        console.print(f"  {label:<17} {value}", markup=False, soft_wrap=True)
    console.print(f"  {'why':<17} {why}", markup=False, soft_wrap=True)
    console.print(f"  {'next step':<17} {next_step}", markup=False, soft_wrap=True)
    console.print("Events: (times in UTC)", markup=False)
    for e in events:
        when = (e["at"] or "").replace("T", " ").removesuffix("Z")
        moved = f"-> {e['to']}" if e["to"] else ""
        data = redact_json(e["data"]) if e["data"] else None
        detail = json.dumps(data, ensure_ascii=False, separators=(",", ":")) if data else ""
        text = f"  {when}  {e['kind']}"
        text += f"  {moved}" if moved else ""
        text += f"  {detail}" if detail else ""
        console.print(text, markup=False, soft_wrap=True)


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

    bars: list[Callable[[bool], None]] = []  # the progress bar's step, once it is drawn

    def shown(outcome: ReplayOutcome) -> None:
        for step in bars:
            step(outcome.outcome not in _FINE)
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

    with output.progress("replaying", len(chosen)) as step:
        bars.append(step)
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

    output.result(data, render, ok=code == exitcodes.OK, exit_code=code)
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


# States of a grant that never reached the buyer's approval: cancelling one needs no network.
NEVER_ASKED = ("started", "incoming_created", "quote_created")


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    pending_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="The grants to cancel.", show_default=False),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every grant in the --state given (needs --state).")
    ] = False,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state", metavar="STATE", help="With --all: grants in this state; repeatable."
        ),
    ] = None,
) -> None:
    """Cancel grants that have not paid: revoke them at the wallet, mark them cancelled.

    Cancelling a cancelled grant again is fine (exit 0). A grant that never reached the
    wallet's approval step (started, incoming_created, quote_created) is cancelled without
    any network: `pending cancel --all --state started`, or `pending prune` for all three.
    """
    from opapprove.cli.views import parse_states

    ids = list(pending_ids or [])
    if ids and (all_ or state):
        raise CliError("give grant ids or --all, not both", hint="see `pending cancel --help`")
    if all_ and not state:
        raise CliError(
            "--all needs --state: which grants?",
            hint="e.g. `pending cancel --all --state started`, or `pending prune`",
        )
    if not ids and not all_:
        if state:
            raise CliError("--state goes with --all", hint="add --all")
        raise CliError("nothing to cancel", hint="give grant ids, or --all --state STATE")
    runtime = _runtime(ctx)
    if ids:
        _cancel_many(runtime, ids, bulk=len(ids) > 1)
        return
    states = parse_states(state)
    store = _existing_store(runtime)
    chosen = [p.id for p in store.list_pending(states=states)] if store is not None else []
    _cancel_many(runtime, chosen, bulk=True)


@app.command("prune")
def prune(ctx: typer.Context) -> None:
    """Cancel every grant that never reached the buyer's approval, without any network.

    Typos and refused amounts leave such rows (started, incoming_created, quote_created);
    they would make `pending replay --all` fail.
    """
    from opapprove.approvals.store import State

    runtime = _runtime(ctx)
    store = _existing_store(runtime)
    chosen = (
        [p.id for p in store.list_pending(states=[State(s) for s in NEVER_ASKED])]
        if store is not None
        else []
    )
    _cancel_many(runtime, chosen, bulk=True)


def _cancel_many(runtime: Runtime, ids: list[str], *, bulk: bool) -> None:
    import time

    from opapprove.cli.views import pending_json

    store = _existing_store(runtime)
    befores = {}
    for pending_id in ids:
        before = store.get_pending(pending_id) if store is not None else None
        if before is None:
            raise _unknown(pending_id)
        befores[pending_id] = before

    async def go() -> list[tuple[str, Pending | None, Exception | None]]:
        from opapprove.approvals.errors import FlowError
        from opapprove.cli.flows import open_flow

        out: list[tuple[str, Pending | None, Exception | None]] = []
        async with open_flow(runtime) as session:
            for pending_id in ids:
                try:
                    out.append((pending_id, await session.flow.cancel(pending_id), None))
                except FlowError as exc:
                    if not bulk:
                        raise
                    out.append((pending_id, None, exc))
        return out

    results = runtime.run(go()) if ids else []
    now = time.time()
    output = runtime.output
    if not bulk:
        ((_, one, _),) = results
        assert one is not None
        done: Pending = one
        before = befores[done.id]
        already = str(before.state) == "cancelled"
        data = pending_json(done, now=now)
        data["alreadyCancelled"] = already

        def render_one(console: Console) -> None:
            if already:
                console.print(f"Grant {done.id} was already cancelled.", markup=False)
            else:
                console.print(
                    f"Grant {done.id} cancelled (was {before.state}); nothing was paid.",
                    markup=False,
                )

        output.result(data, render_one)
        return
    items: list[dict[str, Any]] = []
    failed, code = 0, exitcodes.OK
    for pending_id, pending, error in results:
        item: dict[str, Any] = {"pendingId": pending_id, "was": str(befores[pending_id].state)}
        if pending is not None:
            item["state"] = str(pending.state)
        else:
            failed += 1
            item["error"] = str(error)
            code = code or int(getattr(error, "exit_code", exitcodes.UNEXPECTED))
        items.append(item)
    data = {"cancelled": len(items) - failed, "failed": failed, "grants": items}

    def render_many(console: Console) -> None:
        for item in items:
            what = f"cancelled (was {item['was']})" if "error" not in item else item["error"]
            console.print(f"{item['pendingId']}  {what}", markup=False, soft_wrap=True)
        console.print(
            f"Cancelled {len(items) - failed} grant(s)"
            + (f"; {failed} could not be cancelled" if failed else "")
            + ("" if items else ": nothing to do"),
            markup=False,
        )

    output.result(data, render_many, ok=not failed, exit_code=code)
    if failed:
        raise typer.Exit(code)
