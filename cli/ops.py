"""Operator commands: `aperture submit`, `aperture jobs list|show|retry`, `aperture schema`.

They talk to a running system through APERTURE_DATABASE_URL and APERTURE_BROKER_URL and never
start servers of their own. Failures a person can act on (a URL not set, a server not answering,
an unknown job) are one clear line and exit code 4, not a traceback.

`aperture submit --wait` exit codes: 0 complete, 1 failed or timed out, 2 rejected (by the worker,
or found invalid before sending), 3 still running when --timeout ran out, 4 could not run.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from models import Job

console = Console()

EXIT_COMPLETE, EXIT_FAILED, EXIT_REJECTED, EXIT_WAIT_TIMEOUT, EXIT_ERROR = 0, 1, 2, 3, 4
EXIT_FOR_STATE = {"complete": EXIT_COMPLETE, "failed": EXIT_FAILED, "timed_out": EXIT_FAILED, "rejected": EXIT_REJECTED}
ENDED = set(EXIT_FOR_STATE)
STATES = ("rejected", "submitting", "packed", "polling", "complete", "failed", "timed_out")


class OperatorError(click.ClickException):
    """Something a person can fix: said in one line."""

    exit_code = EXIT_ERROR


# --- connections ---------------------------------------------------------------------------------


def _settings():
    from config import get_settings

    try:
        return get_settings()
    except Exception as exc:  # pydantic's message names the variable at fault
        raise OperatorError(f"the configuration is invalid: {exc}") from exc


def require_database() -> None:
    if not _settings().database_url:
        raise OperatorError(
            "APERTURE_DATABASE_URL is not set. Point it at the system's PostgreSQL "
            "(e.g. postgresql://user@host:5432/aperture); these commands talk to a running system "
            "and never start one."
        )


def require_broker() -> str:
    url = _settings().broker_url
    if not url:
        raise OperatorError(
            "APERTURE_BROKER_URL is not set. Point it at the system's broker (e.g. redis://host:6379/0); "
            "these commands talk to a running system and never start one."
        )
    return url


def _safe_db_url() -> str:
    from sqlalchemy.engine import make_url

    from models.db import sqlalchemy_url

    try:
        return make_url(sqlalchemy_url(_settings().database_url or "")).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "APERTURE_DATABASE_URL"


@contextmanager
def database() -> Iterator[Any]:
    """One transaction; an unreachable or unmigrated database becomes one clear line."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from models.db import session_scope

    require_database()
    try:
        with session_scope() as session:
            yield session
    except OperationalError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise OperatorError(f"cannot reach PostgreSQL at {_safe_db_url()}: {detail}") from exc
    except ProgrammingError as exc:
        raise OperatorError(
            f"PostgreSQL at {_safe_db_url()} answered but the schema is missing or old: run `aperture db upgrade`"
        ) from exc


def send_message(task: str, kwargs: dict[str, Any], *, queue: str | None = None, task_id: str | None = None) -> str:
    """Send a task by name, as any application does; a broker that does not answer is an error."""
    from celery import Celery
    from kombu.exceptions import OperationalError as BrokerError
    from kombu.utils.url import maybe_sanitize_url

    from config.celery import caller_config
    from config.tasks import queue_of

    broker = require_broker()
    app = Celery("aperture-cli", broker=broker)
    app.conf.update(caller_config(broker))
    app.conf.update(task_serializer="json", broker_connection_timeout=5, broker_connection_retry=False)
    try:
        result = app.send_task(
            task,
            kwargs=kwargs,
            queue=queue or queue_of(task),
            task_id=task_id,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
        )
        return result.id
    except (BrokerError, OSError) as exc:
        raise OperatorError(f"cannot reach the broker at {maybe_sanitize_url(broker)}: {exc}") from exc
    finally:
        app.close()


# --- input ---------------------------------------------------------------------------------------


def load_payload(path: Path) -> dict[str, Any]:
    """A CSV with a header (`url` and optionally `id`), or JSON: a list of assets (objects or
    URL strings), or a whole aperture.create_job payload."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatorError(f"cannot read {path}: {exc}") from exc
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise OperatorError(f"{path} is not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            if "assets" not in data:
                raise OperatorError(f"{path}: a JSON object must be a create_job payload with an 'assets' list")
            return dict(data)
        if isinstance(data, list):
            return {"assets": [{"url": a} if isinstance(a, str) else a for a in data]}
        raise OperatorError(f"{path}: expected a JSON list of assets or a create_job payload")
    return {"assets": _csv_assets(path, text)}


def _csv_assets(path: Path, text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "url" not in fields:
        raise OperatorError(f"{path}: the CSV needs a header line with a 'url' column (and optionally 'id')")
    assets = []
    for line_no, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
        if not any(row.values()):
            continue
        if not row.get("url"):
            raise OperatorError(f"{path}, line {line_no}: no url")
        asset = {"url": row["url"]}
        if row.get("id"):
            asset["id"] = row["id"]
        assets.append(asset)
    return assets


def parse_client_tag(value: str) -> dict[str, str]:
    label, sep, description = value.partition("=")
    if not label.strip():
        raise click.BadParameter(f"{value!r}: expected LABEL=DESCRIPTION", param_hint="--client-tag")
    tag = {"label": label.strip()}
    if sep:
        tag["description"] = description.strip()
    return tag


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: str) -> dt.timedelta:
    match = _DURATION.match(value)
    if not match:
        raise click.BadParameter(f"{value!r}: expected e.g. 90s, 10m, 2h or 1d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return dt.timedelta(seconds=float(match.group(1)) * unit)


# --- submit --------------------------------------------------------------------------------------


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Show progress until the job ends; the exit code says how it ended.")
@click.option("--request-id", help="Idempotency key (default: a new one). The same key again never makes a new job.")
@click.option(
    "--client-tag",
    "client_tags",
    multiple=True,
    metavar="LABEL=DESCRIPTION",
    help="A client tag for Vidmob to apply; repeatable.",
)
@click.option("--timeout", default=3600.0, show_default=True, help="With --wait: seconds before giving up (exit 3).")
def submit(file: Path, wait: bool, request_id: str | None, client_tags: tuple[str, ...], timeout: float) -> None:
    """Send a file of assets to be tagged, as `aperture.create_job`.

    FILE is a CSV with a `url,id` header, or JSON: a list of assets or a whole create_job payload.
    Exit codes: 0 complete, 1 failed or timed out, 2 rejected, 3 --wait timed out, 4 could not run.
    """
    from pydantic import ValidationError

    from config.tasks import CREATE_JOB
    from services.contract import CreateJobRequest, describe_errors

    payload = load_payload(file)
    if client_tags:
        payload["client_tags"] = list(payload.get("client_tags") or []) + [parse_client_tag(t) for t in client_tags]
    payload["request_id"] = request_id or payload.get("request_id") or f"cli-{uuid.uuid4().hex}"
    try:
        CreateJobRequest.model_validate(payload)
    except ValidationError as exc:
        click.echo(f"rejected (nothing sent): {describe_errors(exc)}", err=True)
        sys.exit(EXIT_REJECTED)
    if wait:
        with database() as session:  # before sending: --wait must be able to watch
            session.connection()
    task_id = send_message(CREATE_JOB.name, payload)
    console.print(
        f"sent {CREATE_JOB.name}: request id [bold]{payload['request_id']}[/], "
        f"{len(payload['assets'])} asset(s), message {task_id}"
    )
    if not wait:
        return
    state = wait_for_end(payload["request_id"], timeout)
    if state is None:
        console.print(f"[yellow]still running after {timeout:g}s[/]: `aperture jobs show {payload['request_id']}`")
        sys.exit(EXIT_WAIT_TIMEOUT)
    with database() as session:
        from services.tagging.reads import find_job, pack_view

        job = find_job(session, payload["request_id"])
        print_job(job, attempts=None, pack=pack_view(session, job))
    sys.exit(EXIT_FOR_STATE[state])


def wait_for_end(request_id: str, timeout: float) -> str | None:
    """A progress bar through the job's life: sent, accepted, submitted to Vidmob, ended."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from sqlalchemy import select

    from models import Job

    stage = {"submitting": 1, "packed": 1, "polling": 2}
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task(request_id, total=3, detail="waiting for a worker to accept it")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with database() as session:
                row = session.execute(
                    select(Job.state, Job.error, Job.poll_count, Job.submit_attempts, Job.asset_count).where(
                        Job.request_id == request_id
                    )
                ).first()
            if row is not None:
                state = row.state.value
                if state in ENDED:
                    progress.update(bar, completed=3, detail=state)
                    return state
                detail = {
                    "submitting": f"submitting to Vidmob (attempt {max(1, row.submit_attempts)})",
                    "packed": "waiting in a pack: its Vidmob job will carry this request with others",
                    "polling": f"Vidmob is tagging {row.asset_count} asset(s); {row.poll_count} poll(s) so far",
                }[state]
                if row.error:
                    detail += f"; last error: {row.error[:80]}"
                progress.update(bar, completed=stage[state], detail=detail)
            time.sleep(0.5)
    return None


# --- jobs ----------------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """Look at jobs in PostgreSQL, and re-submit failed ones."""


@jobs.command("list")
@click.option(
    "--state", "states", multiple=True, type=click.Choice(STATES), help="Only jobs in this state; repeatable."
)
@click.option("--older-than", type=parse_duration, help="Only jobs created longer ago than this (e.g. 10m, 2h).")
@click.option(
    "--stuck",
    is_flag=True,
    help="Only active jobs whose next look is overdue by more than APERTURE_LOST_MESSAGE_AFTER_S, "
    "or past their deadline; and jobs flagged duplicate_risk (Vidmob may hold a second job).",
)
@click.option("--caller", help="Only jobs of this caller (an application's name; `default` for those that name none).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job instead of a table.")
def jobs_list(
    states: tuple[str, ...], older_than: dt.timedelta | None, stuck: bool, caller: str | None, limit: int, as_json: bool
) -> None:
    """Jobs, newest first."""
    from services.tagging.reads import list_jobs

    now = dt.datetime.now(dt.UTC)
    with database() as session:
        rows = list_jobs(
            session,
            now=now,
            settings=_settings(),
            states=states,
            older_than=older_than,
            stuck=stuck,
            caller=caller,
            limit=limit,
        )
    if as_json:
        for job in rows:
            click.echo(json.dumps(job_summary(job)))
        return
    table = compact_table(f"{len(rows)} job(s)" + (" (stuck)" if stuck else "") + ", newest first")
    add_cell(table, "job")  # the first 8 digits, which `jobs show` and `jobs retry` accept
    # The caller's column only when the rows have more than one: a fleet of one application (or a list
    # filtered by --caller) keeps the 80-column table it had, and the title names the one caller.
    callers_listed = {job.caller for job in rows}
    by_caller = len(callers_listed) > 1
    if by_caller:
        add_cell(table, "caller")
    elif callers_listed:
        table.title = f"{table.title}, caller {escape(next(iter(callers_listed)))}"
    add_cell(table, "request id")
    add_cell(table, "state")
    add_cell(table, "assets", justify="right")
    add_cell(table, "age", justify="right")
    add_cell(table, "next look")
    add_cell(table, "error", ratio=1, min_width=5)
    # What the other columns leave on an 80-column terminal (polls and the rest: `jobs show`).
    request_id_width = max(20, console.width - (72 if by_caller else 60))
    for job in rows:
        cells = [str(job.id)[:8]]
        if by_caller:
            cells.append(escape(shorten(job.caller, 12)))
        table.add_row(
            *cells,
            escape(shorten(job.request_id, request_id_width)),
            _state(job.state.value),
            str(job.asset_count),
            _ago(now - job.created_at),
            _relative(job.next_poll_at, now),
            ("duplicate risk: Vidmob may hold a second job. " if job.duplicate_risk else "") + escape(job.error or "-"),
        )
    console.print(table)


@jobs.command("show")
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
def jobs_show(ident: str, as_json: bool) -> None:
    """A job by job id or request id: state, error, times, assets with tags, API attempts; a job waiting
    for a slot under the open-jobs cap, its place in the order slots go."""
    from services.tagging.capacity import place_of
    from services.tagging.reads import UnknownJob, attempts_of, find_job, pack_view

    with database() as session:
        try:
            job = find_job(session, ident)
        except UnknownJob as exc:
            raise OperatorError(str(exc)) from exc
        attempts = attempts_of(session, job.id)
        pack = pack_view(session, job)
        place = place_of(session, job.id, settings=_settings(), now=dt.datetime.now(dt.UTC))
    if as_json:
        detail = job_detail(job, attempts, pack)
        detail["waiting"] = None if place is None else {"place": place.place, "of": place.waiting}
        click.echo(json.dumps(detail, indent=2))
        return
    print_job(job, attempts, pack, place)


@jobs.command("retry")
@click.argument("ident", metavar="ID")
def jobs_retry(ident: str) -> None:
    """Re-submit a job that ended failed or timed out (by job id or request id)."""
    from config.tasks import queue_of
    from services.tagging.operator_retry import RETRYABLE_STATES, retry_job
    from services.tagging.reads import UnknownJob, find_job

    settings = _settings()
    require_broker()
    with database() as session:
        try:
            job = find_job(session, ident)
        except UnknownJob as exc:
            raise OperatorError(str(exc)) from exc
        previous = job.vidmob_job_id
        message = retry_job(session, job.id, settings=settings, now=dt.datetime.now(dt.UTC))
        if message is None:
            allowed = " or ".join(s.value for s in RETRYABLE_STATES)
            raise OperatorError(f"job {job.id} is {job.state.value}: only {allowed} jobs can be retried")
    # After the commit, as always: the message must find the row it points at.
    try:
        send_message(message.task, message.kwargs, queue=queue_of(message.task))
    except OperatorError as exc:
        raise OperatorError(
            f"job {job.id} is set to be re-submitted, but the message was not sent ({exc.message}); "
            f"the dispatcher sends it within {settings.lost_message_after_s:g}s of the broker being back"
        ) from exc
    abandoned = f" (Vidmob job {previous} abandoned)" if previous else ""
    console.print(f"job {job.id} re-submitted{abandoned}: `aperture jobs show {job.id}` to follow it")


# --- callers -------------------------------------------------------------------------------------


@click.command()
@click.option("--since", "window", default="24h", show_default=True, type=parse_duration, help="The usage window.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per caller instead of a table.")
def callers(window: dt.timedelta, as_json: bool) -> None:
    """The applications that send requests: their settings (APERTURE_CALLERS) and what they used."""
    from config.settings import DEFAULT_CALLER
    from config.tasks import QueueName, caller_queue
    from services.tagging.budgets import budget_of
    from services.tagging.reads import Usage, usage_by_caller

    settings = _settings()
    now = dt.datetime.now(dt.UTC)
    with database() as session:
        usage = usage_by_caller(session, since=now - window, settings=settings)
        names = sorted(set(usage) | set(settings.callers) | {DEFAULT_CALLER})
        budgets = {name: budget_of(session, name, settings=settings, now=now) for name in names}
    rows: list[dict[str, Any]] = []
    for name in names:
        config = settings.caller(name)
        used = usage.get(name, Usage(name))
        budget = budgets[name]
        rows.append(
            {
                "caller": name,
                "configured": config is not None,
                "weight": config.weight if config else 1.0,
                # Where it may send its requests (README "A caller's own intake queue").
                "intake_queue": caller_queue(name) if config is not None else QueueName.SUBMIT.value,
                "callback_queues": list(config.callback_queues) if config and config.callback_queues else None,
                "callback_task_prefixes": (
                    list(config.callback_task_prefixes) if config and config.callback_task_prefixes else None
                ),
                "assets_per_day": config.assets_per_day if config else None,
                "over_budget": config.over_budget if config else None,
                "since": (now - window).isoformat(),
                "requests": used.requests,
                "rejected": used.rejected,
                "assets_sent": used.assets_sent,
                "assets_reused": used.assets_reused,
                "vidmob_jobs": used.vidmob_jobs,
                "api_calls": used.api_calls,
                "waiting": used.waiting,
                "budget_left": budget.left if budget else None,
            }
        )
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    table = compact_table(f"{len(rows)} caller(s), usage since {_ago(window)} ago")
    for header in ("caller", "weight", "callbacks to"):
        add_cell(table, header)
    for header in ("requests", "rejected", "sent", "reused", "Vidmob jobs", "API calls", "waiting", "budget left"):
        add_cell(table, header, justify="right")
    for row in rows:
        queues = ", ".join(row["callback_queues"] or []) or ("any" if row["caller"] == DEFAULT_CALLER else "own")
        left = "-" if row["budget_left"] is None else f"{row['budget_left']}/{row['assets_per_day']}"
        table.add_row(
            escape(row["caller"]) + ("" if row["configured"] or row["caller"] == DEFAULT_CALLER else " (unconfigured)"),
            f"{row['weight']:g}",
            escape(queues),
            *(
                str(row[k])
                for k in ("requests", "rejected", "assets_sent", "assets_reused", "vidmob_jobs", "api_calls")
            ),
            str(row["waiting"]),
            left,
        )
    console.print(table)


# --- schema --------------------------------------------------------------------------------------


@click.command()
@click.option("--write", is_flag=True, help="Regenerate the files under docs/schemas/.")
@click.option("--check", is_flag=True, help="Exit 1 if the files under docs/schemas/ are out of date.")
def schema(write: bool, check: bool) -> None:
    """JSON Schema of every public task's keyword arguments (from services/contract.py)."""
    from services import schema as schemas

    if write:
        for path in schemas.write_all():
            console.print(f"wrote {path}")
        return
    if check:
        stale = schemas.stale()
        if stale:
            raise click.ClickException(f"out of date: {', '.join(stale)}; run `aperture schema --write`")
        console.print("docs/schemas is up to date")
        return
    click.echo(json.dumps({task: schemas.schema_for(task) for task in schemas.public_tasks()}, indent=2))


# --- rendering -----------------------------------------------------------------------------------


def job_summary(job) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "request_id": job.request_id,
        "caller": job.caller,
        "priority": job.priority,
        "replays": job.replays,
        "key_conflict_of": str(job.key_conflict_of) if job.key_conflict_of else None,
        "state": job.state.value,
        "error": job.error,
        "vidmob_job_id": job.vidmob_job_id,
        "asset_count": job.asset_count,
        "poll_count": job.poll_count,
        "submit_attempts": job.submit_attempts,
        "duplicate_risk": job.duplicate_risk,
        "callback": job.callback,
        "callback_status": job.callback_status.value if job.callback_status else None,
        **{
            name: (value.isoformat() if value else None)
            for name, value in (
                ("created_at", job.created_at),
                ("submitted_at", job.submitted_at),
                ("completed_at", job.completed_at),
                ("ended_at", job.ended_at),
                ("next_poll_at", job.next_poll_at),
                ("dispatched_at", job.dispatched_at),
                ("leased_until", job.leased_until),
                ("deadline_at", job.deadline_at),
                ("waiting_since", job.waiting_since),
            )
        },
    }


def job_detail(job, attempts, pack=None) -> dict[str, Any]:
    from services.tagging.callbacks import provenance

    return {
        **job_summary(job),
        "batch": job.batch,
        "is_pack": job.is_pack,
        # Batching: the pack whose Vidmob job served the request (or, for a pack, its members).
        "pack": None
        if pack is None
        else {
            "job_id": str(pack.pack_id),
            "state": pack.state,
            "vidmob_job_id": pack.vidmob_job_id,
            "submitted_at": pack.submitted_at.isoformat() if pack.submitted_at else None,
            "requests": pack.members,
            "assets": pack.assets,
            **({"request_ids": list(pack.member_request_ids)} if job.is_pack else {}),
        },
        "reused_from": [{"job_id": job_id, "tagged_at": when.isoformat()} for job_id, when in reused_from(job)],
        "assets": [
            {
                "url": a.url,
                "id": a.external_id,
                "tags": [{"category": t.category, "label": t.label} for t in a.tags],
                **provenance(a),
            }
            for a in job.assets
        ],
        "attempts": [
            {
                "at": a.attempted_at.isoformat(),
                "task": a.task_name,
                "endpoint": a.endpoint,
                "status": a.status_code,
                "outcome": a.outcome,
                "latency_ms": a.latency_ms,
                "error": a.error,
            }
            for a in attempts
        ],
    }


def reused_from(job) -> list[tuple[str, dt.datetime]]:
    """(earlier job, when its Vidmob tagging was made) for each source of the job's reused tags
    (services/tagging/reuse.py): one, unless its assets were tagged by different jobs."""
    found = {(str(a.reused_from.job_id), a.tagged_at): None for a in job.assets if a.reused_from is not None}
    return sorted(found, key=lambda source: source[1])


def print_job(job, attempts, pack=None, place=None) -> None:
    now = dt.datetime.now(dt.UTC)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    rows = [
        ("job id", str(job.id)),
        ("request id", job.request_id + (f"  (sent again {job.replays} time(s): replays)" if job.replays else "")),
        ("caller", f"{job.caller} ({job.priority})"),
        ("state", _state(job.state.value)),
        ("error", job.error or "-"),
        ("Vidmob job", f"{job.vidmob_job_id or '-'} ({job.dialect} dialect)"),
        ("assets", str(job.asset_count)),
        ("polls", str(job.poll_count)),
        ("submit attempts", str(job.submit_attempts) + ("  [red]duplicate risk[/]" if job.duplicate_risk else "")),
        ("callback", f"{job.callback['task']} ({job.callback_status.value})" if job.callback else "-"),
        ("created", _when(job.created_at, now)),
        ("submitted", _when(job.submitted_at, now)),
        ("completed", _when(job.completed_at, now)),
        ("ended", _when(job.ended_at, now)),
        ("next look", _next_look(job, now)),
        ("deadline", _when(job.deadline_at, now)),
    ]
    if pack is not None:
        rows[5:6] = _pack_rows(job, pack, now)
    sources = reused_from(job)
    if sources:
        reused = "; ".join(f"job {job_id} (tagged {_when(when, now)})" for job_id, when in sources)
        rows.insert(6, ("tags", f"reused from {reused}, no Vidmob call"))
    if place is not None:
        waited = f", since {_when(job.waiting_since, now)}" if job.waiting_since else ""
        rows.insert(4, ("waiting", f"place {place.place} of {place.waiting} for a free slot (fair order{waited})"))
    for name, value in rows:
        facts.add_row(name, value)
    console.print(facts)
    if job.assets:
        assets = Table(title="Assets")
        for column in ("#", "id", "url", "tags"):
            assets.add_column(column, overflow="fold")
        for asset in job.assets:
            tags = ", ".join(f"{t.category}:{t.label}" for t in asset.tags) or "-"
            assets.add_row(str(asset.position), asset.external_id or "-", asset.url, tags)
        console.print(assets)
    if attempts:
        table = Table(title="Vidmob API attempts")
        for column in ("at", "task", "endpoint", "status", "outcome", "ms", "error"):
            table.add_column(column, overflow="fold")
        for a in attempts:
            table.add_row(
                a.attempted_at.strftime("%H:%M:%S"),
                a.task_name or "-",
                a.endpoint,
                str(a.status_code or "-"),
                a.outcome,
                f"{a.latency_ms:.0f}" if a.latency_ms is not None else "-",
                (a.error or "")[:100],
            )
        console.print(table)


def _pack_rows(job, pack, now: dt.datetime) -> list[tuple[str, str]]:
    """The "Vidmob job" line of a packed request, or of a pack (services/tagging/packing.py)."""
    vidmob = f"{pack.vidmob_job_id or '-'} ({job.dialect} dialect)"
    if job.is_pack:
        shown = ", ".join(pack.member_request_ids) + (", ..." if pack.members > len(pack.member_request_ids) else "")
        return [
            ("Vidmob job", vidmob),
            ("pack of", f"{pack.members} requests, {pack.assets} distinct assets: {escape(shown) or '-'}"),
        ]
    alone = job.state.value != "packed" and job.vidmob_job_id is not None
    served = f"served by Vidmob job {pack.vidmob_job_id or '(not created yet)'}" if not alone else "sent alone"
    return [
        ("Vidmob job", f"{job.vidmob_job_id} ({job.dialect} dialect)" if alone else vidmob),
        (
            "batched",
            f"packed in job {pack.pack_id} ({pack.state}, {pack.members} requests, {pack.assets} assets); "
            f"{served}; pack submitted {_when(pack.submitted_at, now)}",
        ),
    ]


def compact_table(title: str, **kwargs: Any) -> Table:
    """A table for an 80-column terminal: no vertical borders, so every column goes to the data;
    the columns given a ``ratio`` share what the others leave (rich applies ratios only to an
    expanded table: unexpanded, it would shrink every no-wrap column alike)."""
    return Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left", expand=True, **kwargs)


def add_cell(table: Table, header: str, **kwargs: Any) -> None:
    """A column that stays on one line per row: what does not fit ends in an ellipsis."""
    table.add_column(header, no_wrap=True, overflow="ellipsis", **kwargs)


def shorten(text: str, width: int) -> str:
    """At most ``width`` characters, cut in the middle: ids and file names differ at both ends
    ("demo-7c48f750-summer-campaign" -> "demo-7c48f…r-campaign")."""
    if len(text) <= width:
        return text
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + "…" + text[len(text) - tail :]


def _state(state: str) -> str:
    color = {"complete": "green", "failed": "red", "timed_out": "red", "rejected": "red"}.get(state, "yellow")
    return f"[{color}]{state}[/]"


def _ago(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _relative(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "-"
    return f"in {_ago(when - now)}" if when > now else f"{_ago(now - when)} ago"


def _next_look(job: Job, now: dt.datetime) -> str:
    """When the job is looked at next, and what stands between it and that look: a worker holding it,
    its message sent and not run yet, or nothing (parked in PostgreSQL until due)."""
    if not job.state.is_active or job.next_poll_at is None:
        return "-"
    due = _when(job.next_poll_at, now)
    if job.leased_until is not None and job.leased_until > now:
        return f"{due}; a worker holds it until {_when(job.leased_until, now)}"
    if job.dispatched_at is not None:
        return f"{due}; its message was sent {_when(job.dispatched_at, now)}"
    return f"{due}; parked"


def _when(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "-"
    return f"{when.isoformat(timespec='seconds')} ({_relative(when, now)})"
