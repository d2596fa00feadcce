"""Change detectors on a topic's stream of negative / not-negative predictions.

Each detector's threshold is derived from a target false-alarm rate (false alarms per 10,000
texts) through its in-control average run length, ARL0 = 10,000 / rate, computed exactly enough
by the Markov-chain method (Brook & Evans 1972): the statistic's range is cut into cells, the
chain's expected steps to absorption solved as one linear system, and the threshold bisected.
No simulation, so a threshold is deterministic and costs milliseconds.

- `BernoulliCusum`: log-likelihood-ratio CUSUM of Bernoulli(p0) against Bernoulli(p1 = shift·p0)
  (Reynolds & Stoumbos 1999), the fastest detector of a step to p1 for a given ARL0.
- `BernoulliEwma`: a one-sided EWMA chart of the same 0/1 stream, reset at p0 from below.
- `VolumeSurge`: a closed window's count against a Poisson quantile of the EWMA of past counts.

A base rate estimated from a topic's first texts is uncertain, and a chart built on an
underestimate alarms far more often than its target (5x on 200 texts at 1 per 10,000: the
CUSUM's reference value sits only ~1.4 standard errors of a 200-text estimate above p0).
By default (`estimation="updating"`) the base rate is re-estimated from all of the topic's
texts each time their count grows by a quarter, and both charts re-armed (statistics kept),
so the error shrinks as the topic is watched. `estimation="bootstrap"` keeps the warm-up's
estimate and raises the thresholds by its parametric bootstrap instead (Gandy & Kvaløy 2013):
on 200 texts the CUSUM then needs 2.3x (1 per 10,000) to 12x (0.1) its plug-in threshold,
a far longer delay, so it is an option, not the default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

PER_TEXTS = 10_000  # false-alarm rates are "per 10,000 texts"
ESTIMATIONS = ("updating", "bootstrap", "plug-in")
_CELLS = 300

Step = Callable[[np.ndarray, int], np.ndarray]


def run_length(step: Step, threshold: float, p: float, low: float, start: float) -> float:
    """Expected number of observations until `step` first reaches `threshold`, each
    observation 1 with probability p (Markov chain over cells of [low, threshold))."""
    width = (threshold - low) / _CELLS
    centres = low + (np.arange(_CELLS) + 0.5) * width
    Q = np.zeros((_CELLS, _CELLS))
    rows = np.arange(_CELLS)
    for x, prob in ((0, 1.0 - p), (1, p)):
        nxt = step(centres, x)
        inside = nxt < threshold
        cells = np.clip(((nxt - low) / width).astype(int), 0, _CELLS - 1)
        np.add.at(Q, (rows[inside], cells[inside]), prob)
    lengths = np.linalg.solve(np.eye(_CELLS) - Q, np.ones(_CELLS))
    return float(lengths[min(int((start - low) / width), _CELLS - 1)])


def calibrate(step: Step, p0: float, arl0: float, low: float, high: float, start: float) -> float:
    """The threshold in (low, high] whose in-control run length is `arl0` (bisection)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # 300x300 solves: threads only contend on a busy machine
        return _bisect(step, p0, arl0, low, high, start)


def _bisect(step: Step, p0: float, arl0: float, low: float, high: float, start: float) -> float:
    lo, hi = low + 1e-9, high
    while run_length(step, hi, p0, low, start) < arl0:
        lo, hi = hi, low + 2 * (hi - low)
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if run_length(step, mid, p0, low, start) < arl0 else (lo, mid)
    return hi


def arl0_for(rate_per_10k: float) -> float:
    if rate_per_10k <= 0:
        raise ValueError(
            f"the false-alarm rate must be > 0 per {PER_TEXTS:,} texts; got {rate_per_10k}"
        )
    return PER_TEXTS / rate_per_10k


_UNITS = 20  # lattice units in the smaller of the CUSUM's two steps


def cusum_steps(p0: float, p1: float) -> tuple[float, int, int]:
    """(unit, up, down): the log-likelihood-ratio steps rounded to a lattice of `unit`, so the
    statistic lives on integers and its run length is exact (Reynolds & Stoumbos 1999). The
    rounding changes a step by at most 1/(2·_UNITS) of the smaller one."""
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    unit = min(up, -down) / _UNITS
    return unit, round(up / unit), round(down / unit)


def lattice_run_length(up: int, down: int, threshold: int, p: float) -> float:
    """Expected observations until the integer CUSUM max(0, s + up | down) reaches
    `threshold` from 0, each observation 1 with probability p (exact: states 0..threshold-1)."""
    from scipy.sparse import coo_matrix, identity
    from scipy.sparse.linalg import spsolve

    states = np.arange(threshold)
    rows, cols, probs = [], [], []
    for step, prob in ((up, p), (down, 1.0 - p)):
        nxt = np.maximum(0, states + step)
        inside = nxt < threshold
        rows.append(states[inside])
        cols.append(nxt[inside])
        probs.append(np.full(int(inside.sum()), prob))
    Q = coo_matrix(
        (np.concatenate(probs), (np.concatenate(rows), np.concatenate(cols))),
        shape=(threshold, threshold),
    )
    system = (identity(threshold, format="csc") - Q.tocsc()).tocsc()
    return float(spsolve(system, np.ones(threshold))[0])


@lru_cache(maxsize=256)
def cusum_threshold(p0: float, p1: float, arl0: float) -> float:
    """The least threshold (a multiple of the lattice unit) whose in-control run length is at
    least `arl0` (bisection over integers; the run length grows with the threshold)."""
    unit, up, down = cusum_steps(p0, p1)
    lo, hi = 1, 2 * up
    while lattice_run_length(up, down, hi, p0) < arl0:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if lattice_run_length(up, down, mid, p0) < arl0 else (lo, mid)
    return hi * unit


@lru_cache(maxsize=256)
def ewma_limit(p0: float, lam: float, arl0: float) -> float:
    return calibrate(_ewma_step(p0, lam), p0, arl0, p0, min(1.0, p0 + 0.1), p0)


def _ewma_step(p0: float, lam: float) -> Step:
    def step(z: np.ndarray, x: int) -> np.ndarray:
        return np.maximum(p0, (1 - lam) * z + lam * x)

    return step


def _ewma_sigma(p0: float, lam: float) -> float:
    """The EWMA's asymptotic standard deviation: limits are p0 + c·sigma, c common to all p0."""
    return math.sqrt(lam / (2 - lam) * p0 * (1 - p0))


# --- thresholds for a base rate estimated from a warm-up -----------------------------------

_TAIL = 1e-4  # bootstrap estimates less likely than this on either side are left out


def bootstrap(negatives: int, seen: int) -> tuple[np.ndarray, np.ndarray]:
    """(estimates, weights): the parametric bootstrap of the warm-up estimate k/n, i.e. k*/n
    for k* ~ Binomial(n, k/n), enumerated exactly (the central 1 - 2e-4 of its mass)."""
    from scipy.stats import binom

    p = _clip(negatives / seen)
    k = np.arange(int(binom.ppf(_TAIL, seen, p)), int(binom.isf(_TAIL, seen, p)) + 1)
    weights = binom.pmf(k, seen, p)
    return np.array([_clip(x) for x in k / seen]), weights / weights.sum()


def _least(meets: Callable[[float], bool], start: float, tol: float) -> float:
    """The least x >= start/2 (to `tol`) with `meets(x)`, for a `meets` monotone in x."""
    lo, hi = start / 2, start
    while not meets(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return hi


def _in_control(
    lengths: Callable[[float], np.ndarray], weights: np.ndarray, arl0: float, alpha: float | None
) -> Callable[[float], bool]:
    """Whether threshold h keeps the bootstrap charts in control: their mean false-alarm rate
    (1 / run length) at most 1 / arl0, or, with `alpha`, a run length of at least arl0 for
    all but a share alpha of them (Gandy & Kvaløy's guaranteed conditional performance)."""

    def meets(h: float) -> bool:
        arl = lengths(h)
        if alpha is None:
            return float(weights @ (1 / arl)) <= 1 / arl0
        return float(weights @ (arl >= arl0)) >= 1 - alpha

    return meets


@lru_cache(maxsize=1024)
def cusum_threshold_estimated(
    negatives: int, seen: int, shift: float, arl0: float, alpha: float | None = None
) -> float:
    """The CUSUM threshold (nats) for p0 estimated as negatives/seen: each bootstrap estimate
    p* builds its own chart (p*, shift·p*), run against p0 = negatives/seen as the truth."""
    p0 = _rounded(negatives / seen)
    estimates, weights = bootstrap(negatives, seen)
    steps = [cusum_steps(*_cusum_shares(p, shift)) for p in estimates]

    def lengths(h: float) -> np.ndarray:
        return np.array(
            [lattice_run_length(up, down, max(1, round(h / unit)), p0) for unit, up, down in steps]
        )

    plug_in = cusum_threshold(*_cusum_shares(p0, shift), arl0)
    return _least(_in_control(lengths, weights, arl0, alpha), plug_in, 0.01)


@lru_cache(maxsize=1024)
def ewma_limit_estimated(
    negatives: int, seen: int, lam: float, arl0: float, alpha: float | None = None
) -> float:
    """The EWMA limit for p0 estimated as negatives/seen: limits are p* + c·sigma(p*) for each
    bootstrap estimate p*, run against p0 as the truth; returns p0 + c·sigma(p0)."""
    p0 = _rounded(negatives / seen)
    estimates, weights = bootstrap(negatives, seen)

    def lengths(c: float) -> np.ndarray:
        out = []
        for p in estimates:
            limit = min(0.999, p + c * _ewma_sigma(p, lam))
            out.append(run_length(_ewma_step(p, lam), limit, p0, p, p))
        return np.array(out)

    plug_in = (ewma_limit(p0, lam, arl0) - p0) / _ewma_sigma(p0, lam)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        c = _least(_in_control(lengths, weights, arl0, alpha), plug_in, 0.01)
    return min(0.999, p0 + c * _ewma_sigma(p0, lam))


def _cusum_shares(p0: float, shift: float) -> tuple[float, float]:
    p0 = _rounded(p0)
    return p0, round(_clip(min(shift * p0, (1 + p0) / 2)), 4)


def _rounded(p0: float) -> float:
    """Base rates to 3 decimals (far below a base rate's error on a warm-up): thresholds are
    cached per base rate, and re-estimates of many topics then share them."""
    return round(_clip(p0), 3)


@dataclass
class BernoulliCusum:
    """Signals when the share of 1s has risen from p0 towards p1; resets after a signal. The
    statistic moves on the lattice of `cusum_steps`, the one its threshold was computed on."""

    p0: float
    p1: float
    h: float
    s: float = 0.0

    def __post_init__(self) -> None:
        self._unit, self._up, self._down = cusum_steps(self.p0, self.p1)
        self._h = round(self.h / self._unit)

    @classmethod
    def tuned(cls, p0: float, shift: float, rate_per_10k: float) -> BernoulliCusum:
        p0, p1 = _cusum_shares(p0, shift)
        return cls(p0, p1, cusum_threshold(p0, p1, arl0_for(rate_per_10k)))

    def update(self, x: int) -> bool:
        n = max(0, round(self.s / self._unit) + (self._up if x else self._down))
        if n >= self._h:
            self.s = 0.0
            return True
        self.s = n * self._unit
        return False


@dataclass
class BernoulliEwma:
    """Signals when the EWMA of the 0/1 stream crosses its upper limit; resets to p0."""

    p0: float
    lam: float
    limit: float
    z: float = -1.0

    @classmethod
    def tuned(cls, p0: float, lam: float, rate_per_10k: float) -> BernoulliEwma:
        p0 = _rounded(p0)
        return cls(p0, lam, ewma_limit(p0, lam, arl0_for(rate_per_10k)), p0)

    def update(self, x: int) -> bool:
        self.z = max(self.p0, (1 - self.lam) * self.z + self.lam * x)
        if self.z >= self.limit:
            self.z = self.p0
            return True
        return False


@dataclass
class VolumeSurge:
    """A closed window's count against the EWMA of earlier windows' counts: a surge is a count
    above the Poisson quantile that keeps the per-text false-alarm rate, at least `ratio` times
    the mean and at least `min_volume`."""

    rate_per_10k: float
    ratio: float = 2.0
    min_volume: int = 20
    lam: float = 0.1
    warmup: int = 6
    mean: float = 0.0
    windows: int = 0

    def limit(self) -> float:
        from scipy.stats import poisson

        alpha = min(0.5, self.rate_per_10k / PER_TEXTS * max(self.mean, 1.0))
        return float(max(poisson.isf(alpha, max(self.mean, 1e-3)), self.ratio * self.mean))

    def update(self, count: int) -> tuple[bool, float]:
        if self.windows == 0 and count == 0:  # before the topic's first text: no baseline yet
            return False, 0.0
        limit = self.limit()
        surge = self.windows >= self.warmup and count >= max(limit, self.min_volume)
        if not surge:  # a surge does not raise the baseline it is judged against
            self.mean = (
                count if self.windows == 0 else (1 - self.lam) * self.mean + self.lam * count
            )
            self.windows += 1
        return surge, limit


@dataclass
class DetectorSettings:
    """How a topic is watched; every threshold follows from `rate_per_10k`."""

    rate_per_10k: float = 1.0
    shift: float = 1.5  # the rise of the negative share CUSUM is tuned to detect (x base rate)
    lam: float = 0.03  # EWMA weight of the newest text
    warmup: int = 200  # texts of a topic that estimate its base rate before detection starts
    base_rate: float | None = None  # known base rate: no warm-up
    # How a base rate estimated from the warm-up is used: "updating" (re-estimated from all
    # texts each time their count grows `growth`-fold, up to `until`), "bootstrap" (the warm-up's,
    # thresholds from its parametric bootstrap) or "plug-in" (the warm-up's, as if exact).
    estimation: str = "updating"
    growth: float = 1.25
    until: int = 51_200
    # With "bootstrap": None, the expected false-alarm rate is the target; a number, the rate
    # is at most the target with probability 1 - alpha (a guarantee paid for in delay).
    alpha: float | None = None
    min_volume: int = 20  # per window, for the volume detector
    surge_ratio: float = 2.0


@dataclass
class TopicDetectors:
    """The detectors of one topic, with their state (saved as JSON between batches)."""

    settings: DetectorSettings
    seen: int = 0
    negatives: int = 0
    cusum: BernoulliCusum | None = None
    ewma: BernoulliEwma | None = None
    volume: VolumeSurge | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    estimate: list[int] = field(default_factory=lambda: [0, 0])  # the base rate's counts
    mark: list[int] = field(default_factory=lambda: [0, 0])  # the counts at the last estimate

    def __post_init__(self) -> None:
        s = self.settings
        if self.volume is None:
            self.volume = VolumeSurge(s.rate_per_10k, s.surge_ratio, s.min_volume)
        if s.base_rate is not None and self.cusum is None:
            self.cusum, self.ewma = armed(s)

    def update(self, negative: bool) -> list[str]:
        """Feed one text; the names of the detectors that signalled."""
        self.seen += 1
        self.negatives += int(negative)
        if self.cusum is None or self.ewma is None:
            if self.seen >= self.settings.warmup:
                self.estimate = self.mark = [self.negatives, self.seen]
                self.cusum, self.ewma = armed(self.settings, self.negatives, self.seen)
            return []
        if reestimate_due(self.settings, self.seen):
            self.estimate = screened(self.estimate, self.mark, self.negatives, self.seen)
            self.mark = [self.negatives, self.seen]
            before = (self.cusum, self.ewma)
            k, n = self.estimate
            self.cusum, self.ewma = armed(self.settings, k, n, before)
        fired = []
        if self.cusum.update(int(negative)):
            fired.append("cusum")
        if self.ewma.update(int(negative)):
            fired.append("ewma")
        return fired

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "negatives": self.negatives,
            "cusum": asdict(self.cusum) if self.cusum else None,
            "ewma": asdict(self.ewma) if self.ewma else None,
            "volume": asdict(self.volume) if self.volume else None,
            "extra": self.extra,
            "estimate": self.estimate,
            "mark": self.mark,
        }

    @classmethod
    def from_dict(cls, settings: DetectorSettings, data: dict[str, Any]) -> TopicDetectors:
        counts = [data["negatives"], data["seen"]]  # states saved before re-estimation
        return cls(
            settings,
            data["seen"],
            data["negatives"],
            BernoulliCusum(**data["cusum"]) if data["cusum"] else None,
            BernoulliEwma(**data["ewma"]) if data["ewma"] else None,
            VolumeSurge(**data["volume"]) if data["volume"] else None,
            data.get("extra", {}),
            list(data.get("estimate", counts)),
            list(data.get("mark", counts)),
        )


_SCREEN = 3.09  # z of a one-sided test at 0.1%: stretches this far above the base are left out


def screened(estimate: list[int], mark: list[int], negatives: int, seen: int) -> list[int]:
    """The base rate's counts after a re-estimate: the texts since the last one join them
    unless their negative share is above the base rate's by a two-proportion z-test at 0.1%
    (Phase I screening: a shift in progress must not become the base it is judged against;
    two-sample, so an estimate from few texts does not reject, and lock in, honest ones)."""
    k, n = negatives - mark[0], seen - mark[1]
    if n == 0:
        return list(estimate)
    pooled = (estimate[0] + k) / (estimate[1] + n)
    spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n + 1 / estimate[1]))
    if (k / n - estimate[0] / estimate[1]) / spread > _SCREEN:
        return list(estimate)
    return [estimate[0] + k, estimate[1] + n]


def reestimate_due(settings: DetectorSettings, seen: int) -> bool:
    """Whether the `seen`-th text re-estimates the base rate: at warm-up · growth^j, j >= 1."""
    s = settings
    if s.base_rate is not None or s.estimation != "updating" or seen > s.until:
        return False
    return seen in _checkpoints(s.warmup, s.growth, s.until)


@lru_cache(maxsize=64)
def _checkpoints(warmup: int, growth: float, until: int) -> frozenset[int]:
    points, x = set(), float(warmup)
    while x <= until:
        x *= growth
        points.add(max(round(x), warmup + 1))
    return frozenset(points)


def armed(
    settings: DetectorSettings,
    negatives: int = 0,
    seen: int = 0,
    before: tuple[BernoulliCusum, BernoulliEwma] | None = None,
) -> tuple[BernoulliCusum, BernoulliEwma]:
    """A topic's CUSUM and EWMA: on the known base rate when `settings` has one, else on the
    estimate negatives/seen; the statistics of the charts `before`, when given, carry over."""
    s = settings
    if s.estimation not in ESTIMATIONS:
        raise ValueError(f"estimation must be one of {ESTIMATIONS}; got {s.estimation!r}")
    p0 = s.base_rate if s.base_rate is not None else negatives / seen
    cusum = BernoulliCusum.tuned(p0, s.shift, s.rate_per_10k)
    ewma = BernoulliEwma.tuned(p0, s.lam, s.rate_per_10k)
    if s.base_rate is None and s.estimation == "bootstrap":
        arl0 = arl0_for(s.rate_per_10k)
        h = cusum_threshold_estimated(negatives, seen, s.shift, arl0, s.alpha)
        limit = ewma_limit_estimated(negatives, seen, s.lam, arl0, s.alpha)
        cusum, ewma = BernoulliCusum(cusum.p0, cusum.p1, h), BernoulliEwma(ewma.p0, s.lam, limit)
        ewma.z = ewma.p0
    if before is not None:
        cusum.s, ewma.z = before[0].s, max(ewma.p0, before[1].z)
    return cusum, ewma


def _clip(p: float) -> float:
    return min(max(p, 0.005), 0.95)


@dataclass(frozen=True)
class Share:
    """A window's negative share: observed, corrected for the classifier's errors, with 95%
    intervals (Wilson on the observed share, carried through the correction)."""

    n: int
    observed: float
    low: float
    high: float
    corrected: float | None = None
    corrected_low: float | None = None
    corrected_high: float | None = None


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def negative_share(k: int, n: int, tpr: float | None = None, fpr: float | None = None) -> Share:
    """Adjusted classify-and-count (Forman 2008): true share = (observed - fpr) / (tpr - fpr),
    with tpr and fpr of the negative class from the validation confusion matrix."""
    observed = k / n if n else 0.0
    low, high = wilson(k, n)
    if tpr is None or fpr is None or tpr - fpr < 0.05:
        return Share(n, observed, low, high)

    def adjust(p: float) -> float:
        return min(1.0, max(0.0, (p - fpr) / (tpr - fpr)))

    return Share(n, observed, low, high, adjust(observed), adjust(low), adjust(high))


def rates_from_confusion(confusion: list[list[int]], negative: int) -> tuple[float, float] | None:
    """(tpr, fpr) of class `negative` from a confusion matrix (rows true, columns predicted)."""
    C = np.asarray(confusion, dtype=float)
    positives, others = C[negative].sum(), C.sum() - C[negative].sum()
    if positives == 0 or others == 0:
        return None
    tpr = C[negative, negative] / positives
    fpr = (C[:, negative].sum() - C[negative, negative]) / others
    return float(tpr), float(fpr)
