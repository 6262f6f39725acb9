"""The operator's command line against the real system: submit a file and wait, list, show,
retry; errors a person can act on; and the published JSON Schemas that cannot drift."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

from tests.support import job_by_request_id, sim_fault, tags_by_url, wait_for_job

CDN = "https://cdn.example.com/ops"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- submit -------------------------------------------------------------------------------------


def test_submit_a_csv_and_wait_until_it_is_tagged(system, aperture, tmp_path):
    csv_file = write(tmp_path, "assets.csv", f"url,id\n{CDN}/lifestyle-beach.mp4,first\n{CDN}/lifestyle-park.jpg,\n\n")
    request_id = f"ops-{uuid.uuid4()}"

    result = aperture(
        "submit", str(csv_file), "--wait", "--request-id", request_id, "--client-tag", "lifestyle=Real-life settings"
    )

    assert result.exit_code == 0, result.output
    job = job_by_request_id(request_id)
    assert job.state.value == "complete" and job.asset_count == 2
    assert "complete" in result.output and "first" in result.output
    tags = tags_by_url(job.id)
    assert all(("client", "lifestyle") in t for t in tags.values()) and len(tags) == 2


def test_submit_exit_codes_say_how_the_job_ended(system, aperture, tmp_path):
    # a job Vidmob fails: exit 1
    failing = write(tmp_path, "fail.json", json.dumps({"assets": [{"url": f"{CDN}/will-fail.mp4"}]}))
    result = aperture("submit", str(failing), "--wait")
    assert result.exit_code == 1, result.output
    assert "failed" in result.output

    # a payload that breaks the contract: exit 2, and nothing is sent
    request_id = f"ops-bad-{uuid.uuid4()}"
    bad = write(tmp_path, "bad.json", json.dumps([{"url": "ftp://example.com/x.mp4"}]))
    result = aperture("submit", str(bad), "--wait", "--request-id", request_id)
    assert result.exit_code == 2
    assert "must be an absolute http(s) URL" in result.output
    assert job_by_request_id(request_id) is None

    # still running when the wait runs out: exit 3
    slow = write(tmp_path, "slow.json", json.dumps([f"{CDN}/slow.mp4"]))
    result = aperture("submit", str(slow), "--wait", "--timeout", "0")
    assert result.exit_code == 3, result.output


def test_errors_are_one_clear_line(system, aperture, tmp_path, monkeypatch):
    from config import get_settings

    assets = write(tmp_path, "a.csv", f"url\n{CDN}/a.mp4\n")

    result = aperture("jobs", "show", "no-such-request-id")
    assert result.exit_code == 4 and "no job with id or request id 'no-such-request-id'" in result.output

    no_header = write(tmp_path, "b.csv", f"{CDN}/a.mp4\n")
    result = aperture("submit", str(no_header))
    assert result.exit_code == 4 and "header line with a 'url' column" in result.output

    monkeypatch.setenv("APERTURE_BROKER_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    try:
        result = aperture("submit", str(assets))
        assert result.exit_code == 4 and "cannot reach the broker at redis://127.0.0.1:1/0" in result.output

        monkeypatch.delenv("APERTURE_DATABASE_URL")
        get_settings.cache_clear()
        result = aperture("jobs", "list")
        assert result.exit_code == 4 and "APERTURE_DATABASE_URL is not set" in result.output
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert "Traceback" not in result.output


# --- jobs list / show / retry ---------------------------------------------------------------------


def test_list_and_show_a_job(system, aperture, tmp_path):
    request_id = f"ops-show-{uuid.uuid4()}"
    assets = write(tmp_path, "a.json", json.dumps({"assets": [{"url": f"{CDN}/s.mp4", "id": "creative-7"}]}))
    assert aperture("submit", str(assets), "--wait", "--request-id", request_id).exit_code == 0
    job = job_by_request_id(request_id)

    listed = aperture("jobs", "list", "--state", "complete", "--json")
    assert listed.exit_code == 0
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [r["request_id"] for r in rows] == [request_id]
    assert aperture("jobs", "list", "--state", "failed", "--json").output.strip() == ""
    assert aperture("jobs", "list", "--older-than", "1h", "--json").output.strip() == ""
    table = aperture("jobs", "list")
    assert table.exit_code == 0 and request_id in table.output
    assert "0 job(s) (stuck)" in aperture("jobs", "list", "--stuck").output

    for ident in (request_id, str(job.id)):
        shown = aperture("jobs", "show", ident)
        assert shown.exit_code == 0
        assert str(job.id) in shown.output and "complete" in shown.output and "creative-7" in shown.output
        assert "POST /v1/aperture/jobs" in shown.output or "POST /v1/media/aperture" in shown.output

    detail = json.loads(aperture("jobs", "show", request_id, "--json").output)
    assert detail["state"] == "complete" and detail["vidmob_job_id"] == job.vidmob_job_id
    assert detail["assets"][0]["id"] == "creative-7" and detail["assets"][0]["tags"]
    assert [a["outcome"] for a in detail["attempts"]] == ["ok"] * len(detail["attempts"])


def test_retry_resubmits_a_failed_job(system, aperture):
    from tests.support import send

    # given a job whose submission Vidmob refused (a 400 is never retried on its own)
    sim_fault(system["simulator"], method="POST", path="/v1/aperture/jobs", status=400, times=1)
    sim_fault(system["simulator"], method="POST", path="/v1/media/aperture", status=400, times=1)
    request_id = f"ops-retry-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/r.mp4"}])
    failed = wait_for_job(request_id)
    assert failed.state.value == "failed"

    # when the operator retries it
    result = aperture("jobs", "retry", request_id)

    # then it is submitted again and completes, with a fresh deadline
    assert result.exit_code == 0, result.output
    job = wait_for_job(request_id, timeout=30)
    assert job.state.value == "complete" and job.error is None
    assert job.deadline_at > failed.deadline_at

    # and a job that did not fail cannot be retried
    again = aperture("jobs", "retry", str(job.id))
    assert again.exit_code == 4 and "only failed or timed_out jobs can be retried" in again.output


def test_stuck_jobs_are_the_active_ones_nobody_looks_after(app_env):
    from config import get_settings
    from models import Job, JobState
    from models.db import session_scope
    from services.tagging.reads import list_jobs
    from tests.factories import job_values

    settings = get_settings()
    now = dt.datetime.now(dt.UTC)
    late = now - dt.timedelta(seconds=settings.lost_message_after_s + 60)

    def job(tag: str, state: JobState, **values) -> Job:
        return Job(**job_values(state=state, request_id=f"stuck-{tag}-{uuid.uuid4()}", **values))

    # Never committed: the sweeper (which would rescue these) never sees them.
    with session_scope() as session:
        rows = {
            "overdue": job("overdue", JobState.POLLING, due_at=late),
            "sent-and-lost": job("lost", JobState.POLLING, due_at=late, sent_at=late),
            "past-deadline": job(
                "deadline", JobState.SUBMITTING, due_at=now, deadline_at=now - dt.timedelta(seconds=1)
            ),
            "on-time": job("ontime", JobState.POLLING, due_at=now + dt.timedelta(seconds=30)),
            # Due long ago, and a worker holds it now (a backlog): looked after.
            "held": job("held", JobState.SUBMITTING, due_at=late, leased_until=now + dt.timedelta(seconds=60)),
            # Sent just now, after a long wait in a backlog: looked after.
            "just-sent": job("sent", JobState.POLLING, due_at=late, sent_at=now),
            "ended": job("ended", JobState.FAILED),
        }
        session.add_all(rows.values())
        session.flush()
        stuck = list_jobs(session, now=now, settings=settings, stuck=True, limit=1000)
        found = {j.request_id for j in stuck}
        session.rollback()
    assert {name for name, row in rows.items() if row.request_id in found} == {
        "overdue",
        "sent-and-lost",
        "past-deadline",
    }


# --- schema -------------------------------------------------------------------------------------


def test_committed_schemas_equal_the_generated_ones(aperture):
    from services import schema

    assert schema.stale() == [], "run `aperture schema --write` and commit docs/schemas/"
    assert aperture("schema", "--check").exit_code == 0
    committed = {p.stem for p in schema.SCHEMA_DIR.glob("*.json")}
    assert committed == set(schema.public_tasks())


def test_schemas_describe_registered_public_tasks(app_env, tmp_path):
    from services import schema
    from workers import app

    assert "aperture.create_job" in schema.public_tasks()
    for task in schema.public_tasks():
        assert task in app.tasks, f"{task} is published but no worker task has that name"
        body = json.loads(schema.render(task))
        assert body["title"] == task and body["type"] == "object" and body["additionalProperties"] is False
    create = json.loads(schema.render("aperture.create_job"))
    assert create["required"] == ["assets"] and create["properties"]["assets"]["maxItems"] == 200

    # the write command regenerates what the check compares against
    written = schema.write_all(tmp_path)
    assert {p.name for p in written} == {f"{t}.json" for t in schema.public_tasks()}
    assert schema.stale(tmp_path) == []
    (tmp_path / "aperture.create_job.json").write_text("{}")
    assert schema.stale(tmp_path) == ["aperture.create_job"]
