"""The approval report as one self-contained HTML page, charts drawn by plotly.

plotly is the optional extra ``opapprove[report]``: its JavaScript is inlined once, so
the page works offline and from a file:// URL, with hover values and zoom. Returns the
page as text; writing it is the CLI's job.
"""

from __future__ import annotations

import html
from typing import Any

from opapprove.diagnostics.report import Report, iso

MISSING_EXTRA = "--html needs plotly, the optional extra: pip install 'opapprove[report]'"
# Nothing on the page may reach the network: no "edit in Chart Studio" links.
_CHART_CONFIG = {"displaylogo": False, "showSendToCloud": False}
_COLOURS = {"paid": "#2e7d32", "side": "#c62828", "open": "#f9a825", "main": "#1565c0"}


class ReportExtraMissing(RuntimeError):
    """plotly is not installed."""


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
        import plotly.offline
    except ImportError as exc:
        raise ReportExtraMissing(MISSING_EXTRA) from exc
    return go, plotly.offline


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figures(report: Report, go: Any) -> list[tuple[str, str, Any]]:
    """(id, title, figure) for every chart that has something to show."""
    margin = {"l": 60, "r": 20, "t": 30, "b": 40}
    layout: dict[str, Any] = {"margin": margin, "height": 320}
    out: list[tuple[str, str, Any]] = []
    steps = ["started", "awaiting approval", "approved", "paid"]
    out.append(
        (
            "chart-funnel",
            "Funnel",
            go.Figure(
                go.Funnel(
                    y=steps,
                    x=list(report.funnel.values()),
                    textinfo="value+percent initial",
                    marker={"color": _COLOURS["main"]},
                ),
                layout=layout,
            ),
        )
    )
    if report.days:
        days = [d.day for d in report.days]
        fig = go.Figure(layout={**layout, "barmode": "stack"})
        for name, values, colour in (
            ("paid", [d.paid for d in report.days], _COLOURS["paid"]),
            ("side exits", [d.side_exits for d in report.days], _COLOURS["side"]),
            ("still open", [d.open for d in report.days], _COLOURS["open"]),
        ):
            fig.add_trace(go.Bar(name=name, x=days, y=values, marker={"color": colour}))
        out.append(("chart-days", "Grants started per day (UTC), by outcome", fig))
    if report.reasons:
        reasons = list(reversed(report.reasons[:12]))
        fig = go.Figure(
            go.Bar(
                x=[r.count for r in reasons],
                y=[f"{r.state}: {r.reason}"[:70] for r in reasons],
                orientation="h",
                marker={"color": _COLOURS["side"]},
            ),
            layout={**layout, "margin": {**margin, "l": 380}},
        )
        out.append(("chart-reasons", "Why grants left the happy path", fig))
    if report.stuck:
        fig = go.Figure(layout={**layout, "barmode": "stack"})
        buckets = list(report.stuck[0].by_age)
        for bucket in buckets:
            fig.add_trace(
                go.Bar(
                    name=f"idle {bucket}",
                    x=[s.state for s in report.stuck],
                    y=[s.by_age[bucket] for s in report.stuck],
                )
            )
        out.append(("chart-stuck", "Stuck grants by state and time since their last change", fig))
    return out


def render_html(report: Report, *, store_name: str) -> str:
    """The whole page; raises ``ReportExtraMissing`` without plotly."""
    go, offline = _plotly()
    charts = []
    for chart_id, title, fig in _figures(report, go):
        div = fig.to_html(
            full_html=False, include_plotlyjs=False, div_id=chart_id, config=_CHART_CONFIG
        )
        charts.append(f'<section class="chart"><h2>{html.escape(title)}</h2>{div}</section>')
    rate = "–" if report.approval_rate is None else f"{report.approval_rate:.1%}"
    summary = _table(
        ["measure", "count", "p50", "p90", "max"],
        [
            ["approval rate", f"{rate} of {report.decided} decided", "", "", ""],
            [
                "time to approve",
                report.time_to_approve.count,
                _duration(report.time_to_approve.p50),
                _duration(report.time_to_approve.p90),
                _duration(report.time_to_approve.max),
            ],
            [
                "approval to payment",
                report.approval_to_payment.count,
                _duration(report.approval_to_payment.p50),
                _duration(report.approval_to_payment.p90),
                _duration(report.approval_to_payment.max),
            ],
        ],
    )
    exits = _table(
        ["side exit", "stage", "grants"],
        [[s.state, s.stage.replace("_", " "), s.count] for s in report.side_exits],
    )
    scope = f"store {store_name}"
    if report.seller_id:
        scope += f", seller {report.seller_id}"
    if report.since is not None:
        scope += f", grants started since {iso(report.since)}"
    return _PAGE.format(
        plotly_js=offline.get_plotlyjs(),
        scope=html.escape(scope),
        generated=html.escape(iso(report.generated_at)),
        total=report.total,
        summary=summary,
        exits=exits,
        charts="\n".join(charts),
        count=len(charts),
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>opapprove approval report</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;margin:.5rem 0 1.5rem}} td,th{{padding:.2rem .8rem;text-align:left}}
th{{border-bottom:1px solid #999}} h2{{font-size:1.1rem;margin:1.5rem 0 .3rem}}
</style>
<script>{plotly_js}</script>
</head>
<body><main id="report" data-charts="{count}">
<h1>Approval report</h1>
<p>{total} grants · {scope} · generated {generated}</p>
{summary}
{exits}
{charts}
</main></body></html>
"""
