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
GUARD_SHARE = 0.04
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
    """The optimal plan for a log-normal duration, by dynamic programming: from the check at grid
    point ``k`` (the work not done by then), the next check at ``j`` costs one call (made if the work
    was not done at ``k``) plus its expected delay and penalty; the value of ``k`` is the cheapest ``j``
    plus the value of ``j``. State 0 is the submission."""
    per_delay = 1.0 / costs.per_call_s
    log_median = math.log(median_s)
    zs = [_Z_LOW + (_Z_HIGH - _Z_LOW) * k / (_POINTS - 1) for k in range(_POINTS)]
    times = [0.0] + [median_s * math.exp(sigma * z) for z in zs]
    done = [0.0] + [normal_cdf(z) for z in zs]
    # E[T; T < t] of the log-normal, so the expected delay of a gap is t_j (F_j - F_k) - (M_j - M_k)
    mean_factor = median_s * math.exp(sigma * sigma / 2)
    moment = [0.0] + [mean_factor * normal_cdf(z - sigma) for z in zs]
    # P(T < t_j - threshold): the work that, found at t_j, waited longer than the threshold
    late = [
        normal_cdf((math.log(t - costs.threshold_s) - log_median) / sigma) if t > costs.threshold_s else 0.0
        for t in times
    ]
    last = len(times) - 1
    value = [0.0] * len(times)
    after = [last] * len(times)
    survival_last = 1.0 - done[last]
    value[last] = survival_last * (1.0 + per_delay * costs.tail_gap_s / 2)
    penalty = costs.penalty
    for k in range(last - 1, -1, -1):
        fk, mk, tk = done[k], moment[k], times[k]
        earliest, latest = tk + costs.min_gap_s, (tk + costs.max_gap_s) if k else math.inf
        best, arg = math.inf, last
        stop = min(last, k + _WINDOW) if k else last
        for j in range(k + 1, stop + 1):
            tj = times[j]
            if tj < earliest and j < last:
                continue
            if tj > latest and j > k + 1 and best < math.inf:
                break
            cost = per_delay * (tj * (done[j] - fk) - (moment[j] - mk)) + value[j]
            if penalty and late[j] > fk:
                cost += penalty * (late[j] - fk)
            if cost < best:
                best, arg = cost, j
        value[k] = (1.0 - fk) + best
        after[k] = arg
    checks, calls, delay, over = [], 0.0, 0.0, 0.0
    k = 0
    while k < last:
        j = after[k]
        checks.append(times[j])
        calls += 1.0 - done[k]
        delay += times[j] * (done[j] - done[k]) - (moment[j] - moment[k])
        over += max(0.0, late[j] - done[k])
        k = j
    calls += survival_last  # the tail: negligible mass, counted as one more call
    return Plan(tuple(checks), calls, delay, over)


def fixed_over(median_s: float, sigma: float, first_s: float, every_s: float, threshold_s: float) -> float:
    """P(delay > threshold_s) on the fixed schedule (a check at ``first_s``, then every ``every_s``)."""
    log_median = math.log(median_s)

    def cdf(t: float) -> float:
        return normal_cdf((math.log(t) - log_median) / sigma) if t > 0 else 0.0

    total, previous, check = 0.0, 0.0, first_s
    horizon = median_s * math.exp(sigma * _Z_HIGH)
    while previous < horizon:
        total += max(0.0, cdf(check - threshold_s) - cdf(previous))
        previous, check = check, check + every_s
    return total


def fixed_p95(mix: Sequence[tuple[float, float, float]], first_s: float, every_s: float) -> float:
    """The fixed schedule's pooled p95 delay over ``mix`` ((weight, median_s, sigma) per kind of work),
    by bisection on P(delay > x) = 5%."""
    low, high = 0.0, every_s
    for _ in range(30):
        mid = (low + high) / 2
        share = sum(w * fixed_over(m, s, first_s, every_s, mid) for w, m, s in mix)
        low, high = (mid, high) if share > OVER_SHARE else (low, mid)
    return high


def calibrate(mix: Sequence[tuple[float, float, float]], costs: Costs, share_at_most: float = OVER_SHARE) -> float:
    """The smallest penalty for which the plans of ``mix`` ((weight, median_s, sigma)) keep the pooled
    P(delay > threshold_s) at most ``share_at_most``: 0 if the unguarded plans already do."""

    def share(penalty: float) -> float:
        guarded = Costs(**{**costs.__dict__, "penalty": penalty})
        return sum(w * solve(m, s, guarded).over for w, m, s in mix)

    if share(0.0) <= share_at_most:
        return 0.0
    low, high = 0.0, 1.0
    while share(high) > share_at_most:
        low, high = high, high * 4
        if high > _PENALTY_MAX:
            return _PENALTY_MAX
    for _ in range(8):  # to within 10%: the share moves little with it by then
        if high - low < 0.1 * high:
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
    # +- this fraction of the plan's spacing moves each look (APERTURE_POLL_JITTER): the guard plans
    # against a threshold this much lower, or the gaps it holds at the threshold would cross it
    jitter: float = 0.0


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


def plans_for(found: Fit, policy: Policy) -> Plans:
    mix = mix_of(found)
    threshold = fixed_p95(mix, policy.first_s, policy.every_s) * (1 - policy.jitter)
    costs = Costs(policy.per_call_s, threshold, policy.min_gap_s, policy.max_gap_s, policy.every_s)
    if policy.guard:
        costs = replace(costs, penalty=calibrate(mix, costs, policy.over_share))
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


def refresh(
    observations: Iterable[Observation], policy: Policy, *, min_observations: int, previous: Forecast | None = None
) -> Forecast:
    """Refit on the history (newest first) and re-plan the groups whose fit moved; a group whose fit
    stayed within ``REPLAN_TOLERANCE`` keeps its fit and plans."""
    earlier = previous or Forecast()
    model = fit(observations, min_observations=min_observations, previous=earlier.model)
    plans = {}
    for group, found in model.fits.items():
        kept = earlier.plans.get(group)
        plans[group] = kept if kept is not None and _close(found, kept.fit) else plans_for(found, policy)
    return Forecast(model, plans)
