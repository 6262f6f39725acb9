"""Adaptive polling against the fixed 5 minutes and an oracle, on one workload, side by side.

    python bench/bench_polling.py [--jobs 2000] [--seed 9] [--knobs 15,16,17,18,20,30,60,90,120,150,180,210,240]

2,000 tagging jobs; assets per job log-uniform from 1 to 200; a job's duration is (2 min + 30 s per asset)
times log-normal noise with sigma 0.5, which no scheduler is told. Jobs arrive as a Poisson stream, one
every 30 s on average (about 50 in flight). On the same jobs and seeds:

- fixed: the product's fixed schedule (APERTURE_POLL_SCHEDULE=fixed): 5 minutes, then every 5, +-10%;
- adaptive: the product's adaptive schedule (the default), learning from the jobs of this run as they
  finish, cold start included: the same model and plans (services/durable/prediction.py, checking.py),
  refreshed from the finished jobs at most every APERTURE_POLL_MODEL_REFRESH_S, as a worker does from
  PostgreSQL; one row per value of the knob APERTURE_POLL_DELAY_PER_CALL_S (the frontier);
- oracle: the same plans made from each job's true distribution (its true median and sigma, not its
  duration), at the same knob values: what no learner can beat; "oracle, no guard" is the plan without
  the p95 guard (the optimal checking problem's own frontier);
- then the same for a log-log workload (median 60 s * assets ** 0.7), to show the model form chosen;
- and the drift case: every duration 3 times longer for the jobs submitted during one hour, then back.

This is a discrete-event simulation on a simulated clock: the decisions are the product's own code
(services/tagging/policy.py first_look and after_status), the clock and Vidmob are simulated. Detection
delay: from the job's finish to the status call that saw it COMPLETE. Status calls: every status call,
the one that saw COMPLETE included. tests/test_polling.py checks on the real pipeline that a job's looks
follow its plan.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import platform
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from clients.tags import TagsJobState, TagsJobStatus
from config import Settings
from services.durable import durations
from services.durable.checking import OVER_SHARE, Forecast, Plans, plans_for, refresh
from services.durable.policy import LookAgain
from services.durable.prediction import Fit, Observation, Prediction
from services.tagging import policy

GROUP = "job:guide"
PROCESSING = TagsJobStatus(TagsJobState.PROCESSING)
TARGET_CALLS_AT_SAME_DELAY = 0.67
TARGET_DELAY_AT_SAME_CALLS = 0.55
DRIFT_FACTOR = 3.0
DRIFT_HOURS = 1.0
WINDOW_S = 1800.0


@dataclass(frozen=True)
class Job:
    arrives_s: float
    assets: int
    duration_s: float
    median_s: float  # of its distribution: what the oracle knows


@dataclass(frozen=True)
class Result:
    name: str
    calls_per_job: float
    mean_delay_s: float
    p95_delay_s: float


@dataclass
class Run:
    calls: list[int]
    delays: list[float]
    finished_at: list[float]
    learner: Learner | None


def affine(assets: int) -> float:
    return 120.0 + 30.0 * assets


def power(assets: int) -> float:
    return 60.0 * assets**0.7


def workload(n: int, seed: int, median: Callable[[int], float] = affine, arrival_gap_s: float = 30.0) -> list[Job]:
    """Sizes and noise drawn by stratified sampling (each of n equal-probability strata once, shuffled):
    the sample follows the distributions closely at any seed, so the figures mean the same in every run."""
    rng = random.Random(seed)
    strata = [(i + 0.5) / n for i in range(n)]
    sizes = [min(200, int(math.exp(p * math.log(201)))) for p in strata]
    noise = [math.exp(0.5 * statistics.NormalDist().inv_cdf(p)) for p in strata]
    rng.shuffle(sizes)
    rng.shuffle(noise)
    jobs, at = [], 0.0
    for assets, factor in zip(sizes, noise, strict=True):
        at += rng.expovariate(1 / arrival_gap_s)
        m = median(max(1, assets))
        jobs.append(Job(at, max(1, assets), m * factor, m))
    return jobs


def drifted(jobs: list[Job], start_s: float) -> list[Job]:
    """Every job submitted within DRIFT_HOURS of ``start_s`` takes DRIFT_FACTOR times longer."""
    end_s = start_s + DRIFT_HOURS * 3600
    return [
        Job(j.arrives_s, j.assets, j.duration_s * DRIFT_FACTOR, j.median_s * DRIFT_FACTOR)
        if start_s <= j.arrives_s < end_s
        else j
        for j in jobs
    ]


class Learner:
    """What a worker process holds: the forecast, rebuilt from the latest finished jobs at most every
    ``poll_model_refresh_s`` (in the product, one query; here, the run's own finished jobs)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = durations.policy_for(durations.TAGGING, settings)
        self.finished: list[tuple[float, int, float, float]] = []  # submitted at, units, lower, upper
        self.in_flight: dict[int, Job] = {}  # submitted, not yet seen done, by index
        self.forecast = Forecast()
        self.refreshed_at = -math.inf
        self.fitted_on = -1
        self.fits = 0
        self.fit_seconds = 0.0
        self.shifts: list[tuple[float, float]] = []  # (when, the fitted recent shift)

    def forecast_at(self, now: float) -> Forecast:
        if now - self.refreshed_at < self.settings.poll_model_refresh_s:
            return self.forecast
        self.refreshed_at = now
        if len(self.finished) == self.fitted_on:
            return self.forecast  # no job finished since: the same rows, the same model (the fit is skipped)
        started = time.perf_counter()
        self.fitted_on = len(self.finished)
        latest = sorted(self.finished, reverse=True)[: self.settings.poll_model_jobs]  # newest first, as the query
        history = [Observation(GROUP, units, lower, upper, now - at) for at, units, lower, upper in latest]
        polling = [(GROUP, job.assets) for job in self.in_flight.values()][: self.settings.poll_model_jobs]
        self.forecast = refresh(
            history,
            self.policy,
            min_observations=self.settings.poll_model_min_jobs,
            in_flight=polling,
            previous=self.forecast,
        )
        self.fit_seconds += time.perf_counter() - started
        self.fits += 1
        fitted = self.forecast.model.fits.get(GROUP)
        if fitted is not None:
            self.shifts.append((now, fitted.shift))
        return self.forecast

    def predict(self, now: float, job: Job) -> Prediction | None:
        return self.forecast_at(now).predict(GROUP, job.assets)


class Oracle:
    """The plans made from each job's true distribution (sigma 0.5 and its own median)."""

    def __init__(self, jobs: list[Job], settings: Settings, *, guard: bool) -> None:
        settings = settings.model_copy(update={"poll_p95_guard": guard})
        # it knows the truth: no margin for a model's errors
        policy_ = replace(durations.policy_for(durations.TAGGING, settings), over_share=OVER_SHARE)
        # The true form: a Fit whose median is each job's own (the jobs' sizes fix it), for the mix and the guard
        sizes = tuple(sorted(Counter(j.assets for j in jobs).items()))
        medians = {j.assets: j.median_s for j in jobs}
        truth = _TrueFit("truth", (), 0.5, 0.0, len(jobs), sizes=sizes, medians=medians)
        self.plans: Plans = plans_for(truth, policy_)

    def predict(self, now: float, job: Job) -> Prediction | None:
        return Prediction(job.median_s, 0.5, self.plans.checks(job.assets))


@dataclass(frozen=True)
class _TrueFit(Fit):
    """The truth as a fit: each size's own median, sigma 0.5."""

    medians: dict[int, float] = field(default_factory=dict)

    def median_s(self, units: int) -> float:
        return self.medians[units]


def run(jobs: list[Job], settings: Settings, seed: int, scheduler: Learner | Oracle | None) -> Run:
    """Poll every job as the product would; each job's status calls, detection delay and finish."""
    random.seed(seed)  # the jitter
    calls = [0] * len(jobs)
    delays = [0.0] * len(jobs)
    last_look = [0.0] * len(jobs)
    events: list[tuple[float, int]] = []
    for i, job in enumerate(jobs):
        heapq.heappush(events, (job.arrives_s, ~i))  # ~i: a submission (before any look at that time)
    learner = scheduler if isinstance(scheduler, Learner) else None
    while events:
        now, key = heapq.heappop(events)
        i = ~key if key < 0 else key
        job = jobs[i]
        prediction = scheduler.predict(now, job) if scheduler is not None else None
        if key < 0:
            if learner is not None:
                learner.in_flight[i] = job
            heapq.heappush(events, (now + policy.first_look(prediction, settings=settings), i))
            continue
        calls[i] += 1
        elapsed = now - job.arrives_s
        if elapsed >= job.duration_s:
            delays[i] = elapsed - job.duration_s
            if learner is not None:
                learner.finished.append((job.arrives_s, job.assets, last_look[i], elapsed))
                del learner.in_flight[i]
            continue
        last_look[i] = elapsed
        decision = policy.after_status(PROCESSING, settings=settings, prediction=prediction, elapsed_s=elapsed)
        assert isinstance(decision, LookAgain)
        heapq.heappush(events, (now + decision.delay_s, i))
    finished = [j.arrives_s + j.duration_s for j in jobs]
    return Run(calls, delays, finished, learner)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def summarize(name: str, done: Run) -> Result:
    return Result(name, statistics.fmean(done.calls), statistics.fmean(done.delays), p95(done.delays))


def print_table(results: list[Result], fixed: Result) -> None:
    print(f"{'schedule':<30}{'calls/job':>10}{'mean delay':>12}{'p95 delay':>11}{'calls':>8}{'mean':>7}{'p95':>7}")
    print(f"{'':<30}{'':>10}{'(s)':>12}{'(s)':>11}{'(ratio against fixed)':>22}")
    for r in results:
        print(
            f"{r.name:<30}{r.calls_per_job:>10.2f}{r.mean_delay_s:>12.0f}{r.p95_delay_s:>11.0f}"
            f"{r.calls_per_job / fixed.calls_per_job:>8.3f}{r.mean_delay_s / fixed.mean_delay_s:>7.3f}"
            f"{r.p95_delay_s / fixed.p95_delay_s:>7.3f}"
        )


def operating_points(results: list[Result], fixed: Result) -> tuple[Result | None, Result | None]:
    """The fewest calls at no more mean delay, and the least mean delay at no more calls, p95 no worse."""
    fair = [r for r in results if r.p95_delay_s <= fixed.p95_delay_s]
    same_delay = [r for r in fair if r.mean_delay_s <= fixed.mean_delay_s]
    same_calls = [r for r in fair if r.calls_per_job <= fixed.calls_per_job]
    return (
        min(same_delay, key=lambda r: r.calls_per_job) if same_delay else None,
        min(same_calls, key=lambda r: r.mean_delay_s) if same_calls else None,
    )


def base_settings() -> Settings:
    """The product's polling defaults, whatever this process's environment says."""
    polling = [name for name in Settings.model_fields if name.startswith("poll_")]
    return Settings(**{name: Settings.model_fields[name].default for name in polling})


def frontier(jobs: list[Job], knobs: list[float], seed: int) -> tuple[Result, list[Result], list[Learner]]:
    base = base_settings()
    fixed = summarize("fixed 5 min", run(jobs, base.model_copy(update={"poll_schedule": "fixed"}), seed, None))
    rows: list[Result] = []
    learners: list[Learner] = []
    for knob in knobs:
        settings = base.model_copy(update={"poll_delay_per_call_s": knob})
        learner = Learner(settings)
        rows.append(summarize(f"adaptive, {knob:g} s/call", run(jobs, settings, seed, learner)))
        learners.append(learner)
        for guard, name in ((True, "oracle"), (False, "oracle, no guard")):
            oracle = Oracle(jobs, settings, guard=guard)
            rows.append(summarize(f"{name}, {knob:g} s/call", run(jobs, settings, seed, oracle)))
    return fixed, rows, learners


def along(points: list[tuple[float, float]], x: float) -> float | None:
    """y at ``x`` on the piecewise-linear curve through ``points`` (sorted by x), None outside it."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def report_frontier(rows: list[Result], fixed: Result) -> None:
    """Each scheduler's frontier (its knob values) read at fixed polling's calls and at its mean delay:
    the comparison at exactly the same calls or delay, which the knob values only bracket."""
    for who in ("adaptive", "oracle", "oracle, no guard"):
        mine = [r for r in rows if r.name.rsplit(",", 1)[0] == who]
        calls = [(r.calls_per_job / fixed.calls_per_job, r.mean_delay_s / fixed.mean_delay_s) for r in mine]
        p95s = [(r.calls_per_job / fixed.calls_per_job, r.p95_delay_s / fixed.p95_delay_s) for r in mine]
        at_delay = along([(d, c) for c, d in calls], 1.0)
        at_calls = along(calls, 1.0)
        p95_at_delay = along(p95s, at_delay) if at_delay is not None else None
        p95_at_calls = along(p95s, 1.0)

        def show(value: float | None) -> str:
            return "outside the knob values" if value is None else f"{value:.3f}"

        print(
            f"{who} frontier: calls at fixed's mean delay {show(at_delay)} (p95 {show(p95_at_delay)}); "
            f"mean delay at fixed's calls {show(at_calls)} (p95 {show(p95_at_calls)})"
        )


def report_targets(rows: list[Result], fixed: Result) -> None:
    for who in ("adaptive", "oracle", "oracle, no guard"):
        mine = [r for r in rows if r.name.rsplit(",", 1)[0] == who]
        if who == "oracle, no guard":
            fair = [Result(r.name, r.calls_per_job, r.mean_delay_s, 0.0) for r in mine]  # no p95 condition
            same_delay, same_calls = operating_points(fair, fixed)
        else:
            same_delay, same_calls = operating_points(mine, fixed)
        for label, found, attribute, target in (
            ("calls at no more mean delay", same_delay, "calls_per_job", TARGET_CALLS_AT_SAME_DELAY),
            ("mean delay at no more calls", same_calls, "mean_delay_s", TARGET_DELAY_AT_SAME_CALLS),
        ):
            condition = "" if who == "oracle, no guard" else " (and p95 no worse)"
            if found is None:
                print(f"{who}: {label}{condition}: no knob value qualifies")
                continue
            value = getattr(found, attribute) / getattr(fixed, attribute)
            verdict = f" (target <= {target:g}: {'met' if value <= target else 'MISSED'})" if who == "adaptive" else ""
            print(f"{who}: {label}{condition}: {value:.3f} of fixed, {found.name}{verdict}")


def ratios(result: Result, fixed: Result) -> str:
    return (
        f"{result.calls_per_job / fixed.calls_per_job:.3f} / {result.mean_delay_s / fixed.mean_delay_s:.3f} / "
        f"{result.p95_delay_s / fixed.p95_delay_s:.3f}"
    )


def model_forms(seed: int, jobs_n: int, knob: float) -> None:
    """Which form the model chose on each workload, and what that costs against the oracle."""
    base = base_settings().model_copy(update={"poll_delay_per_call_s": knob})
    for name, median in (("linear in assets", affine), ("log-log", power)):
        jobs = workload(jobs_n, seed, median)
        fixed = summarize("fixed", run(jobs, base.model_copy(update={"poll_schedule": "fixed"}), seed, None))
        learner = Learner(base)
        adaptive = summarize("adaptive", run(jobs, base, seed, learner))
        oracle = summarize("oracle", run(jobs, base, seed, Oracle(jobs, base, guard=True)))
        fitted = learner.forecast.model.fits.get(GROUP)
        form = "none" if fitted is None else fitted.form
        print(
            f"workload {name}: form chosen {form}; calls / mean delay / p95 against fixed: "
            f"adaptive {ratios(adaptive, fixed)}, oracle {ratios(oracle, fixed)} ({knob:g} s/call)"
        )


def drift_case(jobs_n: int, seed: int, knob: float) -> None:
    """Durations 3 times longer for one hour of submissions, then back: per half hour of submissions,
    the p95 delay of each schedule on the same jobs, and from when the adaptive one is back within the
    guard (its p95 no worse than fixed's, in that half hour and every later one shown)."""
    calm = workload(jobs_n, seed)
    start = 0.4 * calm[-1].arrives_s
    jobs = drifted(calm, start)
    base = base_settings().model_copy(update={"poll_delay_per_call_s": knob})
    fixed = run(jobs, base.model_copy(update={"poll_schedule": "fixed"}), seed, None)
    learner = Learner(base)
    adaptive = run(jobs, base, seed, learner)
    print(
        f"drift: durations x{DRIFT_FACTOR:g} for the jobs submitted from {start / 3600:.1f} h to "
        f"{start / 3600 + DRIFT_HOURS:.1f} h, then back ({knob:g} s/call); by half hour of submission:"
    )
    print(f"{'submitted (h from the slowdown)':<32}{'jobs':>6}{'fixed p95':>11}{'adaptive p95':>14}{'shift':>8}")
    back_at: float | None = None
    for w in range(-2, 9):
        low, high = start + w * WINDOW_S, start + (w + 1) * WINDOW_S
        members = [i for i, j in enumerate(jobs) if low <= j.arrives_s < high]
        if len(members) < 5:
            continue
        fixed_p95, adaptive_p95 = p95([fixed.delays[i] for i in members]), p95([adaptive.delays[i] for i in members])
        shifts = [s for at, s in learner.shifts if low <= at < high]
        shift = f"{math.exp(statistics.fmean(shifts)):.2f}x" if shifts else "-"
        window = f"{w * WINDOW_S / 3600:+.1f} to {(w + 1) * WINDOW_S / 3600:+.1f}"
        print(f"{window:<32}{len(members):>6}{fixed_p95:>11.0f}{adaptive_p95:>14.0f}{shift:>8}")
        if w >= 0:
            if adaptive_p95 > fixed_p95:
                back_at = None
            elif back_at is None:
                back_at = w * WINDOW_S
    noticed = next((at for at, s in learner.shifts if at >= start and s > math.log(1.5)), None)
    print(
        "drift: the model's shift first above 1.5x "
        + (f"{(noticed - start) / 60:.0f} min after the slowdown began" if noticed is not None else "never")
        + "; p95 no worse than fixed's for the jobs submitted from "
        + (f"{back_at / 60:.0f} min after it began on" if back_at is not None else "never (MISSED)")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument(
        "--knobs", default="15,16,17,18,20,30,60,90,120,150,180,210,240", help="APERTURE_POLL_DELAY_PER_CALL_S values"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    knobs = [float(k) for k in args.knobs.split(",")]
    jobs = workload(args.jobs, args.seed)
    span_h = (max(j.arrives_s + j.duration_s for j in jobs) - jobs[0].arrives_s) / 3600
    print(
        f"polling: {len(jobs):,} jobs over {span_h:.1f} h of simulated time, "
        f"median {statistics.median(j.assets for j in jobs):g} assets, "
        f"mean duration {statistics.fmean(j.duration_s for j in jobs):.0f} s; "
        f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}"
    )
    fixed, rows, learners = frontier(jobs, knobs, args.seed)
    print_table([fixed, *rows], fixed)
    report_targets(rows, fixed)
    report_frontier(rows, fixed)
    default = base_settings().poll_delay_per_call_s
    model_forms(args.seed, args.jobs, default)
    drift_case(args.jobs, args.seed, default)
    fits = sum(learner.fits for learner in learners)
    fit_s = sum(learner.fit_seconds for learner in learners)
    print(
        f"model refreshes: {fits:,}, {1000 * fit_s / max(fits, 1):.1f} ms each on average (fit and plans); "
        f"whole run {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
