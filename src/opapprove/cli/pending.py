"""``opapprove pending list/show/replay/cancel/prune``: the grants in the store, for support staff.

``replay`` carries each grant on from its last committed step (approvals.replay), which
never pays twice; ``show`` is everything known about one grant, tokens masked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError, unknown_pending
from opapprove.cli.options import PendingIdsArgument, SinceOption, StatesOption, StuckOption
from opapprove.cli.pending_replay import replay
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

    from opapprove.approvals.records import Leg, Pending
    from opapprove.approvals.replay import Diagnosis

app = typer.Typer(
    help="List, show, replay, cancel and prune pending grants (the store's).", no_args_is_help=True
)

# --------------------------------------------------------------------------- list


@app.command("list")
def list_(
    ctx: typer.Context,
    state: StatesOption = None,
    stuck: StuckOption = False,
    since: SinceOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", metavar="N", min=1, help="At most N grants.")
    ] = None,
    format_: Annotated[str | None, FORMAT_OPTION] = None,
) -> None:
    """List pending grants, newest first: id, offer, buyer, amount, state, age, last error."""
    import time

    from opapprove.approvals.replay import diagnose
    from opapprove.cli.views import parse_since, parse_states, pending_json

    runtime = Runtime.of(ctx)
    plain = _plain(runtime, format_)
    now = time.time()
    states = parse_states(state)
    since_ts = parse_since(since, now) if since else None
    settings = runtime.settings()
    store = runtime.existing_store()
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
        item["diagnosis"] = _diagnosis_json(found)
        items.append(item)

    def render(console: Console) -> None:
        _render_list(console, rows, now, stuck=stuck, plain=plain, missing=runtime.missing_store())

    runtime.output.result({"pending": items, "count": len(items)}, render)


def _render_list(
    console: Console,
    rows: list[Pending],
    now: float,
    *,
    stuck: bool,
    plain: bool,
    missing: Path | None = None,
) -> None:
    from opapprove.cli.views import age

    def clean(text: str | None) -> str:
        return " ".join((text or "").split())  # one line, no tabs: rows stay rows

    if not rows:
        what = "stuck grants" if stuck else "pending grants"
        # A wrong --store looks like an empty one: say there is no store there at all.
        where = f" (no store at {missing} yet)" if missing is not None else ""
        console.print(f"No {what}{where}.", markup=False)
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


def _diagnosis_json(found: Diagnosis) -> dict[str, str]:
    return {"where": found.where, "why": found.why, "next": found.next_step}


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
    from opapprove.cli.output import iso

    runtime = Runtime.of(ctx)
    _plain(runtime, format_)  # the event trail is one line per event either way
    store = runtime.existing_store()
    pending = store.get_pending(pending_id) if store is not None else None
    if store is None or pending is None:
        raise unknown_pending(pending_id, runtime.missing_store())
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
    legs = store.legs(pending.id) if pending.is_split else []
    data: dict[str, Any] = {
        "pending": pending.as_dict(redact_secrets=True),
        "legs": [leg.to_json() for leg in legs] if pending.is_split else None,
        "diagnosis": _diagnosis_json(found),
        "events": events,
    }

    def render(console: Console) -> None:
        _render_show(console, pending, legs, events, found.why, found.next_step, now)

    runtime.output.result(data, render)


def _render_show(
    console: Console,
    pending: Pending,
    legs: list[Leg],
    events: list[dict[str, Any]],
    why: str,
    next_step: str,
    now: float,
) -> None:
    import json

    from opapprove.cli.views import detail_rows, print_rows
    from opapprove.openpayments.redaction import redact_json

    print_rows(
        console, [*detail_rows(pending, now=now, legs=legs), ("why", why), ("next step", next_step)]
    )
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


app.command("replay")(replay)


# --------------------------------------------------------------------------- cancel


# States of a grant that never reached the buyer's approval: cancelling one needs no network.
NEVER_ASKED = ("started", "incoming_created", "quote_created")


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    pending_ids: PendingIdsArgument = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every grant in the --state given (needs --state).")
    ] = False,
    state: StatesOption = None,
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
    runtime = Runtime.of(ctx)
    if ids:
        _cancel_many(runtime, ids, bulk=len(ids) > 1)
        return
    states = parse_states(state)
    store = runtime.existing_store()
    chosen = [p.id for p in store.list_pending(states=states)] if store is not None else []
    _cancel_many(runtime, chosen, bulk=True)


@app.command("prune")
def prune(ctx: typer.Context) -> None:
    """Cancel every grant that never reached the buyer's approval, without any network.

    Typos and refused amounts leave such rows (started, incoming_created, quote_created);
    they would make `pending replay --all` fail.
    """
    from opapprove.approvals.records import State

    runtime = Runtime.of(ctx)
    store = runtime.existing_store()
    chosen = (
        [p.id for p in store.list_pending(states=[State(s) for s in NEVER_ASKED])]
        if store is not None
        else []
    )
    _cancel_many(runtime, chosen, bulk=True)


def _cancelled_line(done: Pending, was: str, legs: list[dict[str, Any]] | None) -> str:
    """What one cancel did, in words; of a split, which legs it gave up on and which paid."""
    if was == "cancelled":
        return f"Grant {done.id} was already cancelled."
    if legs is None:
        return f"Grant {done.id} cancelled (was {was}); nothing was paid."
    if was == "partially_paid":
        return (
            f"Grant {done.id} cancelled (was partially_paid): the legs that did not pay are"
            " cancelled; the paid legs stay paid."
        )

    def said(state: str, one: str, many: str) -> str:
        numbers = [str(leg["leg"]) for leg in legs if leg["state"] == state]
        if len(numbers) < 2:
            return f"leg {numbers[0]} {one}" if numbers else ""
        return f"legs {', '.join(numbers)} {many}"

    gave_up = said("cancelled", "was not sent and is cancelled", "were not sent and are cancelled")
    if str(done.state) == "cancelled":
        paid = said("completed", "is paid and stays paid", "are paid and stay paid")
        return f"Grant {done.id} cancelled (was {was}): {gave_up}; {paid or 'nothing was paid'}."
    if not gave_up:  # every leg's payment turned out made
        return f"Grant {done.id} was not cancelled: every leg's payment was made ({done.state})."
    return (
        f"Grant {done.id} (was {was}): {gave_up};"
        f" {said('payment_created', 'was paid', 'were paid')} and the wallet is still sending"
        f" (a payment made cannot be stopped): `opapprove status {done.id}` follows it, then"
        " the grant ends cancelled."
    )


def _cancel_many(runtime: Runtime, ids: list[str], *, bulk: bool) -> None:
    import time

    from opapprove.cli.views import pending_json

    store = runtime.existing_store()
    befores = {}
    for pending_id in ids:
        before = store.get_pending(pending_id) if store is not None else None
        if before is None:
            raise unknown_pending(pending_id, runtime.missing_store())
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
    if not bulk:
        ((_, one, _),) = results
        assert one is not None
        done: Pending = one
        before = befores[done.id]
        already = str(before.state) == "cancelled"
        legs = store.legs(done.id) if store is not None and done.is_split else ()
        data = pending_json(done, now=now, legs=legs)
        data["alreadyCancelled"] = already
        line = _cancelled_line(done, str(before.state), data["legs"])
        code = exitcodes.OK
        if str(done.state) == "payment_created":  # a split's made payment is still being sent
            code = exitcodes.exit_code("waiting")
        elif str(done.state) != "cancelled":
            code = exitcodes.exit_code("input")
        runtime.conclude(data, lambda console: console.print(line, markup=False), exit_code=code)
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

    runtime.conclude(data, render_many, ok=not failed, exit_code=code)
