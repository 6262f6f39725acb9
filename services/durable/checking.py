"""When to check on remote work whose duration has a known distribution: the optimal checking problem.

Each status check costs one call; a check finds the work done if it ended before it, and the detection
delay is the time from the end to that check. For work whose duration ``T`` is log-normal (``median_s``,
``sigma``: services/durable/prediction.py), the plan of check times minimises

    E[calls] + E[delay] / per_call_s  (+ penalty * P(delay > threshold_s), the p95 guard)

(Barlow, Hunter and Proschan, 1963), found by dynamic programming over check times on a grid of the
duration's quantiles. ``per_call_s`` (``APERTURE_POLL_DELAY_PER_CALL_S``) is one figure for the fleet:
the detection delay a call is worth. One value for every job is what minimises the calls for a given
pooled mean delay, so a lower value buys less delay everywhere for more calls everywhere.

The optimum checks short work *more* often than the fixed 5 minutes and long work far less: it skips
the time the work is unlikely to be done in, then checks with gaps that grow like the square root of
the duration's scale. Left alone that lets the longest jobs wait long after their end, so the pooled
p95 of the delay exceeds the fixed schedule's; the guard adds a penalty per job whose delay would
exceed the fixed schedule's own p95 (``threshold_s``), and ``calibrate`` raises it until the share of
such jobs, pooled over the fleet's mix of sizes, is at most 5%, as it is on the fixed schedule.

Pure functions, no clock or session; the durations' model refreshes the plans (``Plans``), so a look
only reads one.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from services.durable.prediction import DurationModel, Fit, Observation, Prediction, fit, normal_cdf

# The grid: check times at these standard-normal quantiles of log(duration). Below -5.2 the work is
# never done (3 in 10 million), above 5.5 always; 150 points put a check within 2% of its optimum
# (at sigma 0.5), which changes the cost by well under 1%.
_Z_LOW, _Z_HIGH, _POINTS = -5.2, 5.5, 150
# From a check, the next is at most this many grid points later (about 3 times the time at sigma 0.5):
# the optimal gaps are far shorter, and the bound keeps a plan at a few milliseconds.
_WINDOW = 80
# The fixed schedule's p95: the share of jobs whose delay exceeds ``threshold_s`` on it.
OVER_SHARE = 0.05
# What a plan made from a learned model aims at instead: the model's errors (a median a few percent
# off, the cold start) let more jobs over the threshold than it predicts.
GUARD_SHARE = 0.047
# The fixed schedule's checks counted for its p95: 400 intervals (33 hours at 5 minutes) cover any
# work a plan is made for, even a cold start's wide sigma, at a bounded cost.
_FIXED_CHECKS = 400
_PENALTY_MAX = 1000.0  # calls: beyond this the guard cannot be met by checking more (min interval binds)


@dataclass(frozen=True)
class Plan:
    """Check times after submission (seconds) and what they cost under the distribution they were made for."""

    checks_s: tuple[float, ...]
    calls: float  # expected status calls per job
    delay_s: float  # expected detection delay
    over: float  # P(delay > threshold_s)


@dataclass(frozen=True)
class Costs:
    """What the fleet pays for: ``per_call_s`` of delay is worth one call; ``penalty`` calls per job
    whose delay exceeds ``threshold_s`` (0: no guard); gaps between checks within ``min_gap_s`` and
    ``max_gap_s`` (the first check may come later); ``tail_gap_s`` after the plan's last check."""

    per_call_s: float
    threshold_s: float
    min_gap_s: float
    max_gap_s: float
    tail_gap_s: float
    penalty: float = 0.0


def solve(median_s: float, sigma: float, costs: Costs) -> Plan:
    """The optimal plan for a log-normal duration, by dynamic programming: from a check at ``t`` (the
    work not done by then), the next check at ``u`` costs one call (made if the work was not done at
    ``t``) plus its expected delay and penalty, plus the value of ``u``. The next check is a point of
    the grid, or exactly ``threshold_s`` after ``t`` (where the guard holds gaps; the grid alone would
    round them down), whose value is interpolated between the grid's. State 0 is the submission."""
    per_delay = 1.0 / costs.per_call_s
    log_median = math.log(median_s)
    mean_factor = median_s * math.exp(sigma * sigma / 2)
    threshold, penalty = costs.threshold_s, costs.penalty

    def cdf(t: float) -> float:
        return normal_cdf((math.log(t) - log_median) / sigma) if t > 0 else 0.0

    def moment_at(t: float) -> float:
        # E[T; T < t] of the log-normal, so the expected delay of a gap is u (F(u) - F(t)) - (M(u) - M(t))
        return mean_factor * normal_cdf((math.log(t) - log_median) / sigma - sigma) if t > 0 else 0.0

    zs = [_Z_LOW + (_Z_HIGH - _Z_LOW) * k / (_POINTS - 1) for k in range(_POINTS)]
    times = [0.0] + [median_s * math.exp(sigma * z) for z in zs]
    done = [0.0] + [normal_cdf(z) for z in zs]
    moment = [0.0] + [mean_factor * normal_cdf(z - sigma) for z in zs]
    # P(T < t - threshold): the work that, found at t, waited longer than the threshold
    late = [cdf(t - threshold) for t in times]
    last = len(times) - 1
    value = [0.0] * len(times)
    value[last] = (1.0 - done[last]) * (1.0 + per_delay * costs.tail_gap_s / 2)

    def value_at(t: float) -> float:
        j = bisect.bisect_left(times, t)
        if j >= last:
            return value[last]
        share = (t - times[j - 1]) / (times[j] - times[j - 1])
        return value[j - 1] + share * (value[j] - value[j - 1])

    def step(t: float, ft: float, mt: float, first: int) -> tuple[float, float, int]:
        """(cost, next check, its grid index or -1 off the grid) of the cheapest next check after ``t``."""
        earliest, latest = t + costs.min_gap_s, (t + costs.max_gap_s) if t > 0 else math.inf
        best, at, index = math.inf, times[last], last
        stop = min(last, first + _WINDOW) if t > 0 else last
        for j in range(first, stop + 1):
            tj = times[j]
            if tj < earliest and j < last:
                continue
            if tj > latest and j > first and best < math.inf:
                break
            cost = per_delay * (tj * (done[j] - ft) - (moment[j] - mt)) + value[j]
            if penalty and late[j] > ft:
                cost += penalty * (late[j] - ft)
            if cost < best:
                best, at, index = cost, tj, j
        held = t + threshold
        if penalty and t > 0 and earliest <= held <= latest and held < times[last]:
            cost = per_delay * (held * (cdf(held) - ft) - (moment_at(held) - mt)) + value_at(held)
            if cost < best:
                best, at, index = cost, held, -1
        return best, at, index

    for k in range(last - 1, -1, -1):
        value[k] = (1.0 - done[k]) + step(times[k], done[k], moment[k], k + 1)[0]
    checks, calls, delay, over = [], 0.0, 0.0, 0.0
    t, ft, mt, first = 0.0, 0.0, 0.0, 1
    while t < times[last]:
        _, u, index = step(t, ft, mt, first)
        fu, mu = (done[index], moment[index]) if index >= 0 else (cdf(u), moment_at(u))
        checks.append(u)
        calls += 1.0 - ft
        delay += u * (fu - ft) - (mu - mt)
        over += max(0.0, cdf(u - threshold) - ft)
        t, ft, mt = u, fu, mu
        first = index + 1 if index >= 0 else bisect.bisect_right(times, u)
    calls += 1.0 - done[last]  # the tail: negligible mass, counted as one more call
    return Plan(tuple(checks), calls, delay, over)


def fixed_over(median_s: float, sigma: float, first_s: float, every_s: float, threshold_s: float) -> float:
    """P(delay > threshold_s) on the fixed schedule (a check at ``first_s``, then every ``every_s``)."""
    log_median = math.log(median_s)

    def cdf(t: float) -> float:
        return normal_cdf((math.log(t) - log_median) / sigma) if t > 0 else 0.0

    total, previous, check = 0.0, 0.0, first_s
    horizon = median_s * math.exp(sigma * _Z_HIGH)
    for _ in range(_FIXED_CHECKS):
        if previous >= horizon:
            break
        total += max(0.0, cdf(check - threshold_s) - cdf(previous))
        previous, check = check, check + every_s
    return total


def fixed_p95(mix: Sequence[tuple[float, float, float]], first_s: float, every_s: float) -> float:
    """The fixed schedule's pooled p95 delay over ``mix`` ((weight, median_s, sigma) per kind of work),
    by bisection on P(delay > x) = 5%."""
    low, high = 0.0, every_s
    for _ in range(16):  # to 1/65536 of the interval
        mid = (low + high) / 2
        share = sum(w * fixed_over(m, s, first_s, every_s, mid) for w, m, s in mix)
        low, high = (mid, high) if share > OVER_SHARE else (low, mid)
    return high


def calibrate(
    mix: Sequence[tuple[float, float, float]], costs: Costs, share_at_most: float = OVER_SHARE, near: float = 0.0
) -> float:
    """The smallest penalty for which the plans of ``mix`` ((weight, median_s, sigma)) keep the pooled
    P(delay > threshold_s) at most ``share_at_most``: 0 if the unguarded plans already do. ``near``
    (the last refresh's penalty) starts the search beside it: a refreshed model moves it little."""

    def share(penalty: float) -> float:
        guarded = replace(costs, penalty=penalty)
        return sum(w * solve(m, s, guarded).over for w, m, s in mix)

    low, high = 0.0, 1.0
    if near > 0:
        if share(near) > share_at_most:
            low, high = near, near * 1.25
        else:
            low, high = near / 1.25, near
            if share(low) <= share_at_most:
                low, high = 0.0, low
    if low == 0.0 and share(0.0) <= share_at_most:
        return 0.0
    while share(high) > share_at_most:
        low, high = high, high * 4
        if high > _PENALTY_MAX:
            return _PENALTY_MAX
    for _ in range(12):  # to within 3%: the share moves little with it by then
        if high - low < 0.03 * high:
            break
        mid = math.sqrt(low * high) if low > 0 else high / 4
        low, high = (mid, high) if share(mid) > share_at_most else (low, mid)
    return high


# --- plans for a fleet: one per size, from the fitted model -------------------------------------

# A refit that moves no median (at any size seen) nor sigma by more than this keeps the plans it has:
# the cost of a plan is flat near its optimum, and re-planning costs milliseconds per size.
REPLAN_TOLERANCE = 0.02


@dataclass(frozen=True)
class Policy:
    """One kind's polling: the knob, the fixed schedule the guard compares with, the gaps' bounds."""

    per_call_s: float
    first_s: float  # the fixed schedule: the first check
    every_s: float  # and the interval after it
    min_gap_s: float
    max_gap_s: float
    guard: bool = True  # the pooled p95 delay no worse than the fixed schedule's
    over_share: float = GUARD_SHARE  # the share of jobs over the fixed p95 the plans aim at


def size_bucket(units: int) -> int:
    """Half an octave of sizes: 1, 2, 3, 4-5, 6-7, 8-11, ...: a plan for the bucket's typical size
    is within a few percent of each size's own, enough to set the guard's penalty from."""
    return int(2 * math.log2(max(units, 1)) + 1e-9)


@dataclass
class Plans:
    """The plans for one group's fitted durations: the guard's threshold and penalty, set once for the
    fleet's mix of sizes, and each size's plan, made on first use (a few milliseconds) and kept."""

    fit: Fit
    costs: Costs
    _made: dict[int, tuple[float, ...]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def checks(self, units: int) -> tuple[float, ...]:
        found = self._made.get(units)
        if found is None:
            predicted = self.fit.predict(units)
            found = solve(predicted.median_s, predicted.sigma, self.costs).checks_s
            with self._lock:
                self._made[units] = found
        return found


def mix_of(found: Fit) -> list[tuple[float, float, float]]:
    """(weight, median, sigma) per size bucket of the observations: the pooled figures' weights."""
    buckets: dict[int, list[tuple[int, float]]] = {}
    for units, count in found.sizes:
        buckets.setdefault(size_bucket(units), []).append((units, count))
    total = sum(count for _, count in found.sizes)
    mix = []
    for members in buckets.values():
        weight = sum(c for _, c in members)
        typical = math.exp(sum(c * math.log(found.median_s(u)) for u, c in members) / weight)
        spread = sum(c * found.spread(u) for u, c in members) / weight
        mix.append((weight / total, typical, spread))
    return mix


def plans_for(found: Fit, policy: Policy, previous: Plans | None = None) -> Plans:
    """The threshold (the fixed schedule's pooled p95 on ``found``), the guard's penalty (searched for
    beside ``previous``'s), and the plans to be made with them."""
    mix = mix_of(found)
    threshold = fixed_p95(mix, policy.first_s, policy.every_s)
    costs = Costs(policy.per_call_s, threshold, policy.min_gap_s, policy.max_gap_s, policy.every_s)
    if policy.guard:
        near = previous.costs.penalty if previous is not None else 0.0
        costs = replace(costs, penalty=calibrate(mix, costs, policy.over_share, near))
    return Plans(found, costs)


def _close(new: Fit, old: Fit) -> bool:
    if new.form != old.form or abs(new.sigma / old.sigma - 1) > REPLAN_TOLERANCE:
        return False
    return all(abs(new.median_s(u) / old.median_s(u) - 1) <= REPLAN_TOLERANCE for u, _ in new.sizes)


@dataclass(frozen=True)
class Forecast:
    """What a worker process holds for one kind: the fitted durations and their plans."""

    model: DurationModel = field(default_factory=DurationModel)
    plans: dict[str, Plans] = field(default_factory=dict)

    def predict(self, group: str, units: int) -> Prediction | None:
        """The duration of work of this size and its planned checks, or None (too few observations)."""
        plans = self.plans.get(group)
        if plans is None:
            return None
        predicted = plans.fit.predict(units)
        return Prediction(predicted.median_s, predicted.sigma, plans.checks(units))


def with_in_flight(found: Fit, units: Iterable[int]) -> Fit:
    """The fit whose size mix also counts the work still in flight: the history holds the work that
    finished, which in a recent window is the short work; the pooled p95 is over all that was submitted."""
    counts = dict(found.sizes)
    for u in units:
        counts[u] = counts.get(u, 0.0) + 1.0
    return replace(found, sizes=tuple(sorted(counts.items())))


def refresh(
    observations: Iterable[Observation],
    policy: Policy,
    *,
    min_observations: int,
    in_flight: Iterable[tuple[str, int]] = (),
    previous: Forecast | None = None,
) -> Forecast:
    """Refit on the history (newest first), count the sizes ``in_flight`` ((group, units) of the work
    being polled) into each group's mix, and re-plan the groups whose fit moved; a group whose fit
    stayed within ``REPLAN_TOLERANCE`` keeps its fit and plans."""
    earlier = previous or Forecast()
    model = fit(observations, min_observations=min_observations, previous=earlier.model)
    polling: dict[str, list[int]] = {}
    for group, units in in_flight:
        polling.setdefault(group, []).append(units)
    plans = {}
    for group, fitted in model.fits.items():
        found = with_in_flight(fitted, polling.get(group, ()))
        kept = earlier.plans.get(group)
        plans[group] = kept if kept is not None and _close(found, kept.fit) else plans_for(found, policy, kept)
    return Forecast(model, plans)
