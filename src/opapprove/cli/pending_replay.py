"""``opapprove pending replay``: carry grants on from their last committed step.

Each grant is driven under its lease by approvals.replay, which never pays twice; a bulk
replay shares the grants among worker processes. The exit code is the worst outcome's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError, unknown_pending
from opapprove.cli.options import PendingIdsArgument, StatesOption, StuckOption
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from opapprove.approvals.replay import ReplayOutcome

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

AUTO_WORKERS_FROM = 200


def auto_workers(grants: int) -> int:
    """One process is plenty for a few grants; a bulk replay uses the machine's cores."""
    import os

    if grants < AUTO_WORKERS_FROM:
        return 1
    return max(1, min(os.cpu_count() or 1, 4, grants // (AUTO_WORKERS_FROM // 2)))


def replay(
    ctx: typer.Context,
    pending_ids: PendingIdsArgument = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Every unfinished grant (partially paid ones with --state partially_paid).",
        ),
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", metavar="N", min=1, max=64, help="Grants replayed at once."),
    ] = 8,
    state: StatesOption = None,
    stuck: StuckOption = False,
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

    runtime = Runtime.of(ctx)
    ids = list(pending_ids or [])
    if ids and (all_ or state or stuck):
        raise CliError("give grant ids or --all, not both", hint="see `pending replay --help`")
    if not ids and not all_:
        if state or stuck:
            raise CliError("--state and --stuck go with --all", hint="add --all")
        raise CliError("nothing to replay", hint="give grant ids, or --all (with --state/--stuck)")
    settings = runtime.settings()
    store = runtime.existing_store()
    if store is None:
        if ids:
            raise unknown_pending(ids[0], runtime.missing_store())
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

    runtime.conclude(data, render, ok=code == exitcodes.OK, exit_code=code)


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
