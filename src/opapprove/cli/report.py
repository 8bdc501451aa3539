"""``opapprove report``: approval analytics over the store, as tables, JSON or an HTML page."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli.errors import CliError
from opapprove.cli.options import SinceOption
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from rich.console import Console

    from opapprove.diagnostics.report import Report

BAR_WIDTH = 24


def report(
    ctx: typer.Context,
    since: SinceOption = None,
    seller: Annotated[
        str | None, typer.Option("--seller", metavar="ID", help="Only this seller's grants.")
    ] = None,
    html_path: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="FILE",
            help="Also write one self-contained HTML page with charts (needs opapprove[report]).",
        ),
    ] = None,
) -> None:
    """Approval analytics: funnel, approval rate, times, failure reasons, stuck grants."""
    from opapprove.cli.views import parse_since
    from opapprove.diagnostics.report import build_report, load_histories

    runtime = Runtime.of(ctx)
    now = time.time()
    since_ts = parse_since(since, now) if since else None
    settings = runtime.settings()
    if html_path is not None:
        _check_writable(html_path)
    location = settings.store
    histories = []
    if runtime.store_exists():  # looking must not create an empty store file
        histories = load_histories(runtime.store(), since=since_ts, seller_id=seller)
    result = build_report(
        histories,
        now=now,
        stuck_after=float(settings.stuck_after),
        since=since_ts,
        seller_id=seller,
    )
    data: dict[str, Any] = {"store": str(location), **result.to_json()}
    if not histories:
        runtime.output.result(data, lambda console: console.print(_empty_line(result, location)))
        return
    if html_path is not None:
        name = location.name if isinstance(location, Path) else location.database
        _write_html(result, html_path, name)
        data["html"] = str(html_path)
    runtime.output.result(data, lambda console: _render(console, result, html_path))


def _empty_line(result: Report, store: object) -> str:
    scope = [f"store {store}"]
    if result.seller_id:
        scope.append(f"seller {result.seller_id!r}")
    if result.since is not None:
        from opapprove.diagnostics.report import iso

        scope.append(f"since {iso(result.since)}")
    return f"No grants to report ({', '.join(scope)}): start one with `opapprove quote start`."


def _check_writable(path: Path) -> None:
    """Refuse a page we could not write before reading anything (one line: what, why, fix)."""
    target = path.expanduser()
    folder = target.parent if str(target.parent) else Path(".")
    why = None
    if target.is_dir():
        why = "it is a directory"
    elif not folder.is_dir():
        why = f"folder {folder} does not exist"
    elif not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        why = "permission denied"
    if why is not None:
        raise CliError(
            f"cannot write the report page {path}: {why}",
            hint="give --html a file in a folder you can write",
        )


def _write_html(result: Report, path: Path, store_name: str) -> None:
    from opapprove.cli.files import write_report
    from opapprove.diagnostics.report_html import ReportExtraMissing, render_html

    try:
        page = render_html(result, store_name=store_name)
    except ReportExtraMissing as exc:
        raise CliError(str(exc), kind="config") from None
    write_report(
        path, page, what="the report page", hint="give --html a file in a folder you can write"
    )


# ------------------------------------------------------------------------- terminal


def _bar(count: float, largest: float) -> str:
    if largest <= 0 or count <= 0:
        return ""
    return "█" * max(1, round(BAR_WIDTH * count / largest))


def _seconds(value: float | None) -> str:
    from opapprove.cli.views import age

    if value is None:
        return "–"
    return f"{value:.1f}s" if value < 60 else age(value)


def _table(*columns: str, right: tuple[str, ...] = (), fold: str | None = None) -> Any:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in columns:
        # Everything short stays whole; the one long column folds on a narrow terminal.
        table.add_column(
            name,
            justify="right" if name in right else "left",
            no_wrap=name != fold,
            overflow="fold",
        )
    return table


def _render(console: Console, result: Report, html_path: Path | None) -> None:
    out = console.print
    scope = f"{result.total} grants"
    if result.seller_id:
        scope += f" of seller {result.seller_id}"
    if result.since is not None:
        from opapprove.diagnostics.report import iso

        scope += f" started since {iso(result.since)}"
    out(f"Approval report: {scope}", markup=False, style="bold")

    funnel = _table("step", "grants", "", "", right=("grants",))
    first = result.funnel["started"] or 1
    names = {"awaitingApproval": "awaiting approval"}
    for step, count in result.funnel.items():
        funnel.add_row(
            names.get(step, step), str(count), f"{count / first:.0%}", _bar(count, first)
        )
    out(funnel)
    if result.side_exits:
        out("\nSide exits", style="bold")
        exits = _table("state", "left from", "grants", "", right=("grants",))
        largest = max(s.count for s in result.side_exits)
        for s in result.side_exits:
            exits.add_row(s.state, s.stage.replace("_", " "), str(s.count), _bar(s.count, largest))
        out(exits)
    if result.open_by_state:
        opened = ", ".join(f"{state} {n}" for state, n in result.open_by_state.items())
        out(f"Still open: {opened}", markup=False)

    rate = "–" if result.approval_rate is None else f"{result.approval_rate:.1%}"
    out(f"\nApproval rate: {rate} ({result.funnel['approved']} of {result.decided} decided)")
    times = _table("time", "grants", "p50", "p90", "max", right=("grants", "p50", "p90", "max"))
    for name, d in (
        ("to approve", result.time_to_approve),
        ("approval to payment", result.approval_to_payment),
    ):
        times.add_row(name, str(d.count), _seconds(d.p50), _seconds(d.p90), _seconds(d.max))
    out(times)

    if result.reasons:
        out("\nWhy grants left the happy path", style="bold")
        reasons = _table("grants", "", "state", "reason", right=("grants",), fold="reason")
        largest = max(r.count for r in result.reasons)
        for r in result.reasons:
            reasons.add_row(str(r.count), _bar(r.count, largest), r.state, r.reason)
        out(reasons)

    if result.stuck:
        out(f"\nStuck (no change for {_seconds(result.stuck_after)} or more)", style="bold")
        buckets = list(result.stuck[0].by_age)
        stuck = _table("state", "grants", *buckets, "oldest", right=("grants", *buckets))
        for row in result.stuck:
            stuck.add_row(
                row.state,
                str(row.count),
                *(str(row.by_age[b]) for b in buckets),
                _seconds(row.oldest),
            )
        out(stuck)
    else:
        out("\nNo stuck grants.")

    out("\nPer day (UTC, by start)", style="bold")
    counts = ("started", "approved", "paid", "side exits", "open")
    days = _table("day", *counts, "", right=counts)
    largest = max(day.started for day in result.days)
    for day in result.days:
        days.add_row(
            day.day,
            str(day.started),
            str(day.approved),
            str(day.paid),
            str(day.side_exits),
            str(day.open),
            _bar(day.started, largest),
        )
    out(days)
    if html_path is not None:
        out(f"\nCharts: {html_path}", markup=False)
