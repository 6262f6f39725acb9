"""The durable engine under both domains: what a caller and an operator see of it end to end
(callbacks owed only when asked, a retried job's callback under a new id, every Scoring API
call with its owner, log lines that say which request they are about), and the structure
that keeps it one engine (no import cycle, task names in one place, small modules).

The behaviour runs its steps and dispatcher passes in this process (``fleet``: tests/inprocess.py);
only the log lines run a real worker and dispatcher (``system``): what they check is what the worker
process writes, each line tagged with the Celery task it ran in."""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from config.tasks import QueueName
from models import ApiAttempt, CallbackStatus, Job, JobState, ScoredMedia, ScoringState
from models.db import session_scope
from tests import factories
from tests.inprocess import Fleet
from tests.support import drain, job_by_request_id, send, sim_fault, wait_for, wait_for_job

ROOT = Path(__file__).resolve().parent.parent
CDN = "https://cdn.example.com/engine"
FINAL_MEDIA = {s for s in ScoringState if not s.is_active}


def media_by_request_id(request_id: str) -> ScoredMedia | None:
    with session_scope() as s:
        return s.execute(select(ScoredMedia).where(ScoredMedia.request_id == request_id)).scalar_one_or_none()


def wait_for_media(request_id: str, timeout: float = 30) -> ScoredMedia:
    """Until the worker and dispatcher processes (``system``) have ended the media."""

    def ended() -> ScoredMedia | None:
        media = media_by_request_id(request_id)
        return media if media is not None and media.state in FINAL_MEDIA else None

    return wait_for(ended, timeout, what=f"scored media {request_id} to end")


def run_sent_by_the_cli(fleet: Fleet) -> int:
    """Run in the fleet the messages the `aperture` command line sent to its broker (the fleet's
    Redis database, which no worker reads), as a worker would take them; how many. New requests go to
    aperture.submit, an operator's retry (a stored job's submission) to aperture.admit."""
    broker = fleet.env["APERTURE_BROKER_URL"]
    messages = [*drain(broker, QueueName.SUBMIT.value), *drain(broker, QueueName.ADMIT.value)]
    for message in messages:
        fleet.send(message.headers["task"], **message.payload[1])
    return len(messages)


def stored_callback_is_sql_null(model, row_id) -> bool:
    with session_scope() as s:
        return s.execute(select(model.callback.is_(None)).where(model.id == row_id)).scalar_one()


# --- callbacks ---------------------------------------------------------------------------


@pytest.mark.slow
def test_requests_sent_without_a_callback_owe_none(fleet):
    # given a tagging request, a scoring request and a rejected request, none with a callback
    job_request, media_request, bad_request = (f"engine-nocb-{i}-{uuid.uuid4()}" for i in range(3))
    fleet.create_job(request_id=job_request, assets=[{"url": f"{CDN}/a.mp4"}])
    fleet.score_media(request_id=media_request, id=f"m-{uuid.uuid4().hex[:8]}", url=f"{CDN}/b.mp4")
    fleet.create_job(request_id=bad_request, assets=[])

    # when they end
    job, rejected = fleet.wait_for_job(job_request), fleet.wait_for_job(bad_request)
    media = fleet.wait_for_media(media_request)

    # then each ended as usual, owes no callback, and stored no callback at all (SQL NULL)
    assert job.state is JobState.COMPLETE and rejected.state is JobState.REJECTED
    assert media.state is ScoringState.SCORED
    for row in (job, rejected, media):
        assert row.callback_status is CallbackStatus.NONE, row.request_id
    assert stored_callback_is_sql_null(Job, job.id) and stored_callback_is_sql_null(Job, rejected.id)
    assert stored_callback_is_sql_null(ScoredMedia, media.id)
    assert fleet.callbacks == []


@pytest.mark.slow
def test_a_lost_callback_is_resent_whatever_number_of_jobs_ended_without_one(fleet):
    from services import tagging
    from services.durable.lifecycle import ending_values

    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    # given more jobs without a callback than one sweep takes (500), all ended long ago
    with session_scope() as s:
        many = factories.insert_jobs(s, [factories.job_values(callback=None) for _ in range(600)])
        s.execute(
            update(Job)
            .where(Job.id.in_([m.id for m in many]))
            .values(**ending_values(tagging.KIND, JobState.FAILED.value, long_ago, "ended for the test"))
        )
    # and then a job whose callback send was lost (its worker died between commit and send)
    lost = factories.job(
        state=JobState.FAILED,
        callback={"task": "caller.lost", "queue": "caller"},
        callback_status=CallbackStatus.PENDING,
        ended_at=long_ago + dt.timedelta(seconds=1),
    ).id

    # then the 600 owe nothing, and the sweeper re-sends the lost one, under its stable id
    with session_scope() as s:
        owed = s.execute(
            select(func.count()).where(Job.id.in_([m.id for m in many]), Job.callback_status != CallbackStatus.NONE)
        ).scalar_one()
    assert owed == 0
    fleet.run_until(
        lambda: job_by_request_id_of(lost).callback_status is CallbackStatus.SENT,
        timeout=15,
        what="the sweeper to re-send the lost callback",
    )
    assert [(m.task, m.queue, m.task_id) for m in fleet.callbacks] == [
        ("caller.lost", "caller", f"aperture-callback-{lost}")
    ]
    assert fleet.callbacks[0].kwargs["status"] == "failed"


def job_by_request_id_of(job_id) -> Job:
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


@pytest.mark.slow
def test_a_retried_job_sends_its_new_callback_under_a_new_id(fleet, aperture):
    # given a job with a callback whose submission Vidmob refused, so it failed and said so
    sim = fleet.simulator
    sim_fault(sim, method="POST", path="/v1/aperture/jobs", status=400, times=1)
    sim_fault(sim, method="POST", path="/v1/media/aperture", status=400, times=1)
    request_id = f"engine-retry-{uuid.uuid4()}"
    callback = {"task": "caller.tagged", "queue": "caller"}
    fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/r.mp4"}], callback=callback)
    failed = fleet.wait_for_job(request_id)
    assert failed.state is JobState.FAILED
    fleet.run_until(
        lambda: job_by_request_id(request_id).callback_status is CallbackStatus.SENT, what="failure callback"
    )

    # when an operator retries it (the command sends the job's submission to the broker, which the
    # fleet takes as a worker would) and it completes
    assert aperture("jobs", "retry", request_id).exit_code == 0
    assert run_sent_by_the_cli(fleet) == 1
    fleet.run_until(
        lambda: (
            (j := job_by_request_id(request_id)).state is JobState.COMPLETE and j.callback_status is CallbackStatus.SENT
        ),
        what="the retried job's callback",
    )

    # then the caller got two callbacks with two ids: one per end, so neither is dropped as a repeat
    by_id = {m.task_id: m.kwargs["status"] for m in fleet.callbacks}
    assert by_id == {f"aperture-callback-{failed.id}": "failed", f"aperture-callback-{failed.id}-retry-1": "complete"}
    assert len(fleet.callbacks) == 2
    assert job_by_request_id(request_id).generation == 1


# --- attempts and logs -------------------------------------------------------------------


@pytest.mark.slow
def test_every_scoring_api_call_is_kept_with_its_media(fleet):
    # given a media scored through the Scoring API, and one refused once on submission
    sim_fault(fleet.simulator, method="POST", path="/v1/media", status=503, times=1)
    request_id = f"engine-owner-{uuid.uuid4()}"
    fleet.score_media(request_id=request_id, id=f"m-{uuid.uuid4().hex[:8]}", url=f"{CDN}/o.mp4")
    media = fleet.wait_for_media(request_id)
    assert media.state is ScoringState.SCORED

    # then every call made for it is stored as its own, the refused one included
    with session_scope() as s:
        attempts = s.execute(select(ApiAttempt).where(ApiAttempt.scored_media_id == media.id)).scalars().all()
        orphans = s.execute(
            select(func.count()).where(ApiAttempt.job_id.is_(None), ApiAttempt.scored_media_id.is_(None))
        ).scalar_one()
    calls = [(a.endpoint, a.status_code) for a in attempts]
    assert ("POST /v1/media", 503) in calls and ("POST /v1/media", 201) in calls
    assert any(endpoint.startswith("GET ") for endpoint, _ in calls)
    assert all(a.job_id is None for a in attempts)
    assert orphans == 0


@pytest.mark.slow
def test_every_log_line_of_a_task_names_its_request(system):
    # On real processes: what is checked is the worker process's log, each line with its Celery task.
    # given a tagging job and a scored media, each sent with a request id
    env = system["env"]
    job_request, media_request = f"engine-log-job-{uuid.uuid4()}", f"engine-log-media-{uuid.uuid4()}"
    send(env, "aperture.create_job", request_id=job_request, assets=[{"url": f"{CDN}/l.mp4"}])
    send(env, "aperture.score_media", request_id=media_request, id=f"m-{uuid.uuid4().hex[:8]}", url=f"{CDN}/l.mp4")
    job, media = wait_for_job(job_request), wait_for_media(media_request)

    def events() -> list[dict]:
        parsed = []
        for line in system["worker"].log().splitlines():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                continue
        return parsed

    def our_lines_of(field: str, row_id: str) -> list[dict]:
        # The tasks that worked on the row, then every line our code logged while they ran.
        lines = events()
        task_ids = {e["task_id"] for e in lines if e.get(field) == row_id and e.get("task_id")}
        return [e for e in lines if e.get("task_id") in task_ids and e["logger"].startswith(("services.", "clients."))]

    job_lines = wait_for(lambda: our_lines_of("job_id", str(job.id)), timeout=10, what="the job's lines")
    media_lines = wait_for(lambda: our_lines_of("scoring_id", str(media.id)), timeout=10, what="the media's lines")

    # then each of those lines carries the row's id and the caller's request id
    assert {e["task_name"] for e in job_lines} >= {"aperture.create_job", "aperture.poll_job"}
    assert all(e["job_id"] == str(job.id) and e["request_id"] == job_request for e in job_lines), job_lines
    assert {e["task_name"] for e in media_lines} >= {"aperture.score_media", "aperture.poll_scoring"}
    assert all(e["scoring_id"] == str(media.id) and e["request_id"] == media_request for e in media_lines), [
        e for e in media_lines if e["scoring_id"] != str(media.id) or e["request_id"] != media_request
    ]


# --- structure ---------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """The services.* modules a file imports at run time (at any depth: function-level imports
    count; those under ``if TYPE_CHECKING:`` do not)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("services"):
            found.add(node.module)
            for alias in node.names:  # `from services.x import y` where y is a module
                candidate = f"{node.module}.{alias.name}"
                if _module_path(candidate) is not None:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("services")}
    return found


def _module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def test_services_have_no_import_cycle_and_tagging_never_imports_scoring() -> None:
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (ROOT / "services").rglob("*.py")
    }
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}

    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            cycles.append([*stack[stack.index(node) :], node])
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*stack, node], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [], done)
    assert cycles == []
    tagging_imports = {m for name, deps in graph.items() if name.startswith("services.tagging") for m in deps}
    assert not {m for m in tagging_imports if m.startswith("services.scoring")}
    engine_imports = {m for name, deps in graph.items() if name.startswith("services.durable") for m in deps}
    assert not {m for m in engine_imports if m.startswith(("services.scoring", "services.tagging"))}


def test_task_names_are_written_in_one_place(app_env):
    from config.tasks import ALL_TASKS, PUBLIC_TASKS
    from services.schema import public_tasks
    from workers import app

    # every task the worker runs is declared once, and routed where its declaration says
    registered = {name for name in app.tasks if name.startswith("aperture.")}
    assert registered == {t.name for t in ALL_TASKS}
    assert {name: route["queue"] for name, route in app.conf.task_routes.items()} == {
        t.name: t.queue.value for t in ALL_TASKS
    }
    assert not app.conf.beat_schedule, "no beat: the dispatcher process sends what is due"
    assert set(public_tasks()) == {t.name for t in PUBLIC_TASKS} == {"aperture.create_job", "aperture.score_media"}
    assert "aperture.send_callback" not in app.conf.task_routes  # routed once, defined nowhere

    # and no other module spells a task name out
    name = re.compile(r"^aperture\.[a-z_]+$")
    spelled = []
    for folder in ("services", "tasks", "workers", "config", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.relative_to(ROOT) == Path("config/tasks.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and name.match(node.value):
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert spelled == []


# The engine's columns: services/durable/claims.py and lifecycle.py are their only writers.
ENGINE_COLUMNS = {"next_poll_at", "poll_token", "dispatched_at", "leased_until", "poll_dispatched"}
_SQL_WRITE = re.compile(r"(?is)\b(?:set|insert\s+into)\b.*\b(" + "|".join(ENGINE_COLUMNS) + r")\b")


def engine_column_writes(path: Path) -> list[str]:
    """Where ``path`` writes an engine column: a keyword argument (``.values(next_poll_at=...)``,
    ``Job(poll_token=...)``), a dictionary key, an attribute assignment, or SQL text that sets one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.keyword | ast.expr | ast.stmt):
            continue  # what the branches below look at (keywords, expressions, statements: each has a line)
        names: list[str] = []
        if isinstance(node, ast.keyword) and node.arg:
            names = [node.arg]
        elif isinstance(node, ast.Dict):
            names = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.attr for t in targets if isinstance(t, ast.Attribute)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (m := _SQL_WRITE.search(node.value)):
            names = [m.group(1)]
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n in ENGINE_COLUMNS]
    return found


def test_only_the_engine_writes_a_rows_schedule_token_lease_or_dispatch():
    # Every change of a durable row's state, token, schedule or lease goes through
    # services/durable/ (packs, tag batches and the operator's retry included).
    writes = []
    for folder in ("services", "tasks", "workers", "cli", "clients", "config", "models"):
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT)
            if relative.parts[:2] == ("services", "durable") or relative.parts[:2] == ("models", "migrations"):
                continue
            writes += engine_column_writes(path)
    assert writes == []
    # and the check finds what it looks for
    assert engine_column_writes(ROOT / "services" / "durable" / "lifecycle.py")
    assert engine_column_writes(ROOT / "tests" / "factories.py")


DOCUMENTED_PACKAGES = (
    "services", "services/durable", "services/tagging", "services/scoring",
    "workers", "tasks", "models", "cli", "config",
)  # fmt: skip


@pytest.mark.parametrize("package", DOCUMENTED_PACKAGES)
def test_a_package_docstring_lists_exactly_its_modules(package):
    folder = ROOT / package
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    modules = {p.name for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    named = set(re.findall(r"\b([a-z_]+\.py)\b", doc))
    assert modules - named == set(), f"{package}/__init__.py does not say what these are"
    assert named - modules == set(), f"{package}/__init__.py names modules that do not exist"


def test_no_module_in_services_is_longer_than_one_reader_holds_in_mind():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "services").rglob("*.py")}
    assert {path: n for path, n in lengths.items() if n > 400} == {}


def test_callbacks_of_a_row_sent_without_one_are_stored_as_sql_null(app_env):
    # given a job stored through the ORM with no callback (the way intake stores one)
    with session_scope() as s:
        job = Job(
            request_id=f"engine-null-{uuid.uuid4()}",
            state=JobState.POLLING,
            payload={},
            callback=None,
            dialect="guide",
            asset_count=1,
            deadline_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        )
        s.add(job)
        s.flush()
        # then PostgreSQL holds SQL NULL, not JSON null (what "owes no callback" is decided on)
        assert s.execute(select(text("callback IS NULL")).select_from(Job).where(Job.id == job.id)).scalar_one()
        s.rollback()


def test_a_request_postgresql_refuses_is_kept_as_rejected_with_the_reason(fleet):
    from config import get_settings
    from services.durable import intake
    from services.tagging.intake import INTAKE

    # given a request that could not be stored as sent (the reason PostgreSQL gave)
    payload = {"assets": [{"url": "https://cdn.example.com/x.mp4"}], "callback": {"task": "caller.done"}}
    with session_scope() as s:
        accepted = intake.accept_unstorable(
            s, INTAKE, payload, "invalid input syntax for type json", task_id=f"engine-{uuid.uuid4()}",
            settings=get_settings(), now=dt.datetime.now(dt.UTC),
        )  # fmt: skip
    # then it is stored as rejected, says why, keeps a printable copy, and its caller is owed a callback
    with session_scope() as s:
        job = s.get(Job, accepted.row_id)
        assert job.state is JobState.REJECTED and "could not be stored as sent" in job.error
        assert "cdn.example.com/x.mp4" in job.payload["unstorable"]
        assert job.callback_status is CallbackStatus.PENDING
