"""Flower, started as `aperture up` starts it, watching the real worker: its REST API shows the
worker online and the tasks of a job, and refuses anyone without the credentials."""

from __future__ import annotations

import uuid

import requests

from tests.conftest import API_KEY
from tests.support import send, wait_for, wait_for_job


def test_flower_sees_the_worker_and_the_jobs_tasks(system, flower):
    url, auth = flower["url"], flower["auth"]

    # given a job that ran to completion while Flower watched
    request_id = f"flower-{uuid.uuid4()}"
    task_id = send(
        system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": "https://cdn.example.com/f.mp4"}]
    )
    job = wait_for_job(request_id)
    assert job.state.value == "complete"

    # then the worker is online
    status = requests.get(f"{url}/api/workers", params={"status": "true"}, auth=auth, timeout=10).json()
    assert any(status.values()), status
    workers = requests.get(f"{url}/api/workers", params={"refresh": "true"}, auth=auth, timeout=10).json()
    assert any(name.startswith("test-") for name in workers), list(workers)

    # and the job's tasks are listed: the create_job message that was sent, and its polls
    def listed() -> dict:
        tasks = requests.get(f"{url}/api/tasks", auth=auth, timeout=10).json()
        return tasks if tasks.get(task_id, {}).get("state") == "SUCCESS" else {}

    tasks = wait_for(listed, timeout=10, what="Flower to list the create_job task as succeeded")
    assert tasks[task_id]["name"] == "aperture.create_job"
    polls = [t for t in tasks.values() if t.get("name") == "aperture.poll_job" and str(job.id) in str(t.get("kwargs"))]
    assert polls and all(t["state"] == "SUCCESS" for t in polls)
    one = requests.get(f"{url}/api/task/info/{task_id}", auth=auth, timeout=10)
    assert one.ok and one.json()["name"] == "aperture.create_job"


def test_flower_refuses_requests_without_the_credentials(flower):
    url = flower["url"]
    assert requests.get(f"{url}/api/workers", timeout=10).status_code == 401
    assert requests.get(f"{url}/api/tasks", auth=("tester", "wrong"), timeout=10).status_code == 401
    sent = requests.post(f"{url}/api/task/send-task/aperture.create_job", json={"kwargs": {}}, timeout=10)
    assert sent.status_code == 401
    assert requests.get(f"{url}/", timeout=10).status_code == 401
    # and the password is not in its log, nor the Vidmob key
    log = flower["log_path"].read_text(errors="replace")
    assert flower["auth"][1] not in log and API_KEY not in log
