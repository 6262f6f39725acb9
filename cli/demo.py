"""`aperture demo` and `aperture up`: the whole system on one machine.

Embedded PostgreSQL and Redis unless APERTURE_DATABASE_URL / APERTURE_BROKER_URL are
set, the Vidmob simulator (the demo never calls the real, paid API), a real Celery
worker and the dispatcher, and a sample batch sent the way another application would send it:
`aperture.create_job` by name.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from cli.embedded import ExtraMissing, ensure_infrastructure
from cli.preflight import check_broker, check_database, check_redis
from cli.processes import NotReady, Process, interrupt_on_term, start_dispatcher, start_worker
from config import get_settings
from config.celery import caller_config
from config.settings import is_rabbitmq_url
from config.tasks import CREATE_JOB
from models import Asset, Job, JobState
from models.db import session_scope
from models.migrate import upgrade

# Fast, so the demo ends in seconds; each can be overridden from the environment.
DEMO_TIMINGS = {
    "APERTURE_POLL_INITIAL_S": "1",
    "APERTURE_POLL_INTERVAL_S": "1",
    "APERTURE_LOST_MESSAGE_AFTER_S": "10",
    "APERTURE_DISPATCH_INTERVAL_S": "0.5",
}
ENDED = {JobState.COMPLETE, JobState.FAILED, JobState.TIMED_OUT, JobState.REJECTED}


@dataclass(frozen=True)
class SampleJob:
    name: str
    urls: list[str]
    client_tags: list[dict[str, str]]
    expect: JobState


def sample_batch() -> list[SampleJob]:
    cdn = "https://cdn.example.com/demo"
    return [
        SampleJob(
            "summer-campaign",
            [f"{cdn}/summer/lifestyle-beach-{i:02d}.mp4" for i in range(8)],
            [{"label": "lifestyle", "description": "Assets featuring real-life settings or activities"}],
            JobState.COMPLETE,
        ),
        SampleJob(
            "product-shots",
            [f"{cdn}/catalog/product-closeup-{i:02d}.jpg" for i in range(8)],
            [{"label": "product-forward", "description": "Assets where the product is the primary focus"}],
            JobState.COMPLETE,
        ),
        SampleJob(
            "broken-uploads",
            [f"{cdn}/uploads/clip-{i:02d}.mp4" for i in range(4)] + [f"{cdn}/uploads/clip-that-will-fail.mp4"],
            [],
            JobState.FAILED,
        ),
    ]


class System:
    """Everything `demo` and `up` start, stopped in reverse order."""

    def __init__(self, console: Console, *, flower_port: int | None = None) -> None:
        self.console = console
        self.flower_port = flower_port
        self.children: list[Process] = []
        self.stack = ExitStack()

    def start(self) -> dict[str, str]:
        from simulator import SimulatorConfig, start_simulator

        for key, value in DEMO_TIMINGS.items():
            os.environ.setdefault(key, value)
        infra = ensure_infrastructure()
        self.stack.callback(infra.stop)
        check_database(infra.database_url)
        check_broker(infra.broker_url)
        redis_url = get_settings().fleet_redis_url
        if redis_url and redis_url != infra.broker_url:
            check_redis(redis_url, variable="APERTURE_REDIS_URL")
        broker = "RabbitMQ" if is_rabbitmq_url(infra.broker_url) else "Redis"
        self.console.print(
            f"[bold]PostgreSQL[/] {'embedded' if 'PostgreSQL' in infra.embedded else 'from APERTURE_DATABASE_URL'}"
            f", [bold]{broker}[/] {'embedded' if 'Redis' in infra.embedded else 'from APERTURE_BROKER_URL'}"
        )
        upgrade()
        key = os.environ.get("VIDMOB_API_KEY") or f"demo-{secrets.token_hex(8)}"
        sim = start_simulator(config=SimulatorConfig(api_key=key, pending_s=1.0, processing_s=2.0))
        self.stack.callback(sim.stop)
        os.environ.update({"VIDMOB_API_BASE_URL": sim.url, "VIDMOB_API_KEY": key})
        get_settings.cache_clear()
        self.console.print(f"[bold]Vidmob simulator[/] at {sim.url}")
        settings = get_settings()
        data_dir = Path(settings.data_dir).resolve()
        log_dir = data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k.startswith(("APERTURE_", "VIDMOB_"))}
        worker = start_worker(env, log_dir)
        self.children.append(worker)
        self.children.append(start_dispatcher(env, log_dir, data_dir))
        if self.flower_port is not None:
            from cli.flower import start_flower

            self.children.append(start_flower(env, log_dir, self.flower_port))
        self.stack.callback(self._stop_children)
        try:
            worker.wait_for_log("ready.", timeout=60)
        except NotReady:
            raise SystemExit(f"the worker did not start; see {worker.log_path}") from None
        self.console.print(f"[bold]Celery worker and dispatcher[/] running; logs in {log_dir}")
        return env

    def _stop_children(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def close(self) -> None:
        self.stack.close()


def submit_batch(broker_url: str, batch: list[SampleJob], run: str) -> dict[str, SampleJob]:
    """Sent exactly as another application would: by task name, JSON kwargs."""
    app = Celery("demo-caller", broker=broker_url)
    app.conf.update(caller_config(broker_url))
    sent = {}
    try:
        for job in batch:
            request_id = f"demo-{run}-{job.name}"
            app.send_task(
                CREATE_JOB.name,
                kwargs={
                    "assets": [{"url": url, "id": f"{job.name}-{i}"} for i, url in enumerate(job.urls)],
                    "client_tags": job.client_tags,
                    "request_id": request_id,
                    "collection": job.name,  # the library's subsets: `aperture tags top --in summer-campaign`
                },
            )
            sent[request_id] = job
    finally:
        app.close()
    return sent


def wait_with_progress(console: Console, request_ids: list[str], timeout: float) -> dict[str, Job]:
    jobs: dict[str, Job] = {}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} jobs"),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("Tagging", total=len(request_ids), states="")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with session_scope() as s:
                rows = (
                    s.execute(
                        select(Job)
                        .where(Job.request_id.in_(request_ids))
                        .options(selectinload(Job.assets).selectinload(Asset.tags))
                    )
                    .scalars()
                    .all()
                )
                jobs = {job.request_id: job for job in rows}
            done = sum(1 for j in jobs.values() if j.state in ENDED)
            states = Counter(j.state.value for j in jobs.values())
            progress.update(bar, completed=done, states=", ".join(f"{k}: {v}" for k, v in sorted(states.items())))
            if done == len(request_ids):
                break
            time.sleep(0.3)
    return jobs


def results_table(jobs: dict[str, Job], sent: dict[str, SampleJob]) -> Table:
    table = Table(title="Tags per asset", show_lines=True)
    table.add_column("job / asset", overflow="fold", ratio=2)
    table.add_column("state", ratio=1)
    table.add_column("tags by category", overflow="fold", ratio=5)
    for request_id, sample in sent.items():
        job = jobs.get(request_id)
        if job is None:
            table.add_row(sample.name, "[red]never stored[/]", "")
            continue
        if job.state is not JobState.COMPLETE:
            assets = ", ".join(a.url.rsplit("/", 1)[-1] for a in job.assets)
            table.add_row(f"{sample.name}\n{assets}", f"[red]{job.state.value}[/]", job.error or "")
            continue
        for asset in job.assets:
            by_category: dict[str, list[str]] = {}
            for tag in asset.tags:
                by_category.setdefault(tag.category, []).append(tag.label)
            tags = "\n".join(f"[bold]{category}[/]: {', '.join(labels)}" for category, labels in by_category.items())
            table.add_row(f"{sample.name}\n{asset.url.rsplit('/', 1)[-1]}", job.state.value, tags)
    return table


def write_demo_report(console: Console) -> Path | None:
    """The library the demo filled, as the HTML report (`aperture report`), in the data directory;
    without the `report` extra, one line that says it was skipped and how to get it."""
    try:
        from cli.report import write_report
    except ExtraMissing as exc:
        # The batch is the demo's point, and it has run: a missing chart library skips its last step
        # rather than refusing the whole demo at the start (`make demo` installs the extra).
        console.print(f"[bold]Report[/] skipped: {escape(exc.message)}", soft_wrap=True)
        return None

    path = Path(get_settings().data_dir).resolve() / "report.html"
    with session_scope() as session:
        written = write_report(session, path)
    summary = f"{written.assets} assets, {written.bytes / 1e6:.1f} MB, opens offline"
    console.print(f"[bold]Report[/] of the library ({summary}): {path}", soft_wrap=True)  # a path to copy, unbroken
    return path


def run_demo(
    console: Console, *, timeout: float = 180, keep_running: bool = False, flower_port: int | None = None
) -> int:
    interrupt_on_term()  # TERM (docker stop, systemd, kill) stops `up` as cleanly as Ctrl-C
    system = System(console, flower_port=flower_port)
    try:
        env = system.start()
        batch = sample_batch()
        console.print(
            f"Submitting {len(batch)} jobs with {sum(len(j.urls) for j in batch)} assets "
            "(one of them will fail at Vidmob, on purpose)"
        )
        sent = submit_batch(env["APERTURE_BROKER_URL"], batch, uuid.uuid4().hex[:8])
        jobs = wait_with_progress(console, list(sent), timeout)
        console.print(results_table(jobs, sent))
        as_expected = all(jobs.get(rid) is not None and jobs[rid].state is job.expect for rid, job in sent.items())
        if as_expected:
            console.print("[green]Every job ended as expected.[/]")
        else:
            console.print("[red]Some jobs did not end as expected.[/]")
        write_demo_report(console)
        if keep_running:
            console.print("Running; press Ctrl-C to stop.")
            try:
                while all(c.alive() for c in system.children):
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0 if as_expected else 1
    finally:
        console.print("Stopping...")
        system.close()
