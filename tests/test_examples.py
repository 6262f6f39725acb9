"""The two examples of enqueuing from another application, run as that application would run
them, against the real system: a job each, tagged to completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import ROOT
from tests.support import tags_by_url, wait_for_job

EXAMPLES = ROOT / "examples"


def run(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # A clean environment, and not the project's directory: the example must stand alone.
    return subprocess.run(
        [sys.executable, str(script), *args],
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=script.parent.parent / "docs",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_send_task_example_imports_only_celery():
    source = (EXAMPLES / "send_task.py").read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imported <= {"__future__", "argparse", "os", "uuid", "celery"}


def test_send_task_example_gets_a_job_tagged(system):
    request_id = f"example-{uuid.uuid4()}"
    url = "https://cdn.example.com/examples/plain.mp4"
    done = run(
        EXAMPLES / "send_task.py",
        "--broker",
        system["env"]["APERTURE_BROKER_URL"],
        "--request-id",
        request_id,
        "--client-tag",
        "lifestyle=Real-life settings",
        url,
        env={},
    )
    assert done.returncode == 0, done.stderr
    job = wait_for_job(request_id)
    assert job.state.value == "complete"
    assert ("client", "lifestyle") in tags_by_url(job.id)[url]


def test_flower_example_gets_a_job_tagged(system, flower):
    request_id = f"example-flower-{uuid.uuid4()}"
    url = "https://cdn.example.com/examples/over-http.mp4"
    args = ("--flower", flower["url"], "--request-id", request_id, url)

    refused = run(EXAMPLES / "flower_send_task.py", *args, env={"FLOWER_BASIC_AUTH": "tester:wrong"})
    assert refused.returncode == 1 and "401" in refused.stderr

    done = run(EXAMPLES / "flower_send_task.py", *args, env={"FLOWER_BASIC_AUTH": ":".join(flower["auth"])})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["task-id"]
    job = wait_for_job(request_id)
    assert job.state.value == "complete"
    assert tags_by_url(job.id)[url]
