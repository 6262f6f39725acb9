"""Fair admission under the open-jobs cap: who gets a free slot, and when.

In this process (``fleet``): real PostgreSQL, the simulator over HTTP, dispatcher passes run here.
The poll interval is a minute, so a submission admitted "at once" cannot have been admitted by the
interval's recheck: only a slot freed by a job's end can have sent it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from config import get_settings
from models import Job, JobState
from models.db import session_scope
from services.durable.schedule import utcnow
from services.tagging import capacity
from tests.inprocess import Fleet

pytestmark = pytest.mark.slow
CDN = "https://cdn.example.com/admission"


@pytest.fixture
def capped(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """A cap of 2 open Vidmob jobs; a job is first polled after 1 s (the simulator takes 0.5 s), and a
    waiting submission would look again only after 60 s by itself."""
    for name, value in {
        "APERTURE_MAX_OPEN_JOBS": "2",
        "APERTURE_POLL_SCHEDULE": "fixed",
        "APERTURE_POLL_INITIAL_S": "1",
        "APERTURE_POLL_INTERVAL_S": "60",
        "APERTURE_CALLERS": json.dumps({"a": {}, "b": {}, "c": {}}),
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield fleet
    get_settings.cache_clear()


def send(fleet: Fleet, caller: str, n: int, **extra: Any) -> list[str]:
    ids = []
    for i in range(n):
        request_id = f"{caller}-{extra.get('priority', 'interactive')}-{i}"
        fleet.create_job(
            assets=[{"url": f"{CDN}/{request_id}.mp4"}], request_id=request_id, caller=caller, batch=False, **extra
        )
        ids.append(request_id)
    return ids


def jobs() -> list[Job]:
    with session_scope() as s:
        return list(s.execute(select(Job).where(Job.is_pack.is_(False))).scalars())


def submission_order() -> list[str]:
    """Request ids in the order Vidmob got them."""
    submitted = [(j.submitted_at, j.request_id) for j in jobs() if j.submitted_at is not None]
    return [request_id for _, request_id in sorted(submitted)]


def all_complete(n: int) -> list[Job] | None:
    found = jobs()
    done = [j for j in found if j.state is JobState.COMPLETE]
    return found if len(done) == n else None


def test_a_slot_freed_by_a_jobs_end_admits_the_next_one_at_once(capped: Fleet) -> None:
    send(capped, "a", 3)
    waiting = next(j for j in jobs() if j.state is JobState.SUBMITTING)
    assert waiting.waiting_since is not None
    assert waiting.error == "waiting for a free slot: 2 Vidmob jobs open (APERTURE_MAX_OPEN_JOBS=2)"
    # Ends come after the first poll (1 s); the third is sent then, 59 s before its own recheck.
    ended = capped.run_until(lambda: all_complete(3), timeout=20, what="all three complete, well within 60 s")
    third = next(j for j in ended if j.request_id == waiting.request_id)
    first_end = min(j.ended_at for j in ended if j.ended_at is not None)
    assert third.submitted_at is not None and (third.submitted_at - first_end).total_seconds() < 5
    assert third.waiting_since is None


def test_a_caller_with_a_few_requests_is_not_queued_behind_anothers_many(capped: Fleet) -> None:
    send(capped, "a", 8)
    (b,) = send(capped, "b", 1)
    capped.run_until(lambda: all_complete(9), timeout=60, what="every request complete")
    order = submission_order()
    # a's first two took the free slots; b's request goes in the next ones freed (both of a's first jobs
    # may end in one pass: then a's third and b's share it), not after a's other six.
    assert order[:2] == ["a-interactive-0", "a-interactive-1"]
    assert b in order[2:4], order


def test_two_callers_that_both_wait_share_the_slots(capped: Fleet) -> None:
    send(capped, "a", 6)
    send(capped, "c", 6)
    capped.run_until(lambda: all_complete(12), timeout=60, what="every request complete")
    order = submission_order()
    first_eight = [rid.split("-")[0] for rid in order[:8]]
    # First come first served would give a six of the first eight; a fair share gives each about four
    # (a holds the two slots when c arrives, so c takes the next ones until the shares are even; two
    # slots freed in one pass go one to each).
    assert first_eight.count("c") in (3, 4), order
    # Within a caller: first come first served.
    assert [rid for rid in order if rid.startswith("c-")] == [f"c-interactive-{i}" for i in range(6)]


def test_interactive_requests_go_before_the_same_callers_bulk_ones(capped: Fleet) -> None:
    send(capped, "a", 4, priority="bulk")
    (urgent,) = send(capped, "a", 1, priority="interactive")
    capped.run_until(lambda: all_complete(5), timeout=60, what="every request complete")
    assert submission_order()[2] == urgent


def test_jobs_show_says_a_waiting_jobs_place(capped: Fleet) -> None:
    send(capped, "a", 4)
    (b,) = send(capped, "b", 1)
    with session_scope() as s:
        by_request = {j.request_id: j.id for j in s.execute(select(Job)).scalars()}
        settings, now = get_settings(), utcnow()
        places = {
            rid: capacity.place_of(s, by_request[rid], settings=settings, now=now)
            for rid in ("a-interactive-2", "a-interactive-3", b)
        }
        running = capacity.place_of(s, by_request["a-interactive-0"], settings=settings, now=now)
    assert places == {
        b: capacity.Place(1, 3),
        "a-interactive-2": capacity.Place(2, 3),
        "a-interactive-3": capacity.Place(3, 3),
    }
    assert running is None


def test_aperture_jobs_show_and_list_say_the_place_and_the_caller(capped: Fleet) -> None:
    from click.testing import CliRunner

    from cli.main import main

    send(capped, "a", 3)
    (b,) = send(capped, "b", 1)
    runner = CliRunner()
    shown = runner.invoke(main, ["jobs", "show", b, "--json"])
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.output)
    assert (detail["caller"], detail["waiting"]) == ("b", {"place": 1, "of": 2})
    text = runner.invoke(main, ["jobs", "show", "a-interactive-2"], env={"COLUMNS": "200"})
    assert "place 2 of 2 for a free slot" in text.output
    listed = runner.invoke(main, ["jobs", "list", "--caller", "b", "--json"])
    assert [json.loads(line)["request_id"] for line in listed.output.splitlines()] == [b]
    # The table has a caller column when it lists several callers, and names the one it lists otherwise
    table = runner.invoke(main, ["jobs", "list"], env={"COLUMNS": "120"}).output
    assert "caller" in table.splitlines()[2] and {"a", "b"} <= {line.split()[1] for line in table.splitlines()[4:-1]}
    only_b = runner.invoke(main, ["jobs", "list", "--caller", "b"], env={"COLUMNS": "120"}).output
    assert "caller b" in only_b.splitlines()[0] and "caller" not in only_b.splitlines()[2]


def test_the_metrics_count_jobs_by_caller_with_a_bounded_set_of_names(
    capped: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.metrics import JobsCollector

    monkeypatch.setenv("APERTURE_UNKNOWN_CALLER", "accept")
    get_settings.cache_clear()
    send(capped, "a", 3)
    send(capped, "stranger-1", 1)
    send(capped, "stranger-2", 1)
    families = {m.name: m for m in JobsCollector().collect()}
    jobs_by = {(s.labels["caller"], s.labels["state"]): s.value for s in families["aperture_caller_jobs"].samples}
    waiting = {s.labels["caller"]: s.value for s in families["aperture_caller_jobs_waiting"].samples}
    # Two of a's took the slots; every other request waits. Unconfigured names are "other".
    assert jobs_by == {("a", "polling"): 2, ("a", "submitting"): 1, ("other", "submitting"): 2}
    assert waiting == {"a": 1, "other": 2}


def test_aperture_callers_says_each_callers_settings_and_usage(capped: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cli.main import main

    monkeypatch.setenv("APERTURE_CALLERS", json.dumps({"a": {"weight": 2, "assets_per_day": 10}, "b": {}}))
    get_settings.cache_clear()
    send(capped, "a", 3)
    capped.create_job(assets=[{"url": f"{CDN}/a-interactive-0.mp4"}], request_id="again", caller="b", batch=False)
    capped.run_until(lambda: all_complete(4), timeout=30, what="every request complete")
    listed = CliRunner().invoke(main, ["callers", "--json"])
    assert listed.exit_code == 0, listed.output
    by_name = {row["caller"]: row for line in listed.output.splitlines() for row in [json.loads(line)]}
    a, b = by_name["a"], by_name["b"]
    assert (a["weight"], a["requests"], a["assets_sent"], a["vidmob_jobs"], a["budget_left"]) == (2.0, 3, 3, 3, 7)
    assert a["api_calls"] >= 6  # a create and at least one status call per job
    # b's one asset was tagged for a minutes ago: answered by reuse, nothing sent.
    assert (b["requests"], b["assets_sent"], b["assets_reused"], b["vidmob_jobs"], b["api_calls"]) == (1, 0, 1, 0, 0)
    assert by_name["default"]["requests"] == 0
    assert (a["intake_queue"], by_name["default"]["intake_queue"]) == ("aperture.submit.a", "aperture.submit")
    table = CliRunner().invoke(main, ["callers"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "7/10" in table.output, table.output
