"""Prometheus metrics, scraped from the session worker's main process after real jobs ran.

The worker runs the prefork pool with PROMETHEUS_MULTIPROC_DIR (tests/conftest.py), so these
numbers are the children's, added up by the main process: what a pod's scrape sees.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import attempts_for, send, sim_fault, wait_for, wait_for_job

CDN = "https://cdn.example.com/metrics"


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def delta(after, before, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_completed_job_shows_in_every_metric(system):
    # given a worker that has already run other tests' jobs (its counters are cumulative)
    port = system["worker"].metrics_port
    before = scrape(port)

    # when a job runs to completion
    request_id = f"metrics-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/a.mp4"}])
    job = wait_for_job(request_id)
    assert job.state.value == "complete"

    # then the completion histograms counted it once, with its polls
    after = wait_for(
        lambda: (s := scrape(port)) and delta(s, before, "aperture_job_polls_count") >= 1 and s,
        timeout=10,
        what="the completion to be observed",
    )
    assert delta(after, before, "aperture_job_polls_count") == 1
    assert delta(after, before, "aperture_job_polls_sum") == job.poll_count >= 1
    assert delta(after, before, "aperture_job_seconds_to_complete_count") == 1
    seconds = delta(after, before, "aperture_job_seconds_to_complete_sum")
    assert seconds == pytest.approx((job.completed_at - job.created_at).total_seconds(), abs=1e-3)
    assert seconds > 0

    # and every API attempt stored for the job was counted, by endpoint template and status
    rows = Counter((a.endpoint, str(a.status_code)) for a in attempts_for(job.id))
    assert rows, "the job made API calls"
    for (endpoint, status), count in rows.items():
        assert "{" in endpoint or endpoint.startswith("POST"), f"a template, not a concrete path: {endpoint}"
        assert job.vidmob_job_id not in endpoint
        assert delta(after, before, "aperture_api_requests_total", endpoint=endpoint, status=status) == count
        assert delta(after, before, "aperture_api_request_seconds_count", endpoint=endpoint) >= count
    assert total(after, "aperture_api_requests_total") - total(before, "aperture_api_requests_total") == sum(
        rows.values()
    )

    # and the job counts come from PostgreSQL (the tables were emptied for this test)
    assert value(after, "aperture_jobs_query_up") == 1
    assert value(after, "aperture_jobs", state="complete") == 1
    assert value(after, "aperture_jobs", state="polling") == 0
    assert value(after, "aperture_jobs_in_flight") == 0
    assert value(after, "aperture_jobs_stuck") == 0


def test_retries_and_rejected_payloads_are_counted(system):
    port = system["worker"].metrics_port
    sim = system["simulator"]
    before = scrape(port)

    # given Vidmob answers the first submission with a 503
    sim_fault(sim, method="POST", path="/v1/aperture/jobs", status=503, times=1)
    request_id = f"metrics-retry-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/r.mp4"}])
    # and a payload that breaks the contract
    bad = f"metrics-bad-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=bad, assets=[{"url": "ftp://nope"}])

    job = wait_for_job(request_id)
    assert job.state.value == "complete"
    assert wait_for_job(bad).state.value == "rejected"

    after = wait_for(
        lambda: (s := scrape(port)) and delta(s, before, "aperture_rejected_payloads_total") >= 1 and s,
        timeout=10,
        what="the rejection to be counted",
    )
    submit = next(a.endpoint for a in attempts_for(job.id) if a.method == "POST")
    assert delta(after, before, "aperture_api_retries_total", endpoint=submit) == 1
    assert delta(after, before, "aperture_api_requests_total", endpoint=submit, status="503") == 1
    assert delta(after, before, "aperture_rejected_payloads_total") == 1
    assert value(after, "aperture_jobs", state="rejected") == 1

    # a second delivery of the same bad payload finds its row and is not counted again
    send(system["env"], "aperture.create_job", request_id=bad, assets=[{"url": "ftp://nope"}])
    again = f"metrics-after-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=again, assets=[{"url": f"{CDN}/z.mp4"}])
    wait_for_job(again)
    assert delta(scrape(port), before, "aperture_rejected_payloads_total") == 1
