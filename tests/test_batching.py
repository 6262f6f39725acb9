"""Batching: small requests that arrive together share one Vidmob job; each caller keeps its own job
row, tags and callback. Real Postgres, the simulator over HTTP. Given / when / then.

Batching is off in the test environment (a request there is its own Vidmob job); each test here turns
it on for its own system. Who packs whom, a pack's failure, reuse before packing: the same steps and
dispatcher passes in this process (``fleet``: tests/inprocess.py), batching on in its settings. A
worker killed with kill -9 while requests wait in a pack needs a real worker process: a worker with
batching on in place of the session's (paused meanwhile: it runs with batching off), the session's
dispatcher."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from sqlalchemy import select

from config import get_settings
from models import Asset, CallbackStatus, Job, JobState
from models.db import session_scope
from services import gateway
from tests.inprocess import Fleet
from tests.support import job_by_request_id, send, sim_stats, tags_by_url, wait_for

pytestmark = pytest.mark.slow
CDN = "https://cdn.example.com/batching"
LIFESTYLE = {"label": "lifestyle", "description": "Real-life settings"}
BEACH = {"label": "beach", "description": None}
WINDOW_S = 1.0  # the fleet's: how long a pack waits for more requests
LONG_WINDOW_S = 2.0
WORKER_WINDOW_S = 2.0  # the batching worker's
MAX_ASSETS = 10
MAX_REQUEST_ASSETS = 3


def batching_env(window_s: float) -> dict[str, str]:
    return {
        "APERTURE_BATCH_WINDOW_S": str(window_s),
        "APERTURE_BATCH_MAX_ASSETS": str(MAX_ASSETS),
        "APERTURE_BATCH_MAX_REQUEST_ASSETS": str(MAX_REQUEST_ASSETS),
    }


@contextmanager
def batching_on(fleet: Fleet, window_s: float) -> Iterator[Fleet]:
    """The in-process system with batching on (a pack waits ``window_s``); its settings as they were
    afterwards."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for key, value in batching_env(window_s).items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        gateway.reset()
        yield fleet
    get_settings.cache_clear()
    gateway.reset()


@pytest.fixture
def batching_fleet(fleet: Fleet) -> Iterator[Fleet]:
    with batching_on(fleet, WINDOW_S) as on:
        yield on


@pytest.fixture
def long_window_fleet(fleet: Fleet) -> Iterator[Fleet]:
    """Batching on with a window long enough to tell a pack sent at once from one sent when its window closed."""
    with batching_on(fleet, LONG_WINDOW_S) as on:
        yield on


@pytest.fixture(scope="module")
def batching_worker(app_env, worker, tmp_root):
    """A worker with batching on, in place of the session's (which has it off)."""
    from tests.conftest import start_worker

    worker.stop()
    env = app_env | {
        **batching_env(WORKER_WINDOW_S),
        # The least the settings allow (above a transient retry plus the hard time limit): a message the
        # killed worker held comes back within about a minute (the test below kills it after all are stored).
        "APERTURE_VISIBILITY_TIMEOUT_S": "70",
        "APERTURE_METRICS_PORT": "0",
    }
    proc = None
    try:  # the session's worker comes back even when this one fails to start
        proc = start_worker(env, tmp_root / "batching-worker.log")
        yield proc
    finally:
        if proc is not None:
            proc.stop()
        worker.restart()
        worker.wait_for_log("ready.", timeout=60)


@pytest.fixture
def batching(system, batching_worker):
    return system | {"worker": batching_worker}


def request(on: Fleet | dict, urls: list[str], *, client_tags=(LIFESTYLE,), queue: str | None = None, **extra) -> str:
    """A caller's aperture.create_job: run by the fleet, or sent by name to the real worker (``system``)."""
    request_id = f"batch-{uuid.uuid4()}"
    kwargs: dict[str, Any] = {
        "request_id": request_id,
        "assets": [{"url": u, "id": f"mine-{i}"} for i, u in enumerate(urls)],
    }
    kwargs |= {"client_tags": list(client_tags), **extra}
    if queue:
        kwargs["callback"] = {"task": "caller.tagged", "queue": queue}
    if isinstance(on, Fleet):
        on.create_job(**kwargs)
    else:
        send(on["env"], "aperture.create_job", **kwargs)
    return request_id


def ended(request_ids: list[str], fleet: Fleet | None = None, timeout: float = 60) -> list[Job]:
    """The requests once every one has ended, in the order given (the fleet run meanwhile, if given)."""

    def all_ended() -> list[Job] | None:
        with session_scope() as s:
            jobs = s.execute(select(Job).where(Job.request_id.in_(request_ids))).scalars().all()
        done = [j for j in jobs if not j.state.is_active]
        return sorted(done, key=lambda j: request_ids.index(j.request_id)) if len(done) == len(request_ids) else None

    what = f"{len(request_ids)} requests to end"
    return fleet.run_until(all_ended, timeout, what) if fleet else wait_for(all_ended, timeout, what=what)


def pack(pack_id) -> Job:
    with session_scope() as s:
        return s.execute(select(Job).where(Job.id == pack_id)).scalar_one()


def vidmob_jobs(simulator) -> dict[str, list[str]]:
    """Every job the simulator created, with its URLs."""
    ids = sim_stats(simulator)["job_polls"]
    return {job_id: requests.get(f"{simulator.url}/_sim/jobs/{job_id}", timeout=5).json()["urls"] for job_id in ids}


def urls(name: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{CDN}/{name}-{run}-{i}.mp4" for i in range(n)]


def test_small_requests_arriving_together_share_one_vidmob_job_and_each_keeps_its_own_tags_and_callback(
    batching_fleet, aperture
):
    fleet = batching_fleet
    # Given 6 callers, each asking for one asset to be tagged with the same client tag, within a second
    assets = urls("lifestyle-together", 6)
    queue = f"test.batch.{uuid.uuid4().hex[:6]}"
    ids = [request(fleet, [u], queue=queue) for u in assets]

    # When they end
    jobs = ended(ids, fleet)

    # Then Vidmob got ONE job carrying the 6 assets
    created = vidmob_jobs(fleet.simulator)
    assert len(created) == 1, created
    assert sorted(next(iter(created.values()))) == sorted(assets)
    # And every request completed on its own row, with its own asset's tags (the client tag included)
    assert [j.state for j in jobs] == [JobState.COMPLETE] * 6, [j.error for j in jobs]
    for job, url in zip(jobs, assets, strict=True):
        tags = tags_by_url(job.id)
        assert list(tags) == [url]
        assert ("client", "lifestyle") in tags[url]
        assert job.vidmob_job_id is None and job.submit_attempts == 0
    # And the pack that served them is one row, with the Vidmob job, no callback and no assets of its own
    [pack_id] = {j.packed_in_job_id for j in jobs}
    served = pack(pack_id)
    assert served.is_pack and served.state is JobState.COMPLETE
    assert served.vidmob_job_id == next(iter(created))
    assert served.asset_count == 6 and served.callback is None and tags_by_url(pack_id) == {}
    # And each request waited at most the window (plus a dispatcher pass) for the pack to be sent
    waited = [(served.submitted_at - j.created_at).total_seconds() for j in jobs]
    assert max(waited) <= WINDOW_S + 1.5, waited

    # And each caller got its own callback, with the annotations of its own asset only
    fleet.run_until(
        lambda: all(job_by_request_id(i).callback_status is CallbackStatus.SENT for i in ids), what="callbacks sent"
    )
    callbacks = {m.kwargs["request_id"]: m.kwargs for m in fleet.callbacks if m.queue == queue}
    assert sorted(callbacks) == sorted(ids)
    for request_id, url in zip(ids, assets, strict=True):
        [annotation] = callbacks[request_id]["annotations"]
        assert annotation["url"] == url and annotation["id"] == "mine-0" and annotation["reused"] is False
        assert callbacks[request_id]["status"] == "complete"

    # And `aperture jobs show` says which Vidmob job served a request, and what a pack carried
    shown = aperture("jobs", "show", ids[0])
    assert shown.exit_code == 0, shown.output
    assert f"served by Vidmob job {served.vidmob_job_id}" in shown.output
    assert f"packed in job {pack_id} (complete, 6 requests, 6 assets)" in shown.output
    detail = json.loads(aperture("jobs", "show", ids[0], "--json").output)
    assert detail["pack"]["vidmob_job_id"] == served.vidmob_job_id and detail["pack"]["requests"] == 6
    of_pack = json.loads(aperture("jobs", "show", str(pack_id), "--json").output)
    assert of_pack["is_pack"] and sorted(of_pack["pack"]["request_ids"]) == sorted(ids)


def test_only_requests_with_the_same_client_tags_share_a_job_and_large_or_opted_out_requests_go_alone(
    batching_fleet,
):
    fleet = batching_fleet
    # Given requests with one client tag, others with two (in either order), one that says batch: false,
    # and one with more assets than a packed request may have
    one_tag = [request(fleet, [u]) for u in urls("lifestyle-one", 2)]
    two_tags = [
        request(fleet, [u], client_tags=tags)
        for u, tags in zip(urls("lifestyle-beach-two", 2), [(LIFESTYLE, BEACH), (BEACH, LIFESTYLE)], strict=True)
    ]
    opted_out = request(fleet, urls("lifestyle-out", 1), batch=False)
    large = request(fleet, urls("lifestyle-large", MAX_REQUEST_ASSETS + 1))

    # When they end
    jobs = {j.request_id: j for j in ended([*one_tag, *two_tags, opted_out, large], fleet)}

    # Then the two kinds of client tags made two packs, and the other two went alone: 4 Vidmob jobs
    assert all(j.state is JobState.COMPLETE for j in jobs.values()), {i: j.error for i, j in jobs.items()}
    assert len(vidmob_jobs(fleet.simulator)) == 4
    assert len({jobs[i].packed_in_job_id for i in one_tag}) == 1
    assert len({jobs[i].packed_in_job_id for i in two_tags}) == 1
    assert jobs[one_tag[0]].packed_in_job_id != jobs[two_tags[0]].packed_in_job_id
    for alone in (opted_out, large):
        assert jobs[alone].packed_in_job_id is None and jobs[alone].vidmob_job_id is not None
    assert len(tags_by_url(jobs[large].id)) == MAX_REQUEST_ASSETS + 1


def test_a_full_pack_is_sent_at_once_and_the_next_request_opens_another(long_window_fleet):
    fleet, window_s = long_window_fleet, LONG_WINDOW_S
    # Given a pack that can carry MAX_ASSETS assets, and MAX_ASSETS + 1 single-asset requests sent at once
    started = dt.datetime.now(dt.UTC)
    ids = [request(fleet, [u]) for u in urls("lifestyle-full", MAX_ASSETS + 1)]

    # When they end
    jobs = ended(ids, fleet)

    # Then two Vidmob jobs carried them: the full pack of MAX_ASSETS, and another pack for the last request
    assert all(j.state is JobState.COMPLETE for j in jobs)
    sizes = Counter(j.packed_in_job_id for j in jobs)
    assert sorted(sizes.values()) == [1, MAX_ASSETS] and None not in sizes, sizes
    assert sorted(len(u) for u in vidmob_jobs(fleet.simulator).values()) == [1, MAX_ASSETS]
    # And the full one did not wait for its window to close: it was sent before the window it opened
    # with had passed
    [full] = [pack_id for pack_id, n in sizes.items() if n == MAX_ASSETS]
    last_joined = max(j.created_at for j in jobs if j.packed_in_job_id == full)
    served = pack(full)
    assert served.submitted_at < max(last_joined, started) + dt.timedelta(seconds=window_s)
    assert served.submitted_at < served.created_at + dt.timedelta(seconds=window_s)


def test_a_failed_pack_sends_its_requests_alone_so_one_bad_asset_fails_only_its_own_request(batching_fleet):
    fleet = batching_fleet
    # Given four requests packed together, one of them with an asset Vidmob fails to tag
    assets = [*urls("lifestyle-good", 3), f"{CDN}/lifestyle-fail-{uuid.uuid4().hex[:8]}.mp4"]
    ids = [request(fleet, [u]) for u in assets]

    # When they end
    jobs = ended(ids, fleet)

    # Then the pack failed, and each request went to Vidmob again alone: 1 + 4 Vidmob jobs
    [pack_id] = {j.packed_in_job_id for j in jobs}
    assert pack(pack_id).state is JobState.FAILED
    created = vidmob_jobs(fleet.simulator)
    assert sorted(len(u) for u in created.values()) == [1, 1, 1, 1, 4]
    # And only the request with the bad asset failed; the others completed with their tags
    assert [j.state for j in jobs] == [JobState.COMPLETE] * 3 + [JobState.FAILED]
    for job, url in zip(jobs[:3], assets[:3], strict=True):
        assert job.vidmob_job_id in created and created[job.vidmob_job_id] == [url]
        assert tags_by_url(job.id)[url]
    assert jobs[3].error and "fail" in jobs[3].error.lower()
    # And the pack is not re-submitted by an operator's retry: its requests were sent alone already
    from services.tagging.operator_retry import retry_job

    with session_scope() as s:
        assert retry_job(s, pack_id, settings=get_settings(), now=dt.datetime.now(dt.UTC)) is None


def test_a_worker_killed_while_requests_wait_in_a_pack_loses_none_and_sends_no_asset_twice(batching):
    # Given 20 single-asset requests sent at once (as fast as a caller sends them: about a second)
    assets = urls("lifestyle-kill", 20)
    ids = [request(batching, [u]) for u in assets]

    # When the worker is killed (-9) once every one is stored and some of them wait in a pack, and
    # started again. (Stored first: a create_job message the killed worker held but had not run comes
    # back only when Redis restores unacked messages, a minute or more later; that is the broker's
    # redelivery, not what this test is about.)
    def stored_and_packed() -> bool:
        with session_scope() as s:
            rows = s.execute(select(Job.state).where(Job.request_id.in_(ids))).scalars().all()
        return len(rows) == len(ids) and sum(1 for state in rows if state is JobState.PACKED) >= 5

    wait_for(stored_and_packed, what="20 requests stored, 5 of them packed")
    batching["worker"].kill9()
    batching["worker"].restart()
    batching["worker"].wait_for_log("ready.", timeout=60)

    # Then every request completes with its own asset's tags
    jobs = ended(ids, timeout=90)
    assert [j.state for j in jobs] == [JobState.COMPLETE] * 20, [j.error for j in jobs]
    for job, url in zip(jobs, assets, strict=True):
        assert ("client", "lifestyle") in tags_by_url(job.id)[url]
    # And no asset was sent to Vidmob twice
    sent = Counter(u for job_urls in vidmob_jobs(batching["simulator"]).values() for u in job_urls)
    assert sorted(sent) == sorted(assets) and set(sent.values()) == {1}, sent


def test_a_request_partly_answered_by_reuse_sends_only_the_rest_in_a_pack(batching_fleet):
    fleet = batching_fleet
    # Given an asset tagged earlier with the same client tag
    known, new, other = urls("lifestyle-partly", 3)
    [first] = ended([request(fleet, [known])], fleet)
    before = set(vidmob_jobs(fleet.simulator))
    # When one request carries it and a new asset, and another request a second new asset
    ids = [request(fleet, [known, new]), request(fleet, [other])]
    jobs = ended(ids, fleet)
    # Then ONE more Vidmob job carries the two new assets only
    created = {k: v for k, v in vidmob_jobs(fleet.simulator).items() if k not in before}
    assert [sorted(u) for u in created.values()] == [sorted([new, other])]
    assert [j.state for j in jobs] == [JobState.COMPLETE] * 2 and len({j.packed_in_job_id for j in jobs}) == 1
    # And the known asset carries the earlier tags, marked reused; the new ones carry Vidmob's
    with session_scope() as s:
        rows = s.execute(select(Asset.url, Asset.reused_from_asset_id).where(Asset.job_id == jobs[0].id)).all()
        source = s.execute(select(Asset.id).where(Asset.job_id == first.id)).scalar_one()
    assert dict(rows) == {known: source, new: None}
    assert tags_by_url(jobs[0].id)[known] == tags_by_url(first.id)[known]
    assert ("client", "lifestyle") in tags_by_url(jobs[0].id)[new]
