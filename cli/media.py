"""`aperture media show ID`: the history of a scored media, straight from Postgres.

ID is our scoring id (a UUID), the caller's request_id, or the caller's media id (every
scoring request for that media is shown, newest first).
"""

from __future__ import annotations

import datetime as dt
import uuid

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from models import Job, ScoredMedia, ScoredMediaTaggingJob, ScoringRound

console = Console()
MAX_SHOWN = 20


@click.group()
def media() -> None:
    """Scored media: the scoring loop's rows."""


@media.command("show")
@click.argument("ident")
@click.option("--results/--no-results", default=True, show_default=True, help="List the final round's guidelines.")
def show(ident: str, results: bool) -> None:
    """Show a scored media's history: scoring rounds, rescores, tagging jobs."""
    from config import get_settings
    from models.db import DatabaseNotConfigured, session_scope

    try:
        with session_scope() as session:
            found = find_media(session, ident)
            if not found:
                raise click.ClickException(f"no scored media with id, request id or media id {ident!r}")
            jobs = _tagging_jobs(session, [m.id for m in found])
            for item in found:
                render(console, item, jobs.get(item.id, []), max_rescores=get_settings().max_rescores, results=results)
    except DatabaseNotConfigured as exc:
        raise click.ClickException(str(exc)) from exc


def find_media(session: Session, ident: str) -> list[ScoredMedia]:
    conditions = [ScoredMedia.request_id == ident, ScoredMedia.media_id == ident]
    try:
        conditions.append(ScoredMedia.id == uuid.UUID(ident))
    except ValueError:
        pass
    return list(
        session.execute(
            select(ScoredMedia)
            .where(or_(*conditions))
            .order_by(ScoredMedia.created_at.desc())
            .limit(MAX_SHOWN)
            .options(
                selectinload(ScoredMedia.rounds).selectinload(ScoringRound.summaries),
                selectinload(ScoredMedia.rounds).selectinload(ScoringRound.results),
            )
        ).scalars()
    )


def _tagging_jobs(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Job]]:
    rows = session.execute(
        select(ScoredMediaTaggingJob.scored_media_id, Job)
        .join(Job, Job.id == ScoredMediaTaggingJob.job_id)
        .where(ScoredMediaTaggingJob.scored_media_id.in_(ids))
        .order_by(Job.created_at)
    ).all()
    jobs: dict[uuid.UUID, list[Job]] = {}
    for scoring_id, job in rows:
        jobs.setdefault(scoring_id, []).append(job)
    return jobs


def _when(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _adherence(round_: ScoringRound) -> str:
    parts = []
    for s in round_.summaries:
        percent = "n/a" if s.adherence_percent is None else f"{s.adherence_percent:.0%}"
        parts.append(f"{s.channel} {percent} ({s.pass_count}/{s.applicable_count})")
    return "\n".join(parts) or "-"


def render(out: Console, item: ScoredMedia, jobs: list[Job], *, max_rescores: int, results: bool) -> None:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    state_style = {"scored": "green", "needs_attention": "yellow", "failed": "red", "rejected": "red"}
    for label, value in (
        ("scoring id", str(item.id)),
        ("request id", item.request_id),
        ("media id", item.media_id or "-"),
        ("url", item.url or "-"),
        ("version", item.version or "-"),
        ("channels", ", ".join(item.channels) or "all"),
        ("state", f"[{state_style.get(item.state.value, 'cyan')}]{item.state.value}[/]"),
        ("rescores", f"{item.rescore_count} of at most {max_rescores}"),
        ("tagging jobs", str(item.tag_attempts)),
        ("callback", item.callback_status.value),
        ("created / ended", f"{_when(item.created_at)} / {_when(item.ended_at)}"),
        ("error", item.error or "-"),
    ):
        head.add_row(label, value)
    out.print(head)

    rounds = Table(title="Scoring rounds", title_justify="left")
    for column in ("#", "version", "why", "status", "asked for", "NO_DATA codes", "adherence", "polls", "submitted"):
        rounds.add_column(column)
    for r in item.rounds:
        rounds.add_row(
            str(r.number),
            (r.version or "-") + (" (409)" if r.conflict else ""),
            r.reason,
            r.status.value + (f" [{r.vidmob_status}]" if r.vidmob_status else ""),
            r.action or "-",
            "\n".join(r.no_data_codes) or "-",
            _adherence(r),
            f"{r.poll_count}" + (f", {r.fetch_count} fetches" if r.fetch_count > 1 else ""),
            _when(r.submitted_at),
        )
    out.print(rounds)

    if jobs:
        tagging = Table(title="Tagging jobs", title_justify="left")
        for column in ("job id", "state", "dialect", "assets", "submitted", "ended", "error"):
            tagging.add_column(column)
        for job in jobs:
            tagging.add_row(
                str(job.id),
                job.state.value,
                job.dialect,
                str(job.asset_count),
                _when(job.submitted_at),
                _when(job.ended_at),
                job.error or "-",
            )
        out.print(tagging)

    final = next((r for r in reversed(item.rounds) if r.results), None)
    if results and final is not None:
        detail = Table(title=f"Guidelines of round {final.number}", title_justify="left")
        for column in ("channel", "guideline", "result", "weight"):
            detail.add_column(column)
        for g in final.results:
            style = {"PASS": "green", "FAIL": "red"}.get(g.result, "yellow")
            weight = "-" if g.weight is None else f"{g.weight:g}"
            detail.add_row(g.channel, g.name, f"[{style}]{g.result}[/]", weight)
        out.print(detail)
