"""Quality metrics by name, with 95% bootstrap intervals, and inference speed of a loaded model.

Every metric is registered once: a name (`macro_f1`, `brier`, `recall@10`), the direction in
which it improves, what it needs from a model, and one function. The function scores weighted
examples: a bootstrap resample is the same examples counted 0, 1, 2... times, so one vectorized
call gives the point estimate (all weights 1) and a call on the count matrix all 1000 resamples.
"""

from __future__ import annotations

import contextvars
import difflib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, Protocol, get_args

import numpy as np

from frugalml.config import SpeedConfig
from frugalml.errors import ConfigError, DataError

# What a metric reads: predicted labels, class probabilities, rankings (per query, a score and
# a relevance for each item), or out-of-scope truth with an out-of-scope score per example.
Need = Literal["labels", "probabilities", "rankings", "oos_scores"]


@dataclass(frozen=True)
class Outcomes:
    """What a model produced on one split, one row per example: everything a metric reads.

    Classification gives `y_true`, `y_pred`, `n_classes` and `proba`; its rankings are derived
    (each example is a query whose one relevant item is its true class, ranked by `proba`, so
    recall@k is top-k accuracy). Ranking tasks give `relevance` and `scores` (queries by items,
    relevance ≥ 0); out-of-scope detection gives `is_oos` and `oos_score` (higher: more likely
    out of scope).
    """

    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    n_classes: int | None = None
    proba: np.ndarray | None = None
    relevance: np.ndarray | None = None
    scores: np.ndarray | None = None
    is_oos: np.ndarray | None = None
    oos_score: np.ndarray | None = None
    # per item (a column of `scores`): its share of the training users, for popularity bias
    item_popularity: np.ndarray | None = None

    def __len__(self) -> int:
        present = [v for v in (getattr(self, f.name) for f in fields(self)) if hasattr(v, "shape")]
        return len(present[0]) if present else 0

    def provides(self) -> tuple[Need, ...]:
        has = {
            "labels": self.y_true is not None and self.y_pred is not None,
            "probabilities": self.y_true is not None and self.proba is not None,
            "rankings": (self.relevance is not None and self.scores is not None)
            or (self.y_true is not None and self.proba is not None),
            "oos_scores": self.is_oos is not None and self.oos_score is not None,
        }
        return tuple(need for need in get_args(Need) if has[need])


# fn(outcomes, weights (resamples by examples), **params) -> one value per resample
MetricFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Metric:
    """A registered metric: how to compute it and which way is better."""

    name: str  # as scored and reported: 'macro_f1', 'recall_at_10'
    fn: MetricFn
    higher_is_better: bool
    needs: Need
    description: str
    bounds: tuple[float, float] = (0.0, 1.0)  # the values it can take (a --target must lie in)
    k: int | None = None  # the cut-off of an @k metric

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    @property
    def symbol(self) -> str:
        """How a score relates to the bar it meets: '≥' or '≤'."""
        return "≥" if self.higher_is_better else "≤"

    def compute(self, outcomes: Outcomes, weights: np.ndarray) -> np.ndarray:
        """One value per row of `weights` (NaN where a resample leaves it undefined)."""
        if self.needs not in outcomes.provides():
            raise ConfigError(
                f"metric '{self.name}' needs {self.needs.replace('_', ' ')}; these outcomes "
                f"have {', '.join(outcomes.provides()) or 'nothing'}"
            )
        params = {} if self.k is None else {"k": self.k}
        return np.asarray(self.fn(outcomes, weights, **params), dtype=np.float64)

    def meets(self, value: float, bar: float) -> bool:
        return value >= bar if self.higher_is_better else value <= bar

    def goodness(self, value: float) -> float:
        """Larger is better whatever the direction: for sorting, maxima and frontiers."""
        return value if self.higher_is_better else -value

    def worse_end(self, interval: tuple[float, float]) -> float:
        """The pessimistic end of a confidence interval: what `--strict` compares."""
        return interval[0] if self.higher_is_better else interval[1]


_REGISTRY: dict[str, Metric] = {}
_AT_K = re.compile(r"^(?P<base>[a-z0-9_]+?)(?:@|_at_)(?P<k>\d+|k)$")
DEFAULT_K = 10


def register_metric(
    name: str,
    *,
    higher_is_better: bool,
    needs: Need,
    description: str,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Callable[[MetricFn], MetricFn]:
    """Decorator: `@register_metric("brier", higher_is_better=False, ...)`; refuses duplicates.

    A name ending in `_at_k` takes a cut-off: `recall@5` or `recall_at_5` (default 10).
    """

    def decorate(fn: MetricFn) -> MetricFn:
        if name in _REGISTRY:
            raise ValueError(f"a metric named '{name}' is already registered")
        if needs not in get_args(Need):
            raise ValueError(f"needs must be one of {get_args(Need)}, not {needs!r}")
        k = DEFAULT_K if name.endswith("_at_k") else None
        _REGISTRY[name] = Metric(name, fn, higher_is_better, needs, description, bounds, k)
        return fn

    return decorate


def get_metric(spec: str | Metric) -> Metric:
    """'macro_f1', 'recall@5', 'ndcg_at_k' → the metric (an @k one with its cut-off bound).

    An unknown name lists the known ones and suggests the closest.
    """
    if isinstance(spec, Metric):
        return spec
    name = spec.strip()
    match = _AT_K.match(name)
    base = f"{match['base']}_at_k" if match else name
    if base not in _REGISTRY:
        known = metric_names()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        close = close or [n for n in known if name and name in n][:1]
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown metric '{spec}' (known: {', '.join(known)}){hint}")
    metric = _REGISTRY[base]
    if metric.k is None:
        return metric
    k = DEFAULT_K if match is None or match["k"] == "k" else int(match["k"])
    if k < 1:
        raise ConfigError(f"metric '{spec}': the cut-off k must be at least 1")
    return replace(metric, name=base.replace("_at_k", f"_at_{k}"), k=k)


def metric_names() -> list[str]:
    """Registered names as a user writes them: 'recall@K' for the @k ones."""
    return sorted(n.replace("_at_k", "@K") for n in _REGISTRY)


def registered_metrics() -> list[Metric]:
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


# -- computing with weights ----------------------------------------------------------
def bootstrap_weights(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, n) counts: how often each example is drawn in each resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = idx + (np.arange(n_boot) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


Estimate = tuple[float, tuple[float, float]]  # point value, 95% interval


def evaluate(
    outcomes: Outcomes, metrics: Sequence[str | Metric], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Estimate]:
    """Each metric's value and 95% percentile-bootstrap interval; all share the resamples."""
    resolved = [get_metric(m) for m in metrics]
    n = len(outcomes)
    weights = bootstrap_weights(n, n_boot, seed)
    out: dict[str, Estimate] = {}
    token = _SORTED.set({})  # the ranking metrics below share one sort of the scores
    try:
        for metric in resolved:
            value = float(metric.compute(outcomes, np.ones((1, n)))[0])
            if np.isnan(value):
                raise DataError(f"metric '{metric.name}' is undefined on these {n} examples")
            out[metric.name] = (value, _interval(metric.compute(outcomes, weights)))
    finally:
        _SORTED.reset(token)
    return out


def _interval(samples: np.ndarray) -> tuple[float, float]:
    """2.5th and 97.5th percentiles over the resamples where the metric is defined."""
    defined = samples[~np.isnan(samples)]
    if not len(defined):
        return float("nan"), float("nan")
    low, high = np.percentile(defined, [2.5, 97.5])
    return float(low), float(high)


def _mean(values: np.ndarray, weights: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean of per-example values, per resample, over the `valid` examples."""
    if valid is not None:
        weights = weights * valid
        values = np.where(valid, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((weights @ values) / weights.sum(axis=1))


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the defined (non-NaN) entries; NaN where none is."""
    defined = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(defined, values, 0.0).sum(0) / defined.sum(0))


def _two_groups(positive: np.ndarray, metric: str, what: str) -> np.ndarray:
    if positive.all() or not positive.any():
        raise DataError(f"'{metric}' needs {what} in the truth; these examples have only one")
    return positive


# -- labels --------------------------------------------------------------------------
def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predictions."""
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return np.asarray(flat.reshape(n_classes, n_classes))


def _f1_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """Per-class F1 for one matrix (k, k) or a stack of them (b, k, k)."""
    tp = np.diagonal(matrix, axis1=-2, axis2=-1).astype(np.float64)
    predicted, actual = matrix.sum(axis=-2), matrix.sum(axis=-1)
    denominator = predicted + actual
    return np.asarray(np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in y_true (scikit-learn's 'macro' on those labels)."""
    matrix = confusion(y_true, y_pred, n_classes)
    present = matrix.sum(axis=1) > 0
    return float(_f1_from_confusion(matrix)[present].mean())


def _labels(o: Outcomes) -> tuple[np.ndarray, np.ndarray, int]:
    assert o.y_true is not None and o.y_pred is not None
    k = o.n_classes or int(max(o.y_true.max(), o.y_pred.max())) + 1
    return o.y_true, o.y_pred, k


@register_metric(
    "accuracy",
    higher_is_better=True,
    needs="labels",
    description="Share of examples whose predicted class is the true one.",
)
def _accuracy(o: Outcomes, w: np.ndarray) -> np.ndarray:
    y, p, _ = _labels(o)
    return _mean((y == p).astype(np.float64), w)


@register_metric(
    "macro_f1",
    higher_is_better=True,
    needs="labels",
    description="Mean F1 over the classes present in the truth: every class counts the same.",
)
def _macro_f1(o: Outcomes, w: np.ndarray) -> np.ndarray:
    y, p, k = _labels(o)
    b = len(w)
    cells = (y * k + p) + (np.arange(b) * k * k)[:, None]  # one confusion matrix per resample
    flat = np.bincount(cells.ravel(), weights=w.ravel(), minlength=b * k * k)
    matrices = flat.reshape(b, k, k)
    present = matrices.sum(axis=2) > 0
    return np.asarray(
        (_f1_from_confusion(matrices) * present).sum(1) / np.maximum(present.sum(1), 1)
    )


# -- probabilities -------------------------------------------------------------------
def _probabilities(o: Outcomes) -> tuple[np.ndarray, np.ndarray]:
    assert o.y_true is not None and o.proba is not None
    return o.y_true, o.proba


def _by_score(positive: np.ndarray, score: np.ndarray, w: np.ndarray) -> tuple[Any, Any]:
    """Positive and negative weight in each run of equal scores, lowest score first."""
    order = np.argsort(score, kind="stable")
    ranked = score[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    weights, pos = w[:, order], positive[order]
    return np.add.reduceat(weights * pos, starts, axis=1), np.add.reduceat(
        weights * ~pos, starts, axis=1
    )


def _binary_auc(positive: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mann-Whitney: the chance a positive outscores a negative, ties counting half."""
    pos, neg = _by_score(positive, score, w)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((pos * (below + neg / 2)).sum(1) / (pos.sum(1) * neg.sum(1)))


@register_metric(
    "auc",
    higher_is_better=True,
    needs="probabilities",
    description="Area under the ROC curve; one-vs-rest macro average over the classes present "
    "when there are more than two.",
)
def _auc(o: Outcomes, w: np.ndarray) -> np.ndarray:
    y, proba = _probabilities(o)
    if proba.shape[1] == 2:
        return _binary_auc(_two_groups(y == 1, "auc", "both classes"), proba[:, 1], w)
    present = [c for c in range(proba.shape[1]) if 0 < np.sum(y == c) < len(y)]
    if not present:
        raise DataError("'auc' needs two classes or more in the truth; these examples have one")
    return _nanmean(np.stack([_binary_auc(y == c, proba[:, c], w) for c in present]))


@register_metric(
    "gini",
    higher_is_better=True,
    needs="probabilities",
    description="Gini coefficient (accuracy ratio), 2·AUC − 1: how credit scores are usually "
    "quoted.",
    bounds=(-1.0, 1.0),
)
def _gini(o: Outcomes, w: np.ndarray) -> np.ndarray:
    return 2 * _auc(o, w) - 1


@register_metric(
    "ks",
    higher_is_better=True,
    needs="probabilities",
    description="Kolmogorov-Smirnov: the largest gap between the class-1 score distributions "
    "of the two classes (binary only).",
)
def _ks(o: Outcomes, w: np.ndarray) -> np.ndarray:
    y, proba = _probabilities(o)
    if proba.shape[1] != 2:
        raise ConfigError(f"'ks' is defined for two classes; this task has {proba.shape[1]}")
    pos, neg = _by_score(_two_groups(y == 1, "ks", "both classes"), proba[:, 1], w)
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf_pos = np.cumsum(pos, axis=1) / pos.sum(1, keepdims=True)
        cdf_neg = np.cumsum(neg, axis=1) / neg.sum(1, keepdims=True)
    return np.asarray(np.abs(cdf_pos - cdf_neg).max(axis=1))


@register_metric(
    "brier",
    higher_is_better=False,
    needs="probabilities",
    description="Mean squared error of the probabilities: (p1 - y)² for two classes, "
    "Σ_k (p_k - y_k)² for more (scikit-learn's brier_score_loss).",
    bounds=(0.0, 2.0),
)
def _brier(o: Outcomes, w: np.ndarray) -> np.ndarray:
    y, proba = _probabilities(o)
    k = proba.shape[1]
    per_example = ((proba - np.eye(k)[y]) ** 2).sum(axis=1)
    return _mean(per_example / 2 if k == 2 else per_example, w)


@register_metric(
    "log_loss",
    higher_is_better=False,
    needs="probabilities",
    description="Mean negative log-probability of the true class (nats; clipped at machine eps).",
    bounds=(0.0, float("inf")),
)
def _log_loss(o: Outcomes, w: np.ndarray) -> np.ndarray:
    y, proba = _probabilities(o)
    eps = np.finfo(proba.dtype).eps
    return _mean(-np.log(np.clip(proba[np.arange(len(y)), y], eps, 1 - eps)), w)


# -- rankings ------------------------------------------------------------------------
def _rankings(o: Outcomes) -> tuple[np.ndarray, np.ndarray]:
    """(relevance, scores), queries by items; classification: one-hot truth and probabilities."""
    if o.relevance is not None and o.scores is not None:
        relevance, scores = np.asarray(o.relevance, dtype=np.float64), o.scores
    else:
        y, proba = _probabilities(o)
        relevance, scores = np.eye(proba.shape[1])[y], proba
    if (relevance < 0).any():
        raise DataError("relevance must be ≥ 0 (0 marks an irrelevant item)")
    if not (relevance > 0).any():
        raise DataError("no query has a relevant item; ranking metrics are undefined")
    return relevance, scores


Runs = tuple[np.ndarray, np.ndarray, np.ndarray]
# within one `evaluate` (whose outcomes do not change): id(scores) -> (scores, its runs), so
# recall, ndcg and mrr, point and bootstrap, sort a queries-by-items matrix once, not six times
_SORTED: contextvars.ContextVar[dict[int, tuple[np.ndarray, Runs]] | None] = contextvars.ContextVar(
    "frugalml_sorted_scores", default=None
)


def _runs(scores: np.ndarray) -> Runs:
    """Each row sorted by score, best first: the order, and for each position the first and
    last position of its run of tied scores (ties count as a random order, as in sklearn)."""
    memo = _SORTED.get()
    if memo is None:
        return _sorted_runs(scores)
    hit = memo.get(id(scores))
    if hit is None or hit[0] is not scores:
        hit = memo[id(scores)] = (scores, _sorted_runs(scores))
    return hit[1]


def _sorted_runs(scores: np.ndarray) -> Runs:
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    n, m = ranked.shape
    position = np.broadcast_to(np.arange(m), (n, m))
    starts = np.ones((n, m), dtype=bool)
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    ends = np.ones((n, m), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, m - 1)[:, ::-1], axis=1)[:, ::-1]
    return order, first, last


@register_metric(
    "recall_at_k",
    higher_is_better=True,
    needs="rankings",
    description="Share of a query's relevant items ranked in the top k, averaged over queries "
    "with one; for classification, top-k accuracy.",
)
def _recall_at_k(o: Outcomes, w: np.ndarray, *, k: int) -> np.ndarray:
    relevance, scores = _rankings(o)
    order, first, last = _runs(scores)
    size = last - first + 1
    in_top = np.clip(k - first, 0, size) / size  # chance the item at a position makes the top k
    relevant = np.take_along_axis(relevance > 0, order, axis=1)
    total = relevant.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _mean((relevant * in_top).sum(1) / total, w, valid=total > 0)


@register_metric(
    "ndcg_at_k",
    higher_is_better=True,
    needs="rankings",
    description="Discounted cumulative gain of the top k (gain = relevance, discount "
    "1/log2(rank+1)) over the ideal ordering's, averaged over queries with a relevant item.",
)
def _ndcg_at_k(o: Outcomes, w: np.ndarray, *, k: int) -> np.ndarray:
    relevance, scores = _rankings(o)
    order, first, last = _runs(scores)
    discount = 1 / np.log2(np.arange(scores.shape[1]) + 2)
    discount[k:] = 0
    cumulative = np.r_[0.0, np.cumsum(discount)]
    run_discount = (cumulative[last + 1] - cumulative[first]) / (last - first + 1)
    dcg = (np.take_along_axis(relevance, order, axis=1) * run_discount).sum(1)
    ideal = (-np.sort(-relevance, axis=1) * discount).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _mean(dcg / ideal, w, valid=ideal > 0)


@register_metric(
    "mrr",
    higher_is_better=True,
    needs="rankings",
    description="Mean reciprocal rank of a query's best-ranked relevant item, averaged over "
    "queries with one (ties: the expected reciprocal rank within the tied run).",
)
def _mrr(o: Outcomes, w: np.ndarray) -> np.ndarray:
    relevance, scores = _rankings(o)
    order, first, last = _runs(scores)
    relevant = np.take_along_axis(relevance > 0, order, axis=1)
    best = np.argmax(relevant, axis=1)  # the first relevant position, in sorted order
    rows = np.arange(len(scores))
    start, end = first[rows, best], last[rows, best]
    harmonic = np.r_[0.0, np.cumsum(1 / np.arange(1, scores.shape[1] + 1))]
    reciprocal = (harmonic[end + 1] - harmonic[start]) / (end - start + 1)
    return _mean(reciprocal, w, valid=np.asarray(relevant.any(axis=1)))


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Each query's k best items (column indices), best first; ties in column order."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), 1), 1)


@register_metric(
    "coverage_at_k",
    higher_is_better=True,
    needs="rankings",
    description="Catalogue coverage: share of all items that appear in some query's top k.",
)
def _coverage_at_k(o: Outcomes, w: np.ndarray, *, k: int) -> np.ndarray:
    _, scores = _rankings(o)
    top = _top_k(scores, k)
    shown = np.zeros(scores.shape, dtype=np.float32)
    np.put_along_axis(shown, top, 1.0, axis=1)
    return np.asarray(((w > 0).astype(np.float32) @ shown > 0).mean(axis=1), dtype=np.float64)


@register_metric(
    "popularity_bias_at_k",
    higher_is_better=False,
    needs="rankings",
    description="Mean popularity (share of training users who chose the item) of the top-k "
    "items, averaged over queries: how much a recommender leans on the head of the catalogue.",
)
def _popularity_bias_at_k(o: Outcomes, w: np.ndarray, *, k: int) -> np.ndarray:
    _, scores = _rankings(o)
    if o.item_popularity is None:
        raise DataError("'popularity_bias' needs the items' training popularity in the outcomes")
    return _mean(np.asarray(o.item_popularity)[_top_k(scores, k)].mean(axis=1), w)


# -- out-of-scope detection ----------------------------------------------------------
OOS_THRESHOLD = 0.5  # an example is flagged out of scope when its score reaches this


def _oos(o: Outcomes) -> tuple[np.ndarray, np.ndarray]:
    assert o.is_oos is not None and o.oos_score is not None
    return np.asarray(o.is_oos, dtype=bool), np.asarray(o.oos_score, dtype=np.float64)


@register_metric(
    "oos_recall",
    higher_is_better=True,
    needs="oos_scores",
    description=f"Share of out-of-scope examples flagged (out-of-scope score ≥ {OOS_THRESHOLD}: "
    "a probability of being out of scope, or the detector's 0/1 decision).",
)
def _oos_recall(o: Outcomes, w: np.ndarray) -> np.ndarray:
    is_oos, score = _oos(o)
    if not is_oos.any():
        raise DataError("'oos_recall' needs out-of-scope examples; these have none")
    return _mean((score >= OOS_THRESHOLD).astype(np.float64), w, valid=is_oos)


@register_metric(
    "oos_auroc",
    higher_is_better=True,
    needs="oos_scores",
    description="Area under the ROC curve of the out-of-scope score, out-of-scope examples "
    "as positives: the chance one outscores an in-scope example.",
)
def _oos_auroc(o: Outcomes, w: np.ndarray) -> np.ndarray:
    is_oos, score = _oos(o)
    return _binary_auc(_two_groups(is_oos, "oos_auroc", "in- and out-of-scope examples"), score, w)


# -- the quality of a classifier on one split ----------------------------------------
ALWAYS = ("accuracy", "macro_f1")  # scored for every classifier, whatever it is chosen by


@dataclass
class Quality:
    """Point estimates with 95% bootstrap intervals, per-class report and confusion matrix.

    A classifier's accuracy and macro-F1 are always there (a ranker's, which has no classes,
    are None); `more` holds any other metric asked for. In JSON every metric is flat: `brier`
    and `brier_ci` beside `accuracy` and `accuracy_ci`.
    """

    n: int
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    macro_f1: float | None = None
    macro_f1_ci: tuple[float, float] | None = None
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    more: dict[str, Estimate] = field(default_factory=dict)

    @classmethod
    def of(cls, outcomes: Outcomes, metrics: Sequence[str], *, n_boot: int = 1000) -> Quality:
        """The quality of outcomes that are not a classifier's (rankings), by `metrics`."""
        names = list(dict.fromkeys(get_metric(m).name for m in metrics))
        return cls(n=len(outcomes), more=evaluate(outcomes, names, n_boot=n_boot))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name, (value, interval) in data.pop("more").items():
            data[name], data[f"{name}_ci"] = value, interval
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Quality:
        more = {
            key: (float(value), _pair(data[f"{key}_ci"]))
            for key, value in data.items()
            if f"{key}_ci" in data and key not in ALWAYS
        }
        return cls(
            n=data["n"],
            accuracy=data.get("accuracy"),
            accuracy_ci=_pair(data["accuracy_ci"]) if data.get("accuracy_ci") else None,
            macro_f1=data.get("macro_f1"),
            macro_f1_ci=_pair(data["macro_f1_ci"]) if data.get("macro_f1_ci") else None,
            per_class=data.get("per_class", {}),
            confusion=data.get("confusion", []),
            more=more,
        )

    def estimate(self, name: str) -> Estimate:
        key = get_metric(name).name
        if key in ALWAYS and getattr(self, key) is not None:
            return float(getattr(self, key)), getattr(self, f"{key}_ci")
        if key not in self.more:
            always = [m for m in ALWAYS if getattr(self, m) is not None]
            scored = ", ".join([*always, *self.more])
            raise ConfigError(f"'{key}' was not scored here (scored: {scored})")
        return self.more[key]

    def metric(self, name: str) -> float:
        return self.estimate(name)[0]

    def interval(self, name: str) -> tuple[float, float]:
        """The metric's 95% bootstrap interval."""
        return self.estimate(name)[1]

    def meets(self, name: str, target: float, *, strict: bool = False) -> bool:
        """The point estimate meets the bar (≥, or ≤ for a lower-is-better metric); with
        `strict`, the interval's pessimistic end must meet it too."""
        metric = get_metric(name)
        value = metric.worse_end(self.interval(name)) if strict else self.metric(name)
        return metric.meets(value, target)


def _pair(values: Sequence[float]) -> tuple[float, float]:
    low, high = values
    return float(low), float(high)


def score(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: Sequence[str],
    *,
    proba: np.ndarray | None = None,
    metrics: Sequence[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
) -> Quality:
    """Accuracy, macro-F1 and any other `metrics` (probability and ranking ones need `proba`),
    each with a 95% interval from the same bootstrap resamples."""
    k = len(labels)
    outcomes = Outcomes(y_true=y_true, y_pred=y_pred, n_classes=k, proba=proba)
    names = dict.fromkeys([*ALWAYS, *(get_metric(m).name for m in metrics)])
    estimates = evaluate(outcomes, list(names), n_boot=n_boot, seed=seed)
    (accuracy, accuracy_ci), (f1, f1_ci) = estimates.pop("accuracy"), estimates.pop("macro_f1")
    matrix = confusion(y_true, y_pred, k)
    return Quality(
        n=len(y_true),
        accuracy=accuracy,
        accuracy_ci=accuracy_ci,
        macro_f1=f1,
        macro_f1_ci=f1_ci,
        per_class=_per_class(matrix, labels),
        confusion=matrix.tolist(),
        more=estimates,
    )


def _per_class(matrix: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    tp = np.diagonal(matrix).astype(np.float64)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = _f1_from_confusion(matrix)
    return {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }


class _Predicts(Protocol):
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass
class Speed:
    """Latency at batch 1 and throughput at a larger batch, on the loaded model."""

    latency_p50_ms: float
    latency_p95_ms: float
    throughput_per_s: float
    throughput_batch: int
    # process CPU per text at `throughput_batch` (all threads): what serving is priced on.
    # None for figures recorded before it was measured.
    cpu_ms_per_text: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_speed(
    model: _Predicts, texts: Sequence[str], config: SpeedConfig | None = None
) -> Speed:
    """Times real calls on real texts (cycled if there are few) after one warm-up call."""
    config = config or SpeedConfig()
    pool = list(texts) or ["hello"]
    model.predict_proba(pool[: config.throughput_batch])  # warm-up: lazy init, caches
    latencies = []
    for i in range(config.latency_calls):
        start = time.perf_counter()
        model.predict_proba([pool[i % len(pool)]])
        latencies.append(time.perf_counter() - start)
    batch_texts = [pool[i % len(pool)] for i in range(config.throughput_texts)]
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(batch_texts), config.throughput_batch):
        model.predict_proba(batch_texts[i : i + config.throughput_batch])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    p50, p95 = np.percentile(np.asarray(latencies) * 1000, [50, 95])
    return Speed(
        float(p50),
        float(p95),
        len(batch_texts) / elapsed,
        config.throughput_batch,
        1000 * cpu / len(batch_texts),
    )
