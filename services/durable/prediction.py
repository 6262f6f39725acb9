"""How long remote work takes, learned from the work that finished: pure functions (tests/test_polling.py).

Each finished row gives an observation: its size (``units``: a tagging job's asset count, 1 for a scoring
round) and an interval that holds its true duration, from the last look that found it unfinished
(``lower_s``, 0 if the first look found it done) to the look that found it done (``upper_s``). The true
finish is somewhere in between, so an observation counts as its interval's midpoint.

The model, per group (a kind and its dialect: ``job:guide``, ``job:media``, ``scoring``), is a log-normal
duration whose median depends on the size:

- a line ``log(duration) = a + b * log(units)`` fitted by Theil-Sen (the median of the pairwise slopes: up to
  29% of the observations can be wild without moving it), then
- per size bucket (powers of two: 1, 2-3, 4-7, ... 128-255) with enough observations, the bucket's own median
  instead of the line, so a curve that is not a straight line in log-log (a fixed overhead plus a cost per
  asset) is followed where there is data; between buckets the medians are interpolated in log-log;
- ``sigma`` from the median absolute deviation of the residuals (robust to outliers), with a floor.

A group with fewer than ``min_observations`` has no model: the caller keeps the fixed schedule (the guide's
5 minutes) until it has.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

# MAD of a normal sample times this estimates its standard deviation.
_MAD_TO_SIGMA = 1.4826
_SIGMA_FLOOR = 0.1
_BUCKETS = 8  # 1, 2-3, ..., 128-255 assets (a job holds at most 200)
_MIN_PER_BUCKET = 8
_MAX_PAIRS_SAMPLE = 120  # Theil-Sen on at most this many points: 7k pairs


@dataclass(frozen=True)
class Observation:
    group: str
    units: int
    lower_s: float
    upper_s: float

    @property
    def duration_s(self) -> float:
        lower = min(max(self.lower_s, 0.0), self.upper_s)
        return max((lower + self.upper_s) / 2, 1e-3)


_NORMAL = statistics.NormalDist()


@dataclass(frozen=True)
class Prediction:
    """A log-normal duration: ``median_s * exp(sigma * Z)``."""

    median_s: float
    sigma: float

    def cdf(self, seconds: float) -> float:
        if seconds <= 0:
            return 0.0
        return _NORMAL.cdf(math.log(seconds / self.median_s) / self.sigma)

    def quantile(self, p: float) -> float:
        return self.median_s * math.exp(self.sigma * _NORMAL.inv_cdf(min(max(p, 1e-9), 1 - 1e-9)))


@dataclass(frozen=True)
class Curve:
    """log(median duration) at each bucket's centre (log units), interpolated between them."""

    log_units: tuple[float, ...]
    log_median: tuple[float, ...]
    sigma: float
    observations: int

    def predict(self, units: int) -> Prediction:
        x = math.log(max(units, 1))
        xs, ys = self.log_units, self.log_median
        i = bisect.bisect_left(xs, x)
        if i == 0:
            y = ys[0] + (x - xs[0]) * _slope(xs, ys, 0)
        elif i == len(xs):
            y = ys[-1] + (x - xs[-1]) * _slope(xs, ys, len(xs) - 2)
        else:
            y = ys[i - 1] + (x - xs[i - 1]) * _slope(xs, ys, i - 1)
        return Prediction(math.exp(y), self.sigma)


def _slope(xs: tuple[float, ...], ys: tuple[float, ...], i: int) -> float:
    return (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])


@dataclass(frozen=True)
class DurationModel:
    curves: dict[str, Curve] = field(default_factory=dict)

    def predict(self, group: str, units: int) -> Prediction | None:
        """The duration of work of this size, or None while the group has too few observations."""
        curve = self.curves.get(group)
        return None if curve is None else curve.predict(units)


def bucket_of(units: int) -> int:
    return min(max(units, 1).bit_length() - 1, _BUCKETS - 1)


def _bucket_centre(bucket: int) -> float:
    low, high = 2**bucket, min(2 ** (bucket + 1) - 1, 200)
    return (math.log(low) + math.log(high)) / 2


def theil_sen(points: list[tuple[float, float]], seed: int = 0) -> tuple[float, float]:
    """(intercept, slope) of the Theil-Sen line; slope 0 when every x is the same."""
    if len(points) > _MAX_PAIRS_SAMPLE:
        points = random.Random(seed).sample(points, _MAX_PAIRS_SAMPLE)
    slopes = [
        (y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1 :] if abs(x2 - x1) > 1e-9
    ]
    slope = statistics.median(slopes) if slopes else 0.0
    intercept = statistics.median(y - slope * x for x, y in points)
    return intercept, slope


def fit_curve(observations: list[Observation], durations: list[float]) -> Curve:
    """The curve through ``durations`` (one per observation, in seconds)."""
    points = [(math.log(max(o.units, 1)), math.log(d)) for o, d in zip(observations, durations, strict=True)]
    intercept, slope = theil_sen(points)
    by_bucket: dict[int, list[float]] = {}
    for o, (_, y) in zip(observations, points, strict=True):
        by_bucket.setdefault(bucket_of(o.units), []).append(y)
    xs = tuple(_bucket_centre(b) for b in range(_BUCKETS))
    ys = tuple(
        statistics.median(by_bucket[b]) if len(by_bucket.get(b, ())) >= _MIN_PER_BUCKET else intercept + slope * x
        for b, x in enumerate(xs)
    )
    curve = Curve(xs, ys, 1.0, len(observations))
    residuals = [y - math.log(curve.predict(o.units).median_s) for o, (_, y) in zip(observations, points, strict=True)]
    centre = statistics.median(residuals)
    mad = statistics.median(abs(r - centre) for r in residuals)
    return Curve(xs, ys, max(_MAD_TO_SIGMA * mad, _SIGMA_FLOOR), len(observations))


def impute(observation: Observation, prediction: Prediction, rng: random.Random) -> float:
    """A duration drawn from ``prediction`` within the observation's interval: where in it the work
    more likely ended (a job first seen done at 10 minutes likely ended near 10, not at 5)."""
    low, high = prediction.cdf(max(observation.lower_s, 0.0)), prediction.cdf(observation.upper_s)
    if high - low < 1e-9:
        return observation.duration_s
    return min(max(prediction.quantile(rng.uniform(low, high)), observation.lower_s), observation.upper_s)


def fit_group(observations: list[Observation], rounds: int = 2, seed: int = 0) -> Curve:
    """Fit on the intervals' midpoints, then refit ``rounds`` times on durations drawn within each
    interval from the last fit (stochastic EM): wide intervals (a job first seen done at its first
    look) neither drag the medians towards their midpoints nor inflate sigma."""
    rng = random.Random(seed)
    curve = fit_curve(observations, [o.duration_s for o in observations])
    for _ in range(rounds):
        curve = fit_curve(observations, [max(impute(o, curve.predict(o.units), rng), 1e-3) for o in observations])
    return curve


def fit(observations: Iterable[Observation], *, min_observations: int) -> DurationModel:
    """A curve per group that has at least ``min_observations`` (and at least 2)."""
    groups: dict[str, list[Observation]] = {}
    for o in observations:
        if o.upper_s > 0:
            groups.setdefault(o.group, []).append(o)
    return DurationModel({g: fit_group(obs) for g, obs in groups.items() if len(obs) >= max(min_observations, 2)})
