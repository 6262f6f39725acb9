"""The in-process tier: the system's steps and dispatcher passes run in the test's own process.

What a worker and a dispatcher would do, done here, one thing after another: a public task's body
(store the request, submit it), each internal message (a step: claim, call, record), dispatcher
passes (``services.durable.sweeper.sweep``) and owed callbacks (``services.durable.callbacks.deliver``),
against a real PostgreSQL database and the simulator over real HTTP. Only the broker is absent: a
message is kept in a list, due at its countdown, and a caller's callback in ``Fleet.callbacks`` (what
the caller's queue would receive). Nothing of Celery runs, so nothing here tests routing, the
message format, decoding, redelivery or process deaths: those stay in the subprocess tests.

The tier has its own database, Redis database (for the fleet's rate limit and circuit breaker) and
simulator, so the session's worker and dispatcher subprocesses (which read the other database) never
take its rows. The ``fleet`` fixture switches this process's settings to them for one test.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import pytest
from sqlalchemy import select

from config import get_settings, tasks
from models import Job, JobState, ScoredMedia
from models.db import get_engine, reset_engine, session_scope
from services import domains, gateway
from services.durable import durations, intake, steps, sweeper
from services.durable.messages import Message
from services.durable.schedule import utcnow
from services.durable.steps import Step
from services.scoring import intake as scoring_intake
from services.scoring import steps as scoring_steps
from services.scoring import tag_batches
from services.tagging import intake as tagging_intake
from services.tagging import steps as tagging_steps
from tasks.base import send_after_commit

T = TypeVar("T")

# What each task runs, by name: the bodies tasks/ wraps in Celery tasks of the same names.
PUBLIC: dict[str, tuple[intake.Intake[Any], Step[Any, Any]]] = {
    tasks.CREATE_JOB.name: (tagging_intake.INTAKE, tagging_steps.SUBMIT),
    tasks.SCORE_MEDIA.name: (scoring_intake.INTAKE, scoring_steps.SUBMIT),
}
STEPS: dict[str, Step[Any, Any]] = {
    tasks.SUBMIT_JOB.name: tagging_steps.SUBMIT,
    tasks.POLL_JOB.name: tagging_steps.POLL,
    tasks.SUBMIT_SCORING.name: scoring_steps.SUBMIT,
    tasks.RESCORE.name: scoring_steps.SUBMIT,
    tasks.POLL_SCORING.name: scoring_steps.POLL,
}
OTHER = {tasks.FLUSH_TAGGING.name, tasks.SWEEP.name}

TERMINAL_JOB_STATES = {s for s in JobState if not s.is_active}


@dataclass(order=True)
class _Queued:
    due: float
    seq: int
    message: Message = field(compare=False)


class Fleet:
    """The system without its processes, driven by the test: ``send`` a task, then ``run_until``
    what the test waits for. ``callbacks`` holds every callback message a caller would receive,
    ``ran`` counts the messages run by task name, ``passes`` the dispatcher passes."""

    def __init__(self, env: dict[str, str], simulator_url: str) -> None:
        self.env = env
        # What tests.support's simulator helpers take (they read ``.url``).
        self.simulator = SimpleNamespace(url=simulator_url)
        self._queue: list[_Queued] = []
        self._seq = 0
        self.callbacks: list[Message] = []
        self.ran: Counter[str] = Counter()
        self.passes = 0
        self._last_pass = float("-inf")

    # --- what a caller, a worker and a dispatcher do ---------------------------------------------

    def send(self, task: str, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """A message of ``task`` arrives now and runs at once (a public task returns what its Celery
        task returns: the row's id, its state, whether this message created it)."""
        return self._run(Message(task, kwargs), args)

    def create_job(self, **kwargs: Any) -> dict[str, Any]:
        result = self.send(tasks.CREATE_JOB.name, **kwargs)
        assert result is not None
        return result

    def score_media(self, **kwargs: Any) -> dict[str, Any]:
        result = self.send(tasks.SCORE_MEDIA.name, **kwargs)
        assert result is not None
        return result

    def dispatch(self) -> sweeper.Pass:
        """One dispatcher pass: the looks due (and lost), and the owed callbacks, sent."""
        result = sweeper.sweep(domains.KINDS, settings=get_settings(), max_batches=1)
        self.passes += 1
        self._last_pass = time.monotonic()
        send_after_commit(result, self._enqueue)
        return result

    def run_due(self) -> int:
        """Run every message due now, in order (a message sent meanwhile and due now too); how many."""
        count = 0
        while self._queue and min(self._queue).due <= time.monotonic():
            queued = min(self._queue)
            self._queue.remove(queued)
            self._run(queued.message)
            count += 1
        return count

    def tick(self) -> None:
        """What the fleet does in a moment: the messages due, and a dispatcher pass when one is due."""
        self.run_due()
        if time.monotonic() - self._last_pass >= get_settings().dispatch_interval_s:
            self.dispatch()
            self.run_due()

    def run_until(self, predicate: Callable[[], T | None], timeout: float = 30, what: str = "") -> T:
        """Run the fleet until ``predicate`` returns something true, and return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
            self.tick()
            time.sleep(0.01)

    def run_passes(self, n: int) -> None:
        """Run the fleet through ``n`` more dispatcher passes, at the dispatcher's interval: what
        "nothing more happens" waits for (every look due meanwhile was sent and run)."""
        target = self.passes + n
        self.run_until(lambda: self.passes >= target, timeout=n * get_settings().dispatch_interval_s + 30)
        self.run_due()

    @property
    def queued(self) -> list[Message]:
        """The messages sent and not run yet (what the broker would hold), soonest first."""
        return [q.message for q in sorted(self._queue)]

    # --- waiting on rows ---------------------------------------------------------------------------

    def wait_for_job(self, request_id: str, states: set[JobState] | None = None, timeout: float = 30) -> Job:
        wanted = states or TERMINAL_JOB_STATES

        def reached() -> Job | None:
            job = job_by_request_id(request_id)
            return job if job is not None and job.state in wanted else None

        return self.run_until(reached, timeout, what=f"job {request_id} to reach {sorted(s.value for s in wanted)}")

    def wait_for_media(self, request_id: str, timeout: float = 30) -> ScoredMedia:
        def ended() -> ScoredMedia | None:
            with session_scope() as s:
                media = s.execute(select(ScoredMedia).where(ScoredMedia.request_id == request_id)).scalar_one_or_none()
            return media if media is not None and not media.state.is_active else None

        return self.run_until(ended, timeout, what=f"scored media {request_id} to end")

    # --- inside ------------------------------------------------------------------------------------

    def _enqueue(self, message: Message) -> None:
        if message.task in PUBLIC or message.task in STEPS or message.task in OTHER:
            self._seq += 1
            self._queue.append(_Queued(time.monotonic() + message.countdown, self._seq, message))
        else:  # a caller's task: its callback
            self.callbacks.append(message)

    def _run(self, message: Message, args: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        task = message.task
        self.ran[task] += 1
        if task in PUBLIC:
            spec, submit = PUBLIC[task]
            accepted, outcome = steps.accept_then_submit(
                spec, submit, message.kwargs, task_id=message.task_id or str(uuid.uuid4()), task_name=task,
                positional_args=args,
            )  # fmt: skip
            send_after_commit(outcome, self._enqueue)
            state = outcome.state or accepted.state
            return {spec.kind.id_kwarg: str(accepted.row_id), "state": state.value, "created": accepted.created}
        if task in STEPS:
            step = STEPS[task]
            ids = [uuid.UUID(str(message.kwargs[k])) for k in (step.kind.id_kwarg, "token")]
            send_after_commit(steps.run(step, ids[0], ids[1], task_name=task), self._enqueue)
            return None
        if task == tasks.FLUSH_TAGGING.name:
            with session_scope() as session:
                outcome = tag_batches.flush_tagging(session, settings=get_settings(), now=utcnow())
            send_after_commit(outcome, self._enqueue)
            return None
        if task == tasks.SWEEP.name:
            self.dispatch()
            return None
        raise AssertionError(f"not a task of this system: {task}")


def job_by_request_id(request_id: str) -> Job | None:
    with session_scope() as s:
        return s.execute(select(Job).where(Job.request_id == request_id)).scalar_one_or_none()


# --- fixtures --------------------------------------------------------------------------------------


def _use(env: dict[str, str]) -> dict[str, str | None]:
    """Point this process's settings, database engine, fleet gates and duration models at ``env``;
    what the variables were before."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _forget()
    return saved


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _forget()


def _forget() -> None:
    get_settings.cache_clear()
    reset_engine()
    gateway.reset()
    durations.forget()


@pytest.fixture(scope="session")
def inprocess_env(app_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The tier's own database (migrated), Redis database and simulator; the subprocess tier's
    settings otherwise (``app_env``: the fast timings)."""
    from simulator import SimulatorConfig, start_simulator
    from tests.conftest import SIM_CONFIG
    from tests.support import claim_redis_database

    main = urlsplit(app_env["APERTURE_DATABASE_URL"])
    name = f"{main.path.lstrip('/')}_inprocess"
    with psycopg.connect(app_env["APERTURE_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = main._replace(path=f"/{name}").geturl()
    # Another Redis database of the same server: the fleet's gates of this tier never meet the subprocesses'.
    server = app_env["APERTURE_BROKER_URL"].rpartition("/")[0]
    broker_url, give_back = claim_redis_database(server)
    simulator = start_simulator(config=SimulatorConfig(**SIM_CONFIG))
    env = {
        **app_env,
        "APERTURE_DATABASE_URL": database_url,
        "APERTURE_BROKER_URL": broker_url,
        "VIDMOB_API_BASE_URL": simulator.url,
    }
    saved = _use(env)
    try:
        from models.migrate import upgrade

        upgrade()
    finally:
        _restore(saved)
    yield env | {"_SIMULATOR_URL": simulator.url}
    simulator.stop()
    give_back()
    reset_engine()
    with psycopg.connect(app_env["APERTURE_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fleet(inprocess_env: dict[str, str]) -> Iterator[Fleet]:
    """A clean system of this tier for one test: empty tables, a fresh simulator, this process's
    settings pointed at the tier (``fleet.env``; the simulator is ``fleet.simulator``)."""
    from tests.support import reset_simulator

    env = {k: v for k, v in inprocess_env.items() if not k.startswith("_")}
    saved = _use(env)
    try:
        domains.wire()
        with get_engine().begin() as conn:
            conn.exec_driver_sql("TRUNCATE jobs, assets, tags, api_attempts, scored_media CASCADE")
        sim = inprocess_env["_SIMULATOR_URL"]
        reset_simulator(sim)
        import redis

        redis.Redis.from_url(env["APERTURE_BROKER_URL"]).flushdb()
        yield Fleet(env, sim)
    finally:
        _restore(saved)


__all__ = ["Fleet", "fleet", "inprocess_env"]
