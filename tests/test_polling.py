"""Adaptive polling: what it learns, when it looks, and one job of the real pipeline polled near its finish.

The decisions are pure (services/durable/prediction.py, schedule.adaptive_delay, the domains'
first_look/after_status) and tested without a clock; one test runs the pipeline's steps and dispatcher
passes in this process (``fleet``: tests/inprocess.py, the tests' adaptive-polling settings) against
PostgreSQL and the simulator: nothing in it needs a process boundary. The figures on the benchmark's
workload are in docs/benchmarks.md (bench/bench_polling.py).
"""

from __future__ import annotations

import math
import random
import statistics
import subprocess
import sys
import uuid

import pytest
import requests
from sqlalchemy import select

from clients.scoring import MediaScoringStatus
from clients.tags import TagsJobState, TagsJobStatus
from config import Settings, get_settings
from models import ApiAttempt, JobState
from models.db import session_scope
from services.durable import durations
from services.durable.policy import LookAgain
from services.durable.prediction import Observation, Prediction, fit
from services.durable.schedule import adaptive_delay, utcnow
from services.scoring import policy as scoring
from services.tagging import policy as tagging
from tests.conftest import ROOT
from tests.support import job_by_request_id

PROCESSING = TagsJobStatus(TagsJobState.PROCESSING)
CDN = "https://cdn.example.com"


# The product's defaults, whatever the environment says (the tests' workers run at a faster scale).
POLLING = [name for name in Settings.model_fields if name.startswith(("poll_", "scoring_poll_"))]
BASE = {name: Settings.model_fields[name].default for name in POLLING} | {"poll_jitter": 0.0}


def settings(**overrides) -> Settings:
    return Settings(**(BASE | overrides))


def observed(durations: list[tuple[int, float]], look_every_s: float = 30.0) -> list[Observation]:
    """Each job as polling sees it: done somewhere between two looks ``look_every_s`` apart."""
    result = []
    for units, seconds in durations:
        upper = math.ceil(seconds / look_every_s) * look_every_s
        result.append(Observation("job:guide", units, upper - look_every_s, upper))
    return result


def workload(n: int, seed: int = 1) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    jobs = []
    for _ in range(n):
        units = max(1, min(200, int(math.exp(rng.uniform(0, math.log(201))))))
        jobs.append((units, (120 + 30 * units) * math.exp(rng.gauss(0, 0.5))))
    return jobs


# --- what the model learns ----------------------------------------------------------


def test_the_model_learns_the_median_duration_per_job_size_and_its_spread():
    model = fit(observed(workload(500)), min_observations=20)
    for units in (1, 10, 50, 150):
        predicted = model.predict("job:guide", units).median_s
        assert 0.75 < predicted / (120 + 30 * units) < 1.33, units
    assert 0.4 < model.predict("job:guide", 10).sigma < 0.7


def test_a_few_wild_durations_do_not_move_the_prediction():
    jobs = workload(500)
    clean = fit(observed(jobs), min_observations=20).predict("job:guide", 20)
    # 10% of the jobs took 50 times longer (a stuck job), or were seen done at once
    wild = [(u, s * 50) if i % 20 == 0 else (u, 1.0) if i % 20 == 1 else (u, s) for i, (u, s) in enumerate(jobs)]
    noisy = fit(observed(wild), min_observations=20).predict("job:guide", 20)
    assert 0.85 < noisy.median_s / clean.median_s < 1.18
    assert noisy.sigma < clean.sigma * 1.5


def test_without_enough_finished_jobs_there_is_no_prediction_and_the_fixed_schedule_holds():
    model = fit(observed(workload(19)), min_observations=20)
    assert model.predict("job:guide", 10) is None
    s = settings(poll_initial_s=300, poll_interval_s=300)
    assert tagging.first_look(None, settings=s) == 300
    assert tagging.after_status(PROCESSING, settings=s, prediction=None, elapsed_s=900).delay_s == 300


def test_each_dialect_learns_on_its_own():
    guide = observed(workload(50))
    media = [Observation("job:media", o.units, o.lower_s * 3, o.upper_s * 3) for o in guide]
    model = fit(guide + media, min_observations=20)
    ratio = model.predict("job:media", 30).median_s / model.predict("job:guide", 30).median_s
    assert 2.5 < ratio < 3.5
    assert model.predict("job:other", 30) is None


# --- when it looks ------------------------------------------------------------------


def test_the_first_look_comes_near_the_predicted_finish_not_after_five_minutes():
    s = settings()
    small, large = Prediction(150, 0.5), Prediction(6000, 0.5)
    assert 100 < tagging.first_look(small, settings=s) < 300  # a 2.5-minute job: before the 5 minutes
    first = tagging.first_look(large, settings=s)
    assert 1800 < first < 6000  # a 100-minute job: not every 5 minutes from the start
    # and it is unlikely to have finished long before that first look
    assert large.cdf(first - s.poll_max_interval_s) <= 0.021


def test_looks_are_closest_where_the_job_most_likely_ends_and_never_beyond_the_maximum():
    s = settings(poll_max_interval_s=300, poll_min_interval_s=15, poll_delay_per_call_s=30)
    p = Prediction(1200, 0.5)
    waits = {t: tagging.after_status(PROCESSING, settings=s, prediction=p, elapsed_s=t).delay_s for t in (300, 1200)}
    assert waits[1200] < waits[300] <= 300
    far_past = tagging.after_status(PROCESSING, settings=s, prediction=p, elapsed_s=100_000).delay_s
    assert far_past == 300
    tiny = Prediction(2, 0.3)
    assert tagging.after_status(PROCESSING, settings=s, prediction=tiny, elapsed_s=2).delay_s >= 15


def test_jitter_still_spreads_adaptive_looks():
    s = settings(poll_jitter=0.1)
    p = Prediction(1200, 0.5)
    exact = adaptive_delay(p, 1000, worth_s=s.poll_delay_per_call_s, min_s=s.poll_min_interval_s, max_s=300)
    waits = [tagging.after_status(PROCESSING, settings=s, prediction=p, elapsed_s=1000).delay_s for _ in range(200)]
    assert exact * 0.9 <= min(waits) < max(waits) <= exact * 1.1
    assert max(waits) - min(waits) > exact * 0.1


@pytest.mark.parametrize("worth_s", [15.0, 30.0, 60.0])
def test_the_knob_trades_calls_for_detection_delay(worth_s):
    # given jobs whose durations follow the prediction exactly
    p = Prediction(1200, 0.5)
    durations = [p.quantile((i + 0.5) / 400) for i in range(400)]

    def cost(worth: float, prediction: Prediction | None = p) -> tuple[float, float]:
        s = settings(poll_delay_per_call_s=worth)
        calls, delays = [], []
        for d in durations:
            t, n = tagging.first_look(prediction, settings=s), 1
            while t < d:
                decision = tagging.after_status(PROCESSING, settings=s, prediction=prediction, elapsed_s=t)
                assert isinstance(decision, LookAgain)
                t += decision.delay_s
                n += 1
            calls.append(n)
            delays.append(t - d)
        return statistics.fmean(calls), statistics.fmean(delays)

    calls, delay = cost(worth_s)
    more_calls, less_delay = cost(worth_s / 2)
    assert more_calls > calls and less_delay < delay
    # and against the fixed 5 minutes on the same jobs, the default knob saves a quarter of the calls
    # for about the same delay (docs/benchmarks.md: on jobs of mixed sizes, both fall)
    default_calls, default_delay = cost(BASE["poll_delay_per_call_s"])
    fixed_calls, fixed_delay = cost(worth_s, prediction=None)
    assert default_calls < 0.75 * fixed_calls and default_delay < 1.05 * fixed_delay


def test_scoring_polls_adaptively_within_its_own_interval():
    s = settings(scoring_poll_initial_s=900, scoring_poll_interval_s=600)
    p = Prediction(2400, 0.3)
    first = scoring.first_look(p, settings=s)
    assert 1200 < first < 2400
    later = scoring.after_status(
        MediaScoringStatus.PROCESSING, error_polls=0, settings=s, prediction=p, elapsed_s=first
    )
    assert later.delay_s <= 600
    fixed = scoring.after_status(MediaScoringStatus.PROCESSING, error_polls=0, settings=s)
    assert fixed.delay_s == 600


# --- the real pipeline --------------------------------------------------------------


def test_a_job_is_polled_near_its_predicted_finish(fleet):
    # given Vidmob taking about 3.5 s for a 40-asset job (the fleet polls every 0.3 s when it knows nothing)
    sim = fleet.simulator
    config = requests.get(f"{sim.url}/_sim/config", timeout=5).json()
    requests.post(f"{sim.url}/_sim/config", json={"processing_per_asset_s": 0.075}, timeout=5).raise_for_status()
    assets = [{"url": f"{CDN}/clip-{i}.mp4"} for i in range(40)]
    learned = [f"learn-{i}-{uuid.uuid4()}" for i in range(24)]
    try:
        # and 24 such jobs finished: enough to learn from
        # (fresh: every one a Vidmob job to learn from, none answered by reuse of the first one's tags)
        for request_id in learned:
            fleet.create_job(request_id=request_id, assets=assets, fresh=True)
        assert {fleet.wait_for_job(r, timeout=60).state for r in learned} == {JobState.COMPLETE}

        # when one more is submitted, once the fleet's model (re-read from PostgreSQL every
        # APERTURE_POLL_MODEL_REFRESH_S) predicts how long a job of its size takes
        dialect = job_by_request_id(learned[0]).dialect

        def predicted() -> Prediction | None:
            with session_scope() as s:
                return durations.predict(
                    s, durations.TAGGING, f"job:{dialect}", len(assets), settings=get_settings(), now=utcnow()
                )

        fleet.run_until(predicted, what="a prediction for a 40-asset job")
        request_id = f"predicted-{uuid.uuid4()}"
        fleet.create_job(request_id=request_id, assets=assets, fresh=True)
        job = fleet.wait_for_job(request_id, timeout=60)
    finally:
        # The simulator is the tier's for the whole session: later tests' jobs take their usual time.
        processing = {"processing_per_asset_s": config["processing_per_asset_s"]}
        requests.post(f"{sim.url}/_sim/config", json=processing, timeout=5).raise_for_status()

    # then its first status check came near the finish, not 0.3 s after submission
    assert job.state is JobState.COMPLETE
    record = requests.get(f"{sim.url}/_sim/jobs/{job.vidmob_job_id}", timeout=5).json()
    with session_scope() as s:
        looks = s.scalars(
            select(ApiAttempt.attempted_at).where(ApiAttempt.job_id == job.id, ApiAttempt.method == "GET")
        ).all()
    first_look_s = (min(looks) - job.submitted_at).total_seconds()
    took_s = record["done_at"] - record["created_at"]
    assert took_s * 0.5 < first_look_s, (first_look_s, took_s)
    # and few checks were spent: the fixed 0.3 s would have made about a dozen
    assert job.poll_count <= 4
    # and the tags were stored soon after Vidmob finished
    assert job.completed_at.timestamp() - record["done_at"] < 2.5


def test_the_polling_benchmark_runs_at_a_smoke_size():
    # no timing or target is asserted at this size: only that every schedule is measured side by side
    command = [sys.executable, "bench/bench_polling.py", "--jobs", "100", "--knobs", "30,90"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {line.rsplit(None, 6)[0]: line.split()[-6:] for line in done.stdout.splitlines() if line[:1].isalpha()}
    for schedule in ("fixed 5 min", "adaptive, 30 s/call", "adaptive, 90 s/call", "oracle"):
        calls, mean, p95, *ratios = rows[schedule]
        assert float(calls) >= 1 and float(mean) >= 0 and float(p95) >= 0 and len(ratios) == 3, schedule
    assert rows["fixed 5 min"][3:] == ["1.00", "1.00", "1.00"]
    assert sum(line.startswith("target: ") for line in done.stdout.splitlines()) == 2
