"""`aperture report`: the library as one self-contained HTML page of charts.

Charts are drawn by Plotly (plotly.js, inlined once in the page: the file opens offline, from a
mail attachment or a shared drive, and needs no server or CDN). Why Plotly: docs/library.md.
Plotly is the `report` extra (`make demo` and `make test` install it, the production image does
not): without it, importing this module raises the one-line error `aperture report` prints.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from cli.embedded import extra_missing
from services.library.records import CLIENT_CATEGORY, Scope, TagRef
from services.library.report import Report, gather_report

try:
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs
except ImportError:  # the `report` extra, which the production image leaves out
    raise extra_missing("report", needed_by="aperture report") from None

PER_CATEGORY = 8  # bars per category in "Tag frequency by category"
CLIENT_TAGS = 20
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D", "#EECA3B")
OUTCOME_COLORS = {"ok": "#54A24B", "retryable": "#F58518", "terminal": "#E45756", "unknown": "#B279A2"}
STATE_COLORS = {"complete": "#54A24B", "failed": "#E45756", "timed_out": "#9D755D", "rejected": "#B279A2"}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
UNIT_MS = {"second": 1e3, "minute": 6e4, "hour": 3.6e6, "day": 8.64e7, "week": 6.048e8}


@dataclass(frozen=True)
class Written:
    path: Path
    bytes: int
    assets: int
    seconds: float


def write_report(session, path: Path, scope: Scope | None = None, *, now: dt.datetime | None = None) -> Written:
    """Gather the report in ``session`` (read-only) and write it to ``path``."""
    started = time.monotonic()
    report = gather_report(session, scope, now=now or dt.datetime.now(dt.UTC))
    page = render(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return Written(path, len(page.encode()), report.frequency.total_assets, time.monotonic() - started)


def render(report: Report) -> str:
    """The whole page: every chart's data inline, plotly.js inline once, nothing fetched."""
    sections = [
        _section("tag-frequency", "Tag frequency by category", *_tag_frequency(report)),
        _section("client-tags", "Top client tags", *_client_tags(report)),
        _section("co-occurrence", "Tags found together", *_co_occurrence(report)),
        _section("over-time", "Assets and jobs over time", *_over_time(report)),
        _section("vidmob-calls", "Vidmob calls per job", *_calls(report)),
        _section("usage-by-caller", "Usage by caller", *_callers(report)),
    ]
    title = f"Aperture library: {report.scope.describe()}"
    return _PAGE.format(
        title=html.escape(title),
        plotlyjs=get_plotlyjs(),
        summary=_summary(report),
        sections="\n".join(sections),
        generated=f"{report.generated_at:%Y-%m-%d %H:%M UTC}",
    )


# --- the charts: each returns (a sentence saying what it shows, the chart or None) -----------------


def _tag_frequency(report: Report) -> tuple[str, go.Figure | None]:
    freq = report.frequency
    by_category: dict[str, list] = defaultdict(list)
    for tag in freq.tags:
        if tag.category != CLIENT_CATEGORY and len(by_category[tag.category]) < PER_CATEGORY:
            by_category[tag.category].append(tag)
    if not by_category:
        return "No tags yet.", None
    # Categories by their most frequent tag; bars top-down in that order (plotly draws y bottom-up).
    categories = sorted(by_category, key=lambda c: (-by_category[c][0].assets, c))
    fig = go.Figure()
    for i, category in enumerate(categories):
        tags = by_category[category]
        fig.add_bar(
            name=category,
            orientation="h",
            x=[t.assets for t in tags],
            y=[f"{category}: {t.label}" for t in tags],
            marker_color=PALETTE[i % len(PALETTE)],
            customdata=[f"{t.share:.1%}" for t in tags],
            hovertemplate="%{y}<br>%{x} assets (%{customdata})<extra></extra>",
        )
    rows = sum(len(t) for t in by_category.values())
    fig.update_layout(
        height=max(300, 60 + 22 * rows),
        yaxis={"autorange": "reversed", "automargin": True},
        xaxis_title=f"assets (of {freq.total_assets:,})",
        legend_title_text="category",
    )
    return (
        f"The {PER_CATEGORY} most frequent tags of each category, in assets carrying them "
        f"({freq.total_assets:,} assets, {len(freq.tags):,} distinct tags).",
        fig,
    )


def _client_tags(report: Report) -> tuple[str, go.Figure | None]:
    coverage = sorted(report.coverage, key=lambda c: (-c.tagged, -c.requested, c.label))[:CLIENT_TAGS]
    if not coverage:
        return "No client tags were asked for or found in these assets.", None
    labels = [c.label for c in coverage]
    fig = go.Figure()
    fig.add_bar(name="asked for", x=labels, y=[c.requested for c in coverage], marker_color="#BAB0AC")
    fig.add_bar(
        name="tagged",
        x=labels,
        y=[c.tagged for c in coverage],
        marker_color="#4C78A8",
        customdata=[f"{c.coverage:.0%}" if c.coverage is not None else "-" for c in coverage],
        hovertemplate="%{x}: %{y} assets tagged (%{customdata} of those asked)<extra></extra>",
    )
    fig.update_layout(barmode="group", height=360, yaxis_title="assets", xaxis={"automargin": True})
    return (
        "Client tags by the assets carrying them (tagged), beside the assets whose job asked for them.",
        fig,
    )


def _co_occurrence(report: Report) -> tuple[str, go.Figure | None]:
    tags = report.heatmap_tags
    if len(tags) < 2:
        return "Fewer than two tags: nothing to pair.", None
    index = {tag: i for i, tag in enumerate(tags)}
    # The diagonal (a tag with itself) is left blank: it would be the darkest cell and wash out the pairs.
    z: list[list[int | None]] = [[None if i == j else 0 for j in range(len(tags))] for i in range(len(tags))]
    for pair in report.pairs:
        a, b = index[pair.first], index[pair.second]
        z[a][b] = z[b][a] = pair.assets
    names = [_tag_name(t) for t in tags]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            colorscale="Blues",
            colorbar_title="assets",
            hovertemplate="%{y} and %{x}: %{z} assets<extra></extra>",
        )
    )
    fig.update_layout(
        height=max(420, 140 + 34 * len(tags)),
        yaxis={"autorange": "reversed", "automargin": True},
        xaxis={"automargin": True, "tickangle": -35},
    )
    return (
        f"Assets carrying both tags, for the {len(tags)} most frequent tags (each tag's own count is in the "
        "first chart).",
        fig,
    )


def _over_time(report: Report) -> tuple[str, go.Figure | None]:
    act = report.activity
    if not act.assets and not act.jobs:
        return "Nothing has happened yet.", None
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=("assets tagged", "jobs created")
    )
    # A bar as wide as its bucket: left to itself, plotly sizes bars on a time axis from the gaps
    # between them, and draws a lone bar (or bars a second apart) too thin to see.
    width_ms = 0.8 * UNIT_MS[act.unit]
    fig.add_bar(
        name="assets tagged",
        x=[b.start for b in act.assets],
        y=[b.count for b in act.assets],
        width=width_ms,
        marker_color="#4C78A8",
        row=1,
        col=1,
    )
    by_state: dict[str, list] = defaultdict(list)
    for b in act.jobs:
        by_state[b.series].append(b)
    for i, (state, buckets) in enumerate(sorted(by_state.items())):
        fig.add_bar(
            name=f"jobs {state}",
            x=[b.start for b in buckets],
            y=[b.count for b in buckets],
            width=width_ms,
            marker_color=STATE_COLORS.get(state, PALETTE[i % len(PALETTE)]),
            row=2,
            col=1,
        )
    fig.update_layout(barmode="stack", height=520)
    return (
        f"Assets tagged (every tagging, a re-tagged URL counts again) and jobs created (by the state "
        f"they are in now), per {act.unit} (UTC).",
        fig,
    )


def _calls(report: Report) -> tuple[str, go.Figure | None]:
    calls = report.calls
    if not calls.jobs:
        return "No jobs yet.", None
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.65, 0.35],
        horizontal_spacing=0.1,
        subplot_titles=(f"the latest {len(calls.latest)} jobs, by outcome", "jobs by calls made"),
    )
    names = [f"{j.request_id[:24]} ({str(j.job_id)[:8]})" for j in calls.latest]
    outcomes = sorted({o for j in calls.latest for o in j.by_outcome}, key=lambda o: (o not in OUTCOME_COLORS, o))
    for i, outcome in enumerate(outcomes):
        fig.add_bar(
            name=outcome,
            x=names,
            y=[j.by_outcome.get(outcome, 0) for j in calls.latest],
            marker_color=OUTCOME_COLORS.get(outcome, PALETTE[i % len(PALETTE)]),
            customdata=[j.state for j in calls.latest],
            hovertemplate="%{x}<br>job %{customdata}: %{y} " + outcome + " calls<extra></extra>",
            row=1,
            col=1,
        )
    fig.add_bar(
        name="jobs",
        x=[n for n, _ in calls.distribution],
        y=[jobs for _, jobs in calls.distribution],
        marker_color="#72B7B2",
        hovertemplate="%{y} jobs made %{x} calls<extra></extra>",
        showlegend=False,
        row=1,
        col=2,
    )
    fig.update_layout(barmode="stack", height=480)
    fig.update_xaxes(tickangle=-45, automargin=True, row=1, col=1)
    fig.update_xaxes(title_text="calls per job", row=1, col=2)
    fig.update_yaxes(title_text="calls", row=1, col=1)
    fig.update_yaxes(title_text="jobs", row=1, col=2)
    mean = calls.calls / calls.jobs
    return (
        f"{calls.calls:,} Vidmob API calls for {calls.jobs:,} tagging jobs ({mean:.1f} per job): submissions, "
        "polls and result downloads, each kept with its outcome (api_attempts).",
        fig,
    )


def _callers(report: Report) -> tuple[str, go.Figure | None]:
    usage = report.callers
    if not usage:
        return "No requests yet.", None
    names = [u.caller for u in usage]
    fig = go.Figure()
    for name, values, color in (
        ("assets tagged by Vidmob", [u.assets_tagged for u in usage], "#4C78A8"),
        ("assets reused (no Vidmob call)", [u.assets_reused for u in usage], "#54A24B"),
        ("Vidmob API calls", [u.calls for u in usage], "#F58518"),
    ):
        fig.add_bar(name=name, x=names, y=values, marker_color=color)
    fig.update_layout(barmode="group", height=420)
    fig.update_xaxes(title_text="caller")
    requests = sum(u.requests for u in usage)
    return (
        f"{requests:,} requests from {len(usage)} caller(s): per caller (the application that sent them, "
        "`default` for those that name none), the assets Vidmob tagged for it, those answered by reuse "
        "instead, and the Vidmob API calls its jobs made.",
        fig,
    )


# --- the page --------------------------------------------------------------------------------------


def _tag_name(tag: TagRef) -> str:
    return f"{tag.category}: {tag.label}"


def _section(anchor: str, title: str, caption: str, fig: go.Figure | None) -> str:
    body = f'<p class="empty">{html.escape(caption)}</p>'
    if fig is not None:
        fig.update_layout(template="plotly_white", margin={"t": 40, "r": 20, "b": 40, "l": 20})
        chart = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{anchor}", config=PLOT_CONFIG)
        body = f"<p>{html.escape(caption)}</p>\n{chart}"
    return f'<section id="{anchor}">\n<h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _summary(report: Report) -> str:
    facts = [
        ("subset", report.scope.describe()),
        ("assets", f"{report.frequency.total_assets:,}"),
        ("distinct tags", f"{len(report.frequency.tags):,}"),
        ("tagging jobs", f"{report.calls.jobs:,}"),
        ("Vidmob calls", f"{report.calls.calls:,}"),
        (
            "collections",
            ", ".join(f"{c.collection or '(none)'} ({c.assets:,})" for c in report.collections[:12])
            + (" …" if len(report.collections) > 12 else "")
            or "-",
        ),
    ]
    if not report.counts_exact:
        facts.append(("counts", "counted from the rows: the maintained counts are being rebuilt"))
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return f'<table class="summary">\n{rows}\n</table>'


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.5rem; margin-bottom: .2rem; }}
h2 {{ font-size: 1.15rem; margin: 2.2rem 0 .3rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }}
p {{ margin: .3rem 0 .6rem; color: #444; }}
p.empty {{ color: #888; font-style: italic; }}
table.summary th {{ text-align: left; padding-right: 1.5rem; font-weight: 600; white-space: nowrap;
                    vertical-align: top; }}
footer {{ margin-top: 3rem; color: #888; font-size: .85rem; }}
</style>
<script type="text/javascript">{plotlyjs}</script>
</head>
<body>
<h1>{title}</h1>
{summary}
{sections}
<footer>Generated {generated} by <code>aperture report</code> from PostgreSQL (the library's views and
counts: docs/library.md). Charts by Plotly, included in this file: it opens offline.</footer>
</body>
</html>
"""
