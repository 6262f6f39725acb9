"""How long remote work takes, learned from the work that finished: pure functions (tests/test_polling.py).

Each finished row gives an observation: its size (``units``: a tagging job's asset count, 1 for a scoring
round), the interval that holds its true duration, from the last look that found it unfinished
(``lower_s``, 0 if the first look found it done) to the look that found it done (``upper_s``), and its age
when read (``age_s``): the history holds only the work that had finished by then, so recent work is
short work, and the likelihood says so (each observation's probability is conditional on T < age).

The model, per group (a kind and its dialect: ``job:guide``, ``job:media``, ``scoring``), is a log-normal
duration, ``log T = log median(units) + sigma * Z``, fitted by maximum likelihood on the intervals as they
are (interval-censored: no midpoint is assumed), in each of these forms of the median:

- ``affine``: ``alpha + beta * units`` (a fixed overhead plus a cost per asset);
- ``loglog``: ``exp(a) * units ** b`` (a power law);
- ``constant``: one median for every size (the only form tried with fewer than 3 sizes observed).

The form kept is the one with the lowest AIC (2 * parameters - 2 * log-likelihood): ``affine`` and
``loglog`` have the same number of parameters, so between them the better censored log-likelihood wins.
A share of ``CONTAMINATION`` (0.5%) of the likelihood is a log-uniform duration over 1 s to 11 days, so a stuck
job or one found done at once cannot drag the median or inflate sigma: its weight in the fit falls as it
becomes implausible under the log-normal.

A prediction's sigma is the predictive one: the noise's, plus the variance of the estimated median at
that size (from the inverse of the information), so the first few dozen jobs, or a size far from those
seen, are planned for a wider distribution.

Drift: once the fit is made, one more parameter, ``shift`` (log), is the offset of the latest
``DRIFT_WINDOW`` observations from it, kept only if a likelihood-ratio test says it is real (chi-squared
above ``DRIFT_EVIDENCE``). When Vidmob slows down, its first late finishers move the prediction before
the slow jobs are a large part of the history.

A group with fewer than ``min_observations`` has no model: the caller keeps the fixed schedule.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

CONTAMINATION = 0.005
_CONTAMINATION_SPAN = math.log(1e6)  # log-uniform over 1 s .. 1e6 s
DRIFT_WINDOW = 40
DRIFT_EVIDENCE = 10.8  # chi-squared with 1 degree of freedom at p = 0.001: tested at every refresh
_SIGMA_FLOOR = 0.05
_MAX_ITERATIONS = 60

FORMS = ("affine", "loglog", "constant")
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def normal_pdf(z: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * z * z)


@dataclass(frozen=True)
class Observation:
    group: str
    units: int
    lower_s: float
    upper_s: float
    age_s: float = math.inf  # from submission to when the history was read


@dataclass(frozen=True)
class Prediction:
    """A log-normal duration, ``median_s * exp(sigma * Z)``, and the checks planned for it (seconds after
    submission, services/durable/checking.py): empty when no plan was made (the caller falls back)."""

    median_s: float
    sigma: float
    checks_s: tuple[float, ...] = ()

    def cdf(self, seconds: float) -> float:
        if seconds <= 0:
            return 0.0
        return normal_cdf(math.log(seconds / self.median_s) / self.sigma)

    def quantile(self, p: float) -> float:
        low, high = -40.0, 40.0
        for _ in range(80):
            mid = (low + high) / 2
            low, high = (mid, high) if normal_cdf(mid) < p else (low, mid)
        return self.median_s * math.exp(self.sigma * (low + high) / 2)


# --- the forms of the median: log median and its gradient in the form's parameters ------------


def _affine(params: Sequence[float], units: int) -> tuple[float, tuple[float, ...]]:
    fixed, per_unit = math.exp(params[0]), math.exp(params[1]) * units
    total = fixed + per_unit
    return math.log(total), (fixed / total, per_unit / total)


def _loglog(params: Sequence[float], units: int) -> tuple[float, tuple[float, ...]]:
    log_units = math.log(max(units, 1))
    return params[0] + params[1] * log_units, (1.0, log_units)


def _constant(params: Sequence[float], units: int) -> tuple[float, tuple[float, ...]]:
    return params[0], (1.0,)


_LOCATIONS: dict[str, Callable[[Sequence[float], int], tuple[float, tuple[float, ...]]]] = {
    "affine": _affine,
    "loglog": _loglog,
    "constant": _constant,
}


@dataclass(frozen=True)
class Fit:
    """One group's fitted duration: the median's form and parameters, sigma, the recent ``shift``."""

    form: str
    params: tuple[float, ...]
    sigma: float
    loglik: float
    observations: int
    shift: float = 0.0
    # (units, count) of the observations, and of the work in flight when the caller adds it (checking.
    # refresh): the mix of sizes submitted, which the fleet's pooled p95 is over
    sizes: tuple[tuple[int, float], ...] = ()
    # of the median's parameters (from the inverse of the information): how well each size's median is known
    covariance: tuple[tuple[float, ...], ...] = ()

    @property
    def aic(self) -> float:
        return 2 * (len(self.params) + 1) - 2 * self.loglik

    def median_s(self, units: int) -> float:
        return math.exp(_LOCATIONS[self.form](self.params, max(units, 1))[0] + self.shift)

    def spread(self, units: int) -> float:
        """The predictive sigma at this size: the noise, the uncertainty of the median's estimate, which
        is wide where few observations are (a size far from those seen, the first few dozen jobs), and a
        recent shift's size: while one is seen, whether the next job is in the new regime or back in the
        old is itself uncertain, and a plan sure of the slow one would first look long after a normal
        job ended."""
        variance = 0.0
        if self.covariance:
            _, gradient = _LOCATIONS[self.form](self.params, max(units, 1))
            variance = sum(
                gi * gj * self.covariance[i][j] for i, gi in enumerate(gradient) for j, gj in enumerate(gradient)
            )
        return math.sqrt(self.sigma**2 + max(variance, 0.0) + self.shift**2)

    def predict(self, units: int) -> Prediction:
        return Prediction(self.median_s(units), self.spread(units))


def _interval(observation: Observation) -> tuple[float, float, float]:
    """log lower (-inf when the first look found it done), log upper, log age."""
    lower = math.log(observation.lower_s) if observation.lower_s > 0 else -math.inf
    age = math.log(observation.age_s) if observation.age_s < math.inf else math.inf
    return lower, math.log(observation.upper_s), age


def _between(z_low: float, z_high: float) -> float:
    if z_low > 0:  # both in the upper tail: from the survival function, without cancellation
        return 0.5 * (math.erfc(z_low / math.sqrt(2)) - math.erfc(z_high / math.sqrt(2)))
    return normal_cdf(z_high) - normal_cdf(z_low)


def _terms(log_low: float, log_high: float, location: float, sigma: float) -> tuple[float, float, float]:
    """P(log_low < log T <= log_high) and its derivatives in the location and in log(sigma)."""
    z_high = (log_high - location) / sigma if log_high < math.inf else math.inf
    z_low = (log_low - location) / sigma if log_low > -math.inf else -math.inf
    pdf_high = normal_pdf(z_high) if z_high < math.inf else 0.0
    pdf_low = normal_pdf(z_low) if z_low > -math.inf else 0.0
    zpdf_high = z_high * pdf_high if z_high < math.inf else 0.0
    zpdf_low = z_low * pdf_low if z_low > -math.inf else 0.0
    return _between(z_low, z_high), (pdf_low - pdf_high) / sigma, zpdf_low - zpdf_high


def _flat(log_low: float, log_high: float) -> float:
    """The contamination's probability of the interval: log-uniform over 1 s .. 1e6 s."""
    low, high = max(log_low, 0.0), min(log_high, _CONTAMINATION_SPAN)
    return max(high - low, 0.0) / _CONTAMINATION_SPAN


def _loglik(
    form: str,
    params: Sequence[float],
    log_sigma: float,
    data: Sequence[tuple[int, float, float, float]],
    shift: float = 0.0,
    want_gradients: bool = True,
) -> tuple[float, list[list[float]]]:
    """The censored, truncated, contaminated log-likelihood and each observation's gradient in
    (params..., log sigma), or in the shift alone when ``params`` are held (``want_gradients`` False)."""
    sigma = math.exp(log_sigma)
    locate = _LOCATIONS[form]
    total, gradients = 0.0, []
    keep = 1.0 - CONTAMINATION
    for units, log_low, log_high, log_age in data:
        location, d_location = locate(params, units)
        location += shift
        p, dp_loc, dp_sig = _terms(log_low, log_high, location, sigma)
        mixed = keep * p + CONTAMINATION * _flat(log_low, log_high)
        mixed = max(mixed, 1e-300)
        g_loc, g_sig = keep * dp_loc / mixed, keep * dp_sig / mixed
        total += math.log(mixed)
        if log_age < math.inf:
            a, da_loc, da_sig = _terms(-math.inf, log_age, location, sigma)
            seen = max(keep * a + CONTAMINATION * _flat(-math.inf, log_age), 1e-300)
            total -= math.log(seen)
            g_loc -= keep * da_loc / seen
            g_sig -= keep * da_sig / seen
        if want_gradients:
            gradients.append([g_loc * d for d in d_location] + [g_sig])
        else:
            gradients.append([g_loc])
    return total, gradients


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (a 2x2 to 3x3 system)."""
    n = len(vector)
    a = [[*row, vector[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        if abs(a[col][col]) < 1e-12:
            a[col][col] = 1e-12
        for r in range(col + 1, n):
            factor = a[r][col] / a[col][col]
            for c in range(col, n + 1):
                a[r][c] -= factor * a[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (a[r][n] - sum(a[r][c] * x[c] for c in range(r + 1, n))) / a[r][r]
    return x


def _maximise(
    value: Callable[[list[float]], tuple[float, list[list[float]]]], start: list[float]
) -> tuple[list[float], float]:
    """BHHH: Newton steps with the outer product of the observations' gradients for the Hessian,
    halved until the likelihood rises."""
    theta = list(start)
    current, gradients = value(theta)
    for _ in range(_MAX_ITERATIONS):
        k = len(theta)
        score = [sum(g[i] for g in gradients) for i in range(k)]
        info = [[sum(g[i] * g[j] for g in gradients) + (1e-6 if i == j else 0.0) for j in range(k)] for i in range(k)]
        step = _solve(info, score)
        size = 1.0
        while size > 1e-4:
            trial = [t + size * s for t, s in zip(theta, step, strict=True)]
            candidate, candidate_gradients = value(trial)
            if candidate >= current - 1e-12:
                break
            size /= 2
        else:
            break
        gain = candidate - current
        theta, current, gradients = trial, candidate, candidate_gradients
        if gain < 1e-4:  # of the log-likelihood: the plans cannot tell the difference
            break
    return theta, current


def _start(form: str, data: Sequence[tuple[int, float, float, float]]) -> list[float]:
    """A first guess from the intervals' upper ends (which are close to the durations)."""
    points = [(units, log_high) for units, _, log_high, _ in data]
    mean_y = sum(y for _, y in points) / len(points)
    spread = math.sqrt(sum((y - mean_y) ** 2 for _, y in points) / len(points)) or 0.5
    log_sigma = math.log(max(spread, 0.2))
    if form == "constant":
        return [mean_y, log_sigma]
    xs = [math.log(max(u, 1)) for u, _ in points]
    mean_x = sum(xs) / len(xs)
    sxx = sum((x - mean_x) ** 2 for x in xs) or 1.0
    slope = sum((x - mean_x) * (y - mean_y) for x, (_, y) in zip(xs, points, strict=True)) / sxx
    if form == "loglog":
        return [mean_y - slope * mean_x, slope, log_sigma]
    # affine: split the median at the mean size into an overhead and a per-unit part by the log-log slope
    mean_units = math.exp(mean_x)
    share = min(max(slope, 0.05), 0.95)  # the per-unit part's share of the median
    median = math.exp(mean_y)
    return [math.log(median * (1 - share)), math.log(median * share / mean_units), log_sigma]


def fit_form(form: str, observations: Sequence[Observation], previous: Fit | None = None) -> Fit:
    """The maximum-likelihood fit of one form, started from ``previous`` when it is of the same form."""
    data = [(o.units, *_interval(o)) for o in observations]
    if previous is not None and previous.form == form:
        start = [*previous.params, math.log(previous.sigma)]
    else:
        start = _start(form, data)

    def value(theta: list[float]) -> tuple[float, list[list[float]]]:
        return _loglik(form, theta[:-1], max(theta[-1], math.log(_SIGMA_FLOOR)), data)

    theta, loglik = _maximise(value, start)
    found = Fit(form, tuple(theta[:-1]), max(math.exp(theta[-1]), _SIGMA_FLOOR), loglik, len(observations))
    sizes = tuple(sorted(Counter(o.units for o in observations).items()))
    return replace(found, covariance=_covariance(value(theta)[1], len(theta) - 1), sizes=sizes)


def _covariance(gradients: list[list[float]], k: int) -> tuple[tuple[float, ...], ...]:
    """The first ``k`` parameters' block of the inverse of the outer-product information."""
    n = len(gradients[0]) if gradients else 0
    info = [[sum(g[i] * g[j] for g in gradients) + (1e-9 if i == j else 0.0) for j in range(n)] for i in range(n)]
    columns = [_solve(info, [1.0 if r == c else 0.0 for r in range(n)]) for c in range(n)]
    return tuple(tuple(columns[j][i] for j in range(k)) for i in range(k))


def drift(fit: Fit, recent: Sequence[Observation]) -> float:
    """The log offset of ``recent`` from ``fit``, or 0 unless the likelihood-ratio test finds it."""
    if not recent:
        return 0.0
    data = [(o.units, *_interval(o)) for o in recent]
    log_sigma = math.log(fit.sigma)

    def value(theta: list[float]) -> tuple[float, list[list[float]]]:
        return _loglik(fit.form, fit.params, log_sigma, data, shift=theta[0], want_gradients=False)

    (shift,), best = _maximise(value, [0.0])
    held, _ = value([0.0])
    return shift if 2 * (best - held) > DRIFT_EVIDENCE else 0.0


def choose(observations: Sequence[Observation], previous: Fit | None = None) -> Fit:
    """The form with the lowest AIC, and the recent shift from it."""
    forms = FORMS if len({o.units for o in observations}) > 2 else ("constant",)
    fits = [fit_form(form, observations, previous) for form in forms]
    best = min(fits, key=lambda f: f.aic)
    # the history is newest first (as the query reads it): its head is the recent work
    shift = drift(best, observations[:DRIFT_WINDOW]) if len(observations) > 2 * DRIFT_WINDOW else 0.0
    return replace(best, shift=shift)


@dataclass(frozen=True)
class DurationModel:
    fits: dict[str, Fit] = field(default_factory=dict)

    def predict(self, group: str, units: int) -> Prediction | None:
        """The duration of work of this size, or None while the group has too few observations."""
        found = self.fits.get(group)
        return None if found is None else found.predict(units)


def fit(
    observations: Iterable[Observation], *, min_observations: int, previous: DurationModel | None = None
) -> DurationModel:
    """A fit per group that has at least ``min_observations`` (and at least 2), newest first; warm-started
    from ``previous`` (the last refresh's model), which only makes it faster."""
    groups: dict[str, list[Observation]] = {}
    for o in observations:
        if o.upper_s > 0 and o.upper_s > o.lower_s and o.age_s >= o.upper_s:
            groups.setdefault(o.group, []).append(o)
    earlier = previous.fits if previous is not None else {}
    return DurationModel(
        {g: choose(obs, earlier.get(g)) for g, obs in groups.items() if len(obs) >= max(min_observations, 2)}
    )
