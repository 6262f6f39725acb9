"""Structured logs: the session worker (tests/conftest.py) logs JSON at DEBUG; a job's lines say
which task and which job they are about, and the API key appears nowhere."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid

import pytest

from tests.conftest import API_KEY
from tests.support import send, sim_fault, wait_for, wait_for_job

CDN = "https://cdn.example.com/logging"
FIELDS = {"ts", "level", "logger", "process", "message", "task_name", "task_id", "attempt"}
FIELDS |= {"job_id", "request_id", "caller", "vidmob_job_id"}
OUR_LOGGERS = ("services.", "tasks.", "clients.", "workers.", "celery.")
LOG_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")


@pytest.fixture
def wlog():
    from workers import logging as module

    return module


def json_lines(text: str) -> tuple[list[dict], list[str]]:
    parsed, other = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError:
            other.append(line)
    return parsed, other


def test_a_jobs_log_lines_are_json_with_task_and_job_fields(system):
    # given a submission that is refused once (a WARNING-worthy retry) and then a normal job
    sim_fault(system["simulator"], method="POST", path="/v1/aperture/jobs", status=503, times=1)
    request_id = f"logging-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/a.mp4"}])
    job = wait_for_job(request_id)
    assert job.state.value == "complete"

    def job_lines() -> list[dict]:
        lines, _ = json_lines(system["worker"].log())
        return [e for e in lines if e.get("job_id") == str(job.id) and e.get("task_name") == "aperture.poll_job"]

    wait_for(job_lines, timeout=10, what="the poll task's log lines")
    lines, other = json_lines(system["worker"].log())

    # then every log line is one JSON object with the same keys; what is not JSON is Celery's
    # start-up banner (printed, not logged)
    assert lines
    for event in lines:
        assert FIELDS <= event.keys(), event
    assert not [line for line in other if LOG_LEVEL.search(line)], other[:5]
    assert any(e["logger"].startswith(OUR_LOGGERS) for e in lines)

    # and the lines written while the job's tasks ran carry the task and the job
    ours = [e for e in lines if e["job_id"] == str(job.id) or e["request_id"] == request_id]
    by_task = {e["task_name"] for e in ours}
    assert {"aperture.create_job", "aperture.poll_job"} <= by_task
    for event in ours:
        assert event["task_id"] and event["attempt"] >= 1
    create = [e for e in ours if e["task_name"] == "aperture.create_job"]
    assert all(e["request_id"] == request_id for e in create)
    assert any(e["logger"] == "clients.http" for e in create), "the client's per-attempt line is in the job's context"
    poll = [e for e in ours if e["task_name"] == "aperture.poll_job"]
    assert all(e["job_id"] == str(job.id) for e in poll)
    # A request that names no caller is the default caller's, and its lines say so.
    assert all(e["caller"] == "default" for e in poll)
    for event in ours:
        if event["vidmob_job_id"] is not None:
            assert event["vidmob_job_id"] == job.vidmob_job_id

    # and the API key is nowhere in any log of the system
    for process in ("worker", "dispatcher"):
        assert API_KEY not in system[process].log()


def test_the_api_key_is_redacted_whatever_logs_it(monkeypatch, wlog):
    # given a handler made the way the worker makes it
    monkeypatch.setenv("VIDMOB_API_KEY", API_KEY)
    stream = io.StringIO()
    logger = logging.getLogger("tests.redaction")
    logger.propagate = False
    logger.addHandler(wlog.make_handler(stream, fmt="json"))
    logger.setLevel(logging.DEBUG)
    try:
        # when code logs the key in a message, in an argument, in a header and in a traceback
        wlog.bind(job_id="j-1", request_id="r-1")
        logger.info("calling with key %s", API_KEY)
        logger.warning(f"header was Authorization: Bearer {API_KEY}")
        logger.info("bearer token: Bearer abc.def-123")
        try:
            raise RuntimeError(f"boom {API_KEY}")
        except RuntimeError:
            logger.exception("failed")
        wlog.clear()
        logger.info("no context", extra={"vidmob_job_id": "v-9"})
    finally:
        logger.handlers.clear()
        wlog.clear()

    # then no line holds it, each is JSON, and the context rode along
    text = stream.getvalue()
    assert API_KEY not in text
    assert "abc.def-123" not in text
    events = [json.loads(line) for line in text.splitlines()]
    assert len(events) == 5
    assert events[0]["message"] == "calling with key [REDACTED]"
    assert events[0]["job_id"] == "j-1" and events[0]["request_id"] == "r-1"
    assert "[REDACTED]" in events[3]["exc"] and "RuntimeError" in events[3]["exc"]
    assert events[4]["job_id"] is None and events[4]["vidmob_job_id"] == "v-9"


def test_text_format_for_people(wlog):
    stream = io.StringIO()
    logger = logging.getLogger("tests.textformat")
    logger.propagate = False
    logger.addHandler(wlog.make_handler(stream, fmt="text"))
    # Its own level: the root's is whatever a test before it in this process left (once, the line was dropped).
    logger.setLevel(logging.DEBUG)
    try:
        wlog.bind(job_id="j-2")
        logger.warning("hello %s", "world")
    finally:
        logger.handlers.clear()
        wlog.clear()
    line = stream.getvalue().strip()
    assert "WARNING" in line and "tests.textformat: hello world" in line and "job_id=j-2" in line


def test_bind_refuses_unknown_fields(wlog):
    with pytest.raises(TypeError):
        wlog.bind(api_key="x")
