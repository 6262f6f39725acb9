"""The dispatcher: PostgreSQL is the only timer (workers/dispatcher.py, services/durable/sweeper.py).

What an operator relies on: a look whose message is only late (queued behind a backlog) stays
valid when the dispatcher sends it again, so recovery from a backlog never livelocks; several
dispatchers never send the same look twice; no wait rides in a worker's RAM by default; and the
dispatcher says it is alive (heartbeat file, metrics)."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from config import Settings, get_settings
from models import Job, JobState, ScoringState
from models.db import get_engine, session_scope
from services import scoring
from services.domains import KINDS
from services.durable.claims import claim
from services.durable.schedule import schedule, utcnow
from services.durable.sweeper import due_looks, not_sent
from services.tagging import KIND
from tests import factories
from tests.support import send, wait_for, wait_for_job

CDN = "https://cdn.example.com/dispatcher"


def polling_jobs(n: int, *, due_at: dt.datetime, sent_at: dt.datetime | None) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``n`` jobs polling Vidmob, each with its token, due at ``due_at``, their look sent at ``sent_at``
    (None: parked); (id, token) each."""
    looks = []
    for m in factories.jobs(n, due_at=due_at, sent_at=sent_at):
        assert m.token is not None  # a polling job holds its look's token
        looks.append((m.id, m.token))
    return looks


# Far enough ahead that a dispatcher running for other tests (it reads the real clock) never
# takes these rows: the tests below run passes "then", by passing ``now``.
LATER = dt.timedelta(days=30)


@pytest.fixture
def quiet_db(app_env):
    """Only this test's rows are active."""
    with get_engine().begin() as conn:
        conn.exec_driver_sql("TRUNCATE jobs, assets, tags, api_attempts, scored_media CASCADE")
    return get_settings()


def test_a_look_resent_after_the_lost_horizon_keeps_its_token_so_the_late_message_still_works(quiet_db) -> None:
    settings: Settings = quiet_db
    # Given a poll whose message was sent long ago and is still queued behind a backlog
    # (older than the lost-message horizon)
    sent_at = utcnow() + LATER
    then = sent_at + dt.timedelta(seconds=settings.lost_message_after_s * 10)
    ((job_id, token),) = polling_jobs(1, due_at=sent_at, sent_at=sent_at)

    # When the dispatcher presumes it lost and sends it again, twice over (two horizons pass)
    sent = []
    for _ in range(2):
        with session_scope() as s:
            due = due_looks(s, KIND, settings=settings, now=then, limit=10)
        sent.extend(due.messages)
        assert due.lost == 1
        with session_scope() as s:
            s.execute(update(Job).where(Job.id == job_id).values(dispatched_at=sent_at))

    # Then every copy carries the row's token, which never changed
    assert [m.kwargs["token"] for m in sent] == [str(token), str(token)]
    # and the original message, when it finally runs, still claims the row (it is not stale);
    # once it has, every other copy is a no-op
    with session_scope() as s:
        first = claim(s, KIND, job_id, token, state=JobState.POLLING, settings=settings, now=utcnow())
        again = claim(s, KIND, job_id, token, state=JobState.POLLING, settings=settings, now=utcnow())
    assert first is not None and again is None


def test_looks_the_broker_refused_go_with_the_next_pass_not_after_the_lost_horizon(quiet_db) -> None:
    settings: Settings = quiet_db
    # Given three due looks a pass claimed, of which the broker took only the first (it went away)
    then = utcnow() + LATER
    looks = polling_jobs(3, due_at=then - dt.timedelta(seconds=1), sent_at=None)
    with session_scope() as s:
        claimed = due_looks(s, KIND, settings=settings, now=then, limit=10).messages
    # When the dispatcher parks the two it could not send
    assert not_sent(KINDS, claimed[1:]) == 2
    # Then the next pass, a moment later, sends those two again under the same tokens, and not the first
    with session_scope() as s:
        again = due_looks(s, KIND, settings=settings, now=then + dt.timedelta(seconds=0.2), limit=10)
    assert again.parked == 2 and again.lost == 0
    assert {(m.kwargs["job_id"], m.kwargs["token"]) for m in again.messages} == {
        (m.kwargs["job_id"], m.kwargs["token"]) for m in claimed[1:]
    }
    assert {(m.kwargs["job_id"], m.kwargs["token"]) for m in claimed} == {(str(i), str(t)) for i, t in looks}


def test_a_look_a_worker_took_meanwhile_is_not_parked_again(quiet_db) -> None:
    settings: Settings = quiet_db
    # Given a look a pass claimed and could not send, whose row a worker claimed meanwhile (an earlier
    # copy of the look ran: the row's token is a new one)
    then = utcnow() + LATER
    ((job_id, _old),) = polling_jobs(1, due_at=then - dt.timedelta(seconds=1), sent_at=None)
    with session_scope() as s:
        claimed = due_looks(s, KIND, settings=settings, now=then, limit=10).messages
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(poll_token=uuid.uuid4()))
    # When the dispatcher parks the look it could not send: nothing is parked
    assert not_sent(KINDS, claimed) == 0


def test_two_dispatchers_at_once_send_every_due_look_exactly_once(quiet_db) -> None:
    settings: Settings = quiet_db
    # Given 1,000 parked looks due
    then = utcnow() + LATER
    jobs = polling_jobs(1000, due_at=then - dt.timedelta(seconds=1), sent_at=None)
    # When two dispatchers take batches of 600 at the same moment (neither has committed)
    first, second = session_scope(), session_scope()
    a, b = first.__enter__(), second.__enter__()
    try:
        got_a = due_looks(a, KIND, settings=settings, now=then, limit=600)
        got_b = due_looks(b, KIND, settings=settings, now=then, limit=600)
    finally:
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)
    # Then they took disjoint sets that cover every look, each under the row's own token
    ids_a = {m.kwargs["job_id"] for m in got_a.messages}
    ids_b = {m.kwargs["job_id"] for m in got_b.messages}
    assert len(ids_a) == 600 and len(ids_b) == 400 and not ids_a & ids_b
    assert {(m.kwargs["job_id"], m.kwargs["token"]) for m in got_a.messages + got_b.messages} == {
        (str(i), str(t)) for i, t in jobs
    }
    # and nothing is due any more until the lost-message horizon passes
    with session_scope() as s:
        assert due_looks(s, KIND, settings=settings, now=then, limit=600).messages == []


def test_a_lost_look_at_a_rescore_round_is_sent_again_as_the_rescore_task(quiet_db) -> None:
    settings: Settings = quiet_db
    # Given two media waiting to be submitted, one in its first round and one in a rescore round,
    # whose messages were lost long ago
    then = utcnow() + LATER
    sent_at = then - dt.timedelta(seconds=settings.lost_message_after_s + 1)
    first = factories.scored_media(
        url=f"{CDN}/first.mp4", state=ScoringState.SUBMITTING, due_at=sent_at, sent_at=sent_at
    )
    rescore = factories.scored_media(
        url=f"{CDN}/rescore.mp4", state=ScoringState.SUBMITTING, due_at=sent_at, sent_at=sent_at, rounds=2
    )
    # When the dispatcher sends their looks again
    with session_scope() as s:
        due = due_looks(s, scoring.KIND, settings=settings, now=then, limit=10)
    # Then the first round goes to aperture.submit_scoring and the rescore to aperture.rescore, the
    # loop's chained task (what Flower and the task metrics count as rescores), each under its token
    assert due.lost == 2
    assert {(m.task, m.kwargs["scoring_id"], m.kwargs["token"]) for m in due.messages} == {
        ("aperture.submit_scoring", str(first.id), str(first.token)),
        ("aperture.rescore", str(rescore.id), str(rescore.token)),
    }


def test_by_default_every_wait_is_parked_in_postgresql_not_held_by_a_worker() -> None:
    # Worker memory must not grow with the jobs in flight: no countdown message by default
    defaults = Settings(broker_url="redis://x", database_url="postgresql://x")
    assert defaults.max_countdown_s == 0
    assert all(not schedule(utcnow(), d, defaults).dispatched for d in (0.05, 1.0, 300.0, 86400.0))


@pytest.mark.slow
def test_the_dispatcher_says_it_is_alive_and_how_late_it_sends(system):
    proc = system["dispatcher"]
    # Given a job run through the system
    request_id = f"dispatch-alive-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/alive.mp4"}])
    assert wait_for_job(request_id).state is JobState.COMPLETE

    # Then the dispatcher's metrics count its passes and the looks it sent, with their lateness,
    # and its last pass is recent
    def scrape() -> dict[str, float]:
        text = requests.get(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5).text
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    samples = scrape()
    assert samples["aperture_dispatcher_passes_total"] > 0
    assert samples["aperture_dispatcher_looks_total"] >= 1
    assert samples["aperture_dispatcher_lateness_seconds_count"] == samples["aperture_dispatcher_looks_total"]
    assert time.time() - samples["aperture_dispatcher_last_pass_timestamp_seconds"] < 5
    # and its heartbeat file is fresh (what the liveness probe reads)
    wait_for(lambda: time.time() - proc.heartbeat_file.stat().st_mtime < 2, 5, what="a fresh heartbeat")


@pytest.mark.slow
def test_once_postgresql_is_back_the_dispatcher_resumes_within_its_longest_pause(app_env) -> None:
    """A dispatcher whose database went away keeps trying, each pause doubling but never past
    FAILED_PASS_PAUSE_MAX_S, so the fleet's parked looks go out again within that once it is back. A
    PostgreSQL of this test's own (embedded), stopped and started again."""
    import os
    import re
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from chaos.harness import Postgres
    from cli.processes import DISPATCHER_READY, Process
    from cli.processes import dispatcher as dispatcher_argv
    from tests.conftest import ROOT
    from workers.dispatcher import FAILED_PASS_PAUSE_MAX_S

    root = Path(tempfile.mkdtemp(prefix="aperture-dispatcher-outage-"))
    pg = Postgres(root)
    proc = None
    try:
        env = app_env | {
            "APERTURE_DATABASE_URL": pg.url,
            "APERTURE_LOG_FORMAT": "text",
            "APERTURE_DISPATCHER_METRICS_PORT": "0",
        }
        subprocess.run(
            [sys.executable, "-m", "cli.main", "db", "upgrade"],
            env={**os.environ, **env}, cwd=ROOT, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        log = root / "dispatcher.log"
        proc = Process("dispatcher", dispatcher_argv(root), env, log, cwd=ROOT)
        proc.wait_for_log(DISPATCHER_READY, timeout=30)
        pg.stop()

        def capped_twice() -> list[float] | None:
            """The pauses logged, once two of them are the longest."""
            found = re.findall(r"next try in ([0-9.]+) s", log.read_text(errors="replace"))
            pauses = [float(p) for p in found]
            return pauses if pauses.count(FAILED_PASS_PAUSE_MAX_S) >= 2 else None

        # given the database away for long enough that the pause has doubled up to its cap twice
        seen = wait_for(capped_twice, timeout=90, what="two failed passes at the longest pause")
        assert max(seen) == FAILED_PASS_PAUSE_MAX_S
        assert seen == sorted(seen), "each pause at least the one before"
        pg.start()
        # then a pass succeeds, and says so
        proc.wait_for_log("dispatcher pass succeeded after", timeout=FAILED_PASS_PAUSE_MAX_S + 30)
    finally:
        if proc is not None:
            proc.stop()
        pg.close()
        shutil.rmtree(root, ignore_errors=True)
