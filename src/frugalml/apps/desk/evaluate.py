"""How well a desk routes: out-of-scope detection, accuracy of what it answers by itself, how
much it hands off, and how well the knowledge index finds the right entry; each figure with a
95% bootstrap interval. Also the risk-coverage curve that picks the confidence threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from frugalml.apps.desk.oos import auroc, fpr_at_tpr

N_BOOT = 500


@dataclass(frozen=True)
class Outcome:
    """Per question: what it was and what the desk did."""

    oos: np.ndarray  # bool: truly out of scope
    correct_intent: np.ndarray  # bool: in scope and the predicted intent is right
    flagged: np.ndarray  # bool: the detector said out of scope
    score: np.ndarray  # out-of-scope score
    route: np.ndarray  # str: answer / knowledge / handoff


def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    d = float(den.sum())
    return float(num.sum()) / d if d else math.nan


METRICS: dict[str, Callable[[Outcome], float]] = {
    "inscope_accuracy": lambda o: _ratio(o.correct_intent, ~o.oos),
    "auto_accuracy": lambda o: _ratio(
        o.correct_intent & (o.route == "answer"), o.route == "answer"
    ),
    "oos_recall": lambda o: _ratio(o.flagged & o.oos, o.oos),
    "oos_precision": lambda o: _ratio(o.flagged & o.oos, o.flagged),
    "oos_f1": lambda o: _f1(_ratio(o.flagged & o.oos, o.flagged), _ratio(o.flagged & o.oos, o.oos)),
    "oos_answered_by_template": lambda o: _ratio(o.oos & (o.route == "answer"), o.oos),
    "auroc": lambda o: auroc(o.score[~o.oos], o.score[o.oos]),
    "fpr@95tpr": lambda o: (
        fpr_at_tpr(o.score[~o.oos], o.score[o.oos]) if o.oos.any() and (~o.oos).any() else math.nan
    ),
    "handoff_rate": lambda o: float(np.mean(o.route == "handoff")),
    "answer_rate": lambda o: float(np.mean(o.route == "answer")),
    "knowledge_rate": lambda o: float(np.mean(o.route == "knowledge")),
}


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else math.nan


def _subset(o: Outcome, idx: np.ndarray) -> Outcome:
    return Outcome(
        *(getattr(o, f)[idx] for f in ("oos", "correct_intent", "flagged", "score", "route"))
    )


def with_intervals(
    outcome: Outcome, metrics: dict[str, Callable[[Outcome], float]] = METRICS, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Each metric with its 95% percentile-bootstrap interval (resampling questions)."""
    rng = np.random.default_rng(seed)
    n = len(outcome.oos)
    samples = [rng.integers(0, n, n) for _ in range(N_BOOT)]
    out: dict[str, dict[str, Any]] = {}
    for name, metric in metrics.items():
        value = metric(outcome)
        if math.isnan(value):
            out[name] = {"value": None, "ci95": None}
            continue
        boot = np.array([metric(_subset(outcome, idx)) for idx in samples])
        boot = boot[~np.isnan(boot)]
        low, high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (value, value)
        out[name] = {
            "value": round(value, 4),
            "ci95": [round(float(low), 4), round(float(high), 4)],
        }
    return out


def routing_matrix(outcome: Outcome) -> dict[str, dict[str, int]]:
    """Rows: in scope (intent right / wrong) and out of scope; columns: the routes."""
    rows = {
        "in_scope_right_intent": ~outcome.oos & outcome.correct_intent,
        "in_scope_wrong_intent": ~outcome.oos & ~outcome.correct_intent,
        "out_of_scope": outcome.oos,
    }
    return {
        name: {
            route: int((mask & (outcome.route == route)).sum())
            for route in ("answer", "knowledge", "handoff")
        }
        for name, mask in rows.items()
    }


def outcome_of(replies: Sequence[Any], truth: Sequence[str], oos_label: str) -> Outcome:
    """Outcomes from `Desk.ask` replies and the true labels (`oos_label` = out of scope)."""
    oos = np.array([t == oos_label for t in truth])
    return Outcome(
        oos,
        np.array([not o and r.intent == t for r, t, o in zip(replies, truth, oos, strict=True)]),
        np.array([r.out_of_scope for r in replies]),
        np.array([r.oos_score for r in replies]),
        np.array([r.route for r in replies]),
    )


# -- risk-coverage -------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float  # confidence needed to answer by template
    handoff: float  # share of in-scope questions not answered by template
    auto_accuracy: float  # accuracy of those answered
    met: bool  # both goals met
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def risk_coverage(
    confidence: np.ndarray, correct: np.ndarray, blocked: np.ndarray | None = None
) -> list[dict[str, float]]:
    """For each confidence threshold (the questions' own values): the share handed off and
    the accuracy of what is answered. `blocked` questions (flagged out of scope) are never
    answered by template."""
    blocked = np.zeros(len(confidence), bool) if blocked is None else blocked
    order = np.argsort(-confidence, kind="stable")
    answerable = ~blocked[order]
    answered = np.cumsum(answerable)
    right = np.cumsum(correct[order] & answerable)
    n = len(confidence)
    curve = []
    for i in range(n):
        if not answerable[i] or answered[i] == 0:
            continue
        curve.append(
            {
                "threshold": float(confidence[order][i]),
                "coverage": float(answered[i] / n),
                "handoff": float(1 - answered[i] / n),
                "auto_accuracy": float(right[i] / answered[i]),
            }
        )
    return curve


def wilson_low(right: float, n: float, z: float = 1.96) -> float:
    """Lower end of the Wilson 95% interval of a proportion: what a small sample can vouch for."""
    if n <= 0:
        return 0.0
    p = right / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def wilson_high(hits: float, n: float, z: float = 1.96) -> float:
    """Upper end of the Wilson 95% interval: the most a small sample's rate may really be."""
    return 1.0 - wilson_low(n - hits, n, z) if n > 0 else 1.0


def pick_operating_point(
    curve: list[dict[str, float]],
    *,
    max_handoff: float,
    min_auto_accuracy: float | None,
    n: int | None = None,
) -> OperatingPoint:
    """The lowest threshold (most answered) whose accuracy reaches `min_auto_accuracy` within
    `max_handoff`. With `n` (the questions behind the curve), both goals must hold with their
    whole 95% interval, as `fit --strict` asks of a target: the accuracy's low end must reach
    the bar and the hand-off rate's high end stay within the limit. Validation sets are small,
    and a point estimate just at either bar misses it on new data half the time. When no point
    meets both,
    of the points whose estimate reaches it the one whose interval reaches highest is kept
    (not the one answering most: that one sits at the bar, a coin flip on new data); failing
    that, the most accurate point within `max_handoff`, with a note."""
    if not curve:
        return OperatingPoint(1.0, 1.0, math.nan, False, "no question could be answered")

    def handoff_high(p: dict[str, float]) -> float:
        return p["handoff"] if n is None else wilson_high(p["handoff"] * n, n)

    within = [p for p in curve if handoff_high(p) <= max_handoff + 1e-12]
    target = -1.0 if min_auto_accuracy is None else min_auto_accuracy

    def vouched(p: dict[str, float]) -> float:
        if n is None:
            return p["auto_accuracy"]
        answered = p["coverage"] * n
        return wilson_low(p["auto_accuracy"] * answered, answered)

    for strict, rule in ((True, vouched), (False, lambda p: p["auto_accuracy"])):
        good = [p for p in within if rule(p) >= target]
        if good:
            # vouched: the most answered; else the one most surely above the bar
            p = max(good, key=lambda p: (0.0 if strict else vouched(p), p["coverage"]))
            note = (
                ""
                if strict or n is None
                else f"auto accuracy reaches {target:.1%} within {max_handoff:.0%} hand-off "
                "only as a point estimate, not with its whole 95% interval"
            )
            return OperatingPoint(p["threshold"], p["handoff"], p["auto_accuracy"], True, note)
    fallback = max(within, key=lambda p: p["auto_accuracy"]) if within else curve[-1]
    reaching = [p for p in curve if p["auto_accuracy"] >= target]
    need = min((p["handoff"] for p in reaching), default=math.nan)
    note = (
        f"no threshold reaches {target:.1%} auto accuracy within {max_handoff:.0%} hand-off "
        + (f"(it needs {need:.0%} hand-off)" if not math.isnan(need) else "(none reaches it)")
        + f"; kept {fallback['auto_accuracy']:.1%} at {fallback['handoff']:.0%} hand-off"
    )
    return OperatingPoint(
        fallback["threshold"], fallback["handoff"], fallback["auto_accuracy"], False, note
    )


def thin(curve: list[dict[str, float]], points: int = 50) -> list[dict[str, float]]:
    """At most `points` points of a curve, for reports."""
    if len(curve) <= points:
        return curve
    idx = np.unique(np.linspace(0, len(curve) - 1, points).round().astype(int))
    return [curve[i] for i in idx]


def evaluate_desk(
    desk: Any,
    data: Any,
    *,
    knowledge_queries: Any = None,
    text_col: str | None = None,
    label_col: str | None = None,
) -> dict[str, Any]:
    """Route labelled questions (the desk's out-of-scope label marks out-of-scope ones) and
    score the routing; with `knowledge_queries` (query, expected entry) also the index's
    Recall@1/5 and MRR. Every figure has a 95% bootstrap interval."""
    from pathlib import Path

    import frugalml
    from frugalml.apps.desk.builder import read_queries
    from frugalml.apps.desk.desk import Desk, load
    from frugalml.errors import ConfigError

    loaded = desk if isinstance(desk, Desk) else load(Path(desk))
    dataset = frugalml.load_dataset(data, text_col=text_col, label_col=label_col, min_per_class=1)
    oos_label = str(loaded.settings.get("oos_label", "oos"))
    unknown = sorted(set(dataset.labels) - set(loaded.labels) - {oos_label})
    if unknown:
        raise ConfigError(
            f"{data} has labels the desk does not know: {', '.join(unknown[:10])}",
            [
                f"label out-of-scope questions '{oos_label}'; the desk's intents are: "
                f"{', '.join(loaded.labels[:20])}"
            ],
        )
    truth = [dataset.labels[int(y)] for y in dataset.y]
    replies = loaded.ask(list(dataset.texts))
    outcome = outcome_of(replies, truth, oos_label)
    result: dict[str, Any] = {
        "n": len(truth),
        "n_oos": int(outcome.oos.sum()),
        "metrics": with_intervals(outcome),
        "routing": routing_matrix(outcome),
    }
    if knowledge_queries is not None:
        queries, relevant = read_queries(knowledge_queries, loaded.index.entries)
        result["knowledge"] = knowledge_intervals(loaded, queries, relevant)
    return result


def knowledge_intervals(desk: Any, queries: list[str], relevant: np.ndarray) -> dict[str, Any]:
    """Recall@1, Recall@5 and MRR of the desk's index, each with a bootstrap interval."""
    from frugalml.apps.desk.knowledge import rank_metrics

    vectors = desk.bundle.embed(queries)
    scores = desk.index.ranked(queries, vectors, desk.index.dense_weight)
    rng = np.random.default_rng(0)
    point = rank_metrics(scores, relevant)
    boots = [
        rank_metrics(scores[idx], relevant[idx])
        for idx in (rng.integers(0, len(queries), len(queries)) for _ in range(N_BOOT))
    ]
    return {
        name: {
            "value": round(value, 4),
            "ci95": [
                round(float(np.percentile([b[name] for b in boots], q)), 4) for q in (2.5, 97.5)
            ],
        }
        for name, value in point.items()
    }
