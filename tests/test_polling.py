"""Adaptive polling: what it learns, how it plans its checks, and one job of the real pipeline following its plan.

The decisions are pure (services/durable/prediction.py, checking.py, schedule.planned_wait, the domains'
first_look/after_status) and tested without a clock; one test runs the pipeline's steps and dispatcher
passes in this process (``fleet``: tests/inprocess.py, the tests' adaptive-polling settings) against
PostgreSQL and the simulator: nothing in it needs a process boundary. The figures on the benchmark's
workload are in docs/benchmarks.md (bench/bench_polling.py).
"""

from __future__ import annotations

import itertools
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
from services.durable import checking, durations
from services.durable.checking import Costs, Policy, calibrate, fixed_p95, refresh, solve
from services.durable.prediction import Observation, Prediction, fit
from services.durable.schedule import planned_wait, utcnow
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


def affine(units: int) -> float:
    return 120 + 30 * units


def power(units: int) -> float:
    return 60 * units**0.7


def workload(n: int, seed: int = 1, median=affine) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    jobs = []
    for _ in range(n):
        units = max(1, min(200, int(math.exp(rng.uniform(0, math.log(201))))))
        jobs.append((units, median(units) * math.exp(rng.gauss(0, 0.5))))
    return jobs


def observed(
    durations: list[tuple[int, float]], look_every_s: float = 300.0, group: str = "job:guide"
) -> list[Observation]:
    """Each job as polling sees it: done somewhere between two looks ``look_every_s`` apart."""
    result = []
    for units, seconds in durations:
        upper = math.ceil(seconds / look_every_s) * look_every_s
        result.append(Observation(group, units, upper - look_every_s, upper))
    return result


# --- what the model learns ----------------------------------------------------------


def test_the_model_learns_the_median_duration_per_job_size_and_its_spread_from_intervals():
    # given 500 jobs seen only as "done between two checks 5 minutes apart"
    model = fit(observed(workload(500)), min_observations=20)
    found = model.fits["job:guide"]
    # then it chose the form the durations follow, and recovered each size's median and the spread
    assert found.form == "affine"
    for units in (1, 10, 50, 150):
        assert 0.9 < found.median_s(units) / affine(units) < 1.1, units
    assert 0.45 < found.sigma < 0.55


def test_the_form_is_chosen_by_the_censored_likelihood():
    # given durations that follow a power law in the size instead
    loglog = fit(observed(workload(500, median=power)), min_observations=20).fits["job:guide"]
    linear = fit(observed(workload(500)), min_observations=20).fits["job:guide"]
    assert loglog.form == "loglog" and linear.form == "affine"
    for units in (1, 10, 150):
        assert 0.85 < loglog.median_s(units) / power(units) < 1.15, units


def test_a_few_wild_durations_do_not_move_the_prediction():
    jobs = workload(500)
    clean = fit(observed(jobs), min_observations=20).predict("job:guide", 20)
    # 10% of the jobs took 50 times longer (a stuck job), or were seen done at once
    wild = [(u, s * 50) if i % 20 == 0 else (u, 1.0) if i % 20 == 1 else (u, s) for i, (u, s) in enumerate(jobs)]
    noisy = fit(observed(wild), min_observations=20).predict("job:guide", 20)
    assert noisy is not None and clean is not None
    assert 0.85 < noisy.median_s / clean.median_s < 1.18
    assert noisy.sigma < clean.sigma * 1.3


def test_recent_work_in_the_history_is_short_work_and_the_fit_knows_it():
    # given jobs submitted every 30 s for 3 hours, of which the history holds those finished by now
    rng = random.Random(3)
    now, history = 3 * 3600.0, []
    for i in range(360):
        submitted = i * 30.0
        units = max(1, min(200, int(math.exp(rng.uniform(0, math.log(201))))))
        took = affine(units) * math.exp(rng.gauss(0, 0.5))
        if submitted + took <= now:
            upper = math.ceil(took / 300) * 300
            history.append(Observation("job:guide", units, upper - 300, min(upper, now - submitted), now - submitted))
    history.reverse()  # newest first, as the query reads it
    found = fit(history, min_observations=20).fits["job:guide"]
    # then large jobs' medians are not pulled down by the long ones still running
    assert 0.88 < found.median_s(150) / affine(150) < 1.12


def test_a_slowdown_is_noticed_from_the_latest_jobs_and_calm_history_has_no_shift():
    calm = observed(workload(400))
    assert fit(calm, min_observations=20).fits["job:guide"].shift == 0.0
    # given the latest 40 jobs (newest first) taking three times longer
    slow = [Observation(o.group, o.units, o.lower_s * 3, o.upper_s * 3) for o in observed(workload(40, seed=7))]
    shifted = fit(slow + calm, min_observations=20).fits["job:guide"]
    assert 2.2 < math.exp(shifted.shift) < 4.0


def test_without_enough_finished_jobs_there_is_no_prediction_and_the_fixed_schedule_holds():
    model = fit(observed(workload(19)), min_observations=20)
    assert model.predict("job:guide", 10) is None
    s = settings(poll_initial_s=300, poll_interval_s=300)
    assert tagging.first_look(None, settings=s) == 300
    assert tagging.after_status(PROCESSING, settings=s, prediction=None, elapsed_s=900).delay_s == 300


def test_each_dialect_learns_on_its_own():
    guide = observed(workload(60))
    media = [Observation("job:media", o.units, o.lower_s * 3, o.upper_s * 3) for o in guide]
    model = fit(guide + media, min_observations=20)
    ratio = model.predict("job:media", 30).median_s / model.predict("job:guide", 30).median_s
    assert 2.5 < ratio < 3.5
    assert model.predict("job:other", 30) is None


# --- the plan of checks ------------------------------------------------------------------

COSTS = Costs(per_call_s=30.0, threshold_s=282.0, min_gap_s=0.0, max_gap_s=1e9, tail_gap_s=300.0)


def expected_fixed(median_s: float, sigma: float) -> tuple[float, float]:
    """Calls and mean delay of a check at 300 s and every 300 s after, for a log-normal duration."""
    p = Prediction(median_s, sigma)
    calls = delay = 0.0
    for k in range(1, 400):
        low, high = p.cdf(300 * (k - 1)), p.cdf(300 * k)
        calls += k * (high - low)
        quantiles = [p.quantile(low + (high - low) * (i + 0.5) / 50) for i in range(50)] if high > low else []
        delay += (high - low) * (statistics.fmean(300 * k - q for q in quantiles) if quantiles else 0.0)
    return calls, delay


def test_the_plan_beats_the_fixed_schedule_on_its_own_cost():
    for median in (150.0, 720.0, 6000.0):
        plan = solve(median, 0.5, COSTS)
        calls, delay = expected_fixed(median, 0.5)
        assert plan.calls + plan.delay_s / COSTS.per_call_s < calls + delay / COSTS.per_call_s, median
        assert list(plan.checks_s) == sorted(plan.checks_s)


def test_short_jobs_are_checked_more_often_than_every_5_minutes_and_long_ones_first_near_half_their_median():
    short, long = solve(150, 0.5, COSTS), solve(6000, 0.5, COSTS)
    gaps = [b - a for a, b in itertools.pairwise(short.checks_s)]
    assert max(gaps[:5]) < 150
    assert 0.4 * 6000 < long.checks_s[0] < 0.8 * 6000
    # and the gaps grow like the square root of the scale, not the scale: 40 times longer, about 6 times wider
    near_short = min(gaps)
    near_long = min(b - a for a, b in itertools.pairwise(long.checks_s))
    assert 3 < near_long / near_short < 12


@pytest.mark.parametrize("per_call_s", [15.0, 30.0, 90.0])
def test_the_knob_trades_calls_for_detection_delay(per_call_s):
    base = Costs(per_call_s, 282.0, 0.0, 1e9, 300.0)
    cheap = Costs(per_call_s * 2, 282.0, 0.0, 1e9, 300.0)
    dear, thrifty = solve(1200, 0.5, base), solve(1200, 0.5, cheap)
    assert thrifty.calls < dear.calls and thrifty.delay_s > dear.delay_s


def test_the_guard_holds_the_pooled_share_of_late_detections_to_the_fixed_schedules():
    # given the benchmark's mix of sizes, each with its share of the jobs
    weights = {n: math.log((n + 1) / n) / math.log(200) for n in range(1, 200, 3)}
    total = sum(weights.values())
    mix = [(w / total, affine(n), 0.5) for n, w in weights.items()]
    threshold = fixed_p95(mix, 300, 300)
    assert 270 < threshold < 290  # fixed polling's p95 delay: about 95% of its interval
    costs = Costs(90.0, threshold, 15.0, 1800.0, 300.0)
    unguarded = sum(w * solve(m, s, costs).over for w, m, s in mix)
    penalty = calibrate(mix, costs)
    guarded = sum(w * solve(m, s, Costs(90.0, threshold, 15.0, 1800.0, 300.0, penalty)).over for w, m, s in mix)
    # then without the guard far more than 5% of jobs wait longer than that, and with it at most 5%
    assert unguarded > 0.1
    assert guarded <= checking.OVER_SHARE
    # and it costs calls: the guard is not free
    calls = [
        sum(w * solve(m, s, c).calls for w, m, s in mix)
        for c in (costs, Costs(90.0, threshold, 15.0, 1800.0, 300.0, penalty))
    ]
    assert calls[1] > calls[0]


def test_refresh_keeps_the_plans_while_the_fit_stays_put_and_replans_when_it_moves():
    policy = Policy(per_call_s=90.0, first_s=300.0, every_s=300.0, min_gap_s=15.0, max_gap_s=1800.0)
    history = observed(workload(300))
    first = refresh(history, policy, min_observations=20)
    again = refresh(history, policy, min_observations=20, previous=first)
    assert again.plans["job:guide"] is first.plans["job:guide"]
    slower = [Observation(o.group, o.units, o.lower_s * 2, o.upper_s * 2) for o in history]
    moved = refresh(slower, policy, min_observations=20, previous=first)
    assert moved.plans["job:guide"] is not first.plans["job:guide"]
    a, b = first.predict("job:guide", 50), moved.predict("job:guide", 50)
    assert a is not None and b is not None
    assert 1.8 < b.median_s / a.median_s < 2.2
    assert b.checks_s[0] > 1.2 * a.checks_s[0]


# --- when it looks ------------------------------------------------------------------

PLAN = (600.0, 700.0, 820.0, 960.0)


def test_looks_follow_the_plan_and_fall_back_to_the_fixed_interval_past_it():
    s = settings(poll_min_interval_s=15, poll_max_interval_s=1800)
    p = Prediction(700, 0.3, PLAN)
    assert tagging.first_look(p, settings=s) == 600
    waits = [tagging.after_status(PROCESSING, settings=s, prediction=p, elapsed_s=t).delay_s for t in PLAN[:-1]]
    assert waits == pytest.approx([100, 120, 140])
    past = tagging.after_status(PROCESSING, settings=s, prediction=p, elapsed_s=960)
    assert past.delay_s == s.poll_interval_s


def test_a_look_a_little_early_or_late_counts_as_its_planned_check():
    # jitter of 10%: the wait of 120 s aimed at 820 may have come at 808 or 832
    assert planned_wait(PLAN, 808, jitter=0.1) == pytest.approx((140, 140))
    assert planned_wait(PLAN, 832, jitter=0.1) == pytest.approx((140, 140))
    # a look off the plan (the plan was re-made since): the plan's spacing where it falls
    assert planned_wait(PLAN, 760, jitter=0.1) == pytest.approx((120, 120))
    # before the plan's first check (a slowdown moved the plan later): to its first check
    assert planned_wait(PLAN, 300, jitter=0.1) == pytest.approx((300, 100))
    assert planned_wait(PLAN, 970, jitter=0.1) is None


def test_jitter_moves_a_jobs_first_planned_look_and_the_later_ones_keep_the_plans_spacing_from_it():
    s = settings(poll_jitter=0.1)
    p = Prediction(700, 0.3, PLAN)
    # the first look, 600 s away, moves by up to 10% of the 100 s gap after it, not of the 600 s
    firsts = [tagging.first_look(p, settings=s) for _ in range(200)]
    assert 590 <= min(firsts) < max(firsts) <= 610
    assert max(firsts) - min(firsts) > 10
    # and from wherever it came, the next is the plan's gap later: no gap the guard holds is stretched
    for first in (591.0, 609.0):
        assert tagging.after_status(PROCESSING, settings=s, prediction=p, elapsed_s=first).delay_s == 100


def test_a_planned_wait_is_bounded_by_the_minimum_and_maximum_intervals():
    s = settings(poll_min_interval_s=15, poll_max_interval_s=300)
    tight, wide = Prediction(10, 0.1, (10.0, 12.0, 14.0)), Prediction(9000, 0.5, (5000.0, 6000.0, 7000.0))
    assert tagging.after_status(PROCESSING, settings=s, prediction=tight, elapsed_s=10).delay_s == 15
    assert tagging.first_look(wide, settings=s) == 5000  # the first look may come later than the maximum
    assert tagging.after_status(PROCESSING, settings=s, prediction=wide, elapsed_s=5000).delay_s == 300


def test_scoring_plans_on_its_own_durations_and_within_its_own_interval():
    s = settings(scoring_poll_initial_s=900, scoring_poll_interval_s=600)
    policy = durations.policy_for(durations.SCORING, s)
    assert (policy.first_s, policy.every_s, policy.max_gap_s) == (900, 600, 600)
    # given scoring rounds that take 30 to 60 minutes
    rng = random.Random(5)
    rounds = [(1, 2400 * math.exp(rng.gauss(0, 0.25))) for _ in range(200)]
    forecast = refresh(observed(rounds, 600, group="scoring"), policy, min_observations=20)
    assert forecast.model.fits["scoring"].form == "constant"
    p = forecast.predict("scoring", 1)
    assert p is not None
    first = scoring.first_look(p, settings=s)
    assert 1200 < first < 2400
    later = scoring.after_status(
        MediaScoringStatus.PROCESSING, error_polls=0, settings=s, prediction=p, elapsed_s=first
    )
    assert later.delay_s <= 600
    fixed = scoring.after_status(MediaScoringStatus.PROCESSING, error_polls=0, settings=s)
    assert fixed.delay_s == 600


# --- the real pipeline --------------------------------------------------------------


def test_a_jobs_looks_follow_its_plan(fleet):
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

        plan = fleet.run_until(predicted, what="a prediction for a 40-asset job").checks_s
        request_id = f"predicted-{uuid.uuid4()}"
        fleet.create_job(request_id=request_id, assets=assets, fresh=True)
        job = fleet.wait_for_job(request_id, timeout=60)
    finally:
        # The simulator is the tier's for the whole session: later tests' jobs take their usual time.
        processing = {"processing_per_asset_s": config["processing_per_asset_s"]}
        requests.post(f"{sim.url}/_sim/config", json=processing, timeout=5).raise_for_status()

    # then each of its status checks came when the plan said (a dispatcher pass, 0.1 s, after it)
    assert job.state is JobState.COMPLETE
    record = requests.get(f"{sim.url}/_sim/jobs/{job.vidmob_job_id}", timeout=5).json()
    with session_scope() as s:
        looks = s.scalars(
            select(ApiAttempt.attempted_at).where(ApiAttempt.job_id == job.id, ApiAttempt.method == "GET")
        ).all()
    elapsed = sorted((look - job.submitted_at).total_seconds() for look in looks)
    assert all(any(-0.05 < t - c < 0.5 for c in plan) for t in elapsed), (elapsed, plan[:6])
    # and the first one near the finish, not 0.3 s after submission
    took_s = record["done_at"] - record["created_at"]
    assert took_s * 0.5 < elapsed[0], (elapsed, took_s)
    # and few checks were spent: the fixed 0.3 s would have made about a dozen
    assert job.poll_count <= 4
    # and the tags were stored soon after Vidmob finished
    assert job.completed_at.timestamp() - record["done_at"] < 2.5


def test_the_polling_benchmark_runs_at_a_smoke_size():
    # no timing or target is asserted at this size: only that every schedule is measured side by side
    command = [sys.executable, "bench/bench_polling.py", "--jobs", "35", "--knobs", "90"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    rows = {line.rsplit(None, 6)[0]: line.split()[-6:] for line in lines if line[:1].isalpha()}
    for knob in ("90",):
        for schedule in ("adaptive", "oracle", "oracle, no guard"):
            calls, mean, p95, *ratios = rows[f"{schedule}, {knob} s/call"]
            assert float(calls) >= 1 and float(mean) >= 0 and float(p95) >= 0 and len(ratios) == 3, schedule
    assert rows["fixed 5 min"][3:] == ["1.000", "1.000", "1.000"]
    assert sum(line.startswith("adaptive: ") for line in lines) == 2
    assert sum(line.startswith("workload ") for line in lines) == 2
    assert any(line.startswith("drift: the model's shift") for line in lines)
