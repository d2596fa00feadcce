"""Every registered metric agrees with scikit-learn or scipy, ties and bootstrap included;
intervals bracket the estimate; speed is measured for real."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    ndcg_score,
    recall_score,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

from frugalml.config import SpeedConfig
from frugalml.errors import ConfigError, DataError
from frugalml.metrics import (
    Outcomes,
    Quality,
    bootstrap_weights,
    confusion,
    evaluate,
    get_metric,
    measure_speed,
    metric_names,
    register_metric,
    registered_metrics,
    score,
)


def noisy_predictions(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return y, np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))


def test_point_estimates_match_scikit_learn() -> None:
    y, p = noisy_predictions(500, 6)
    q = score(y, p, [f"c{i}" for i in range(6)])
    assert q.accuracy == accuracy_score(y, p)
    assert np.isclose(q.macro_f1, f1_score(y, p, average="macro"))
    assert q.confusion == confusion(y, p, 6).tolist()
    assert sum(row["support"] for row in q.per_class.values()) == 500


def test_bootstrap_intervals_bracket_the_estimate_and_shrink_with_more_data() -> None:
    small = score(*noisy_predictions(100, 4), list("abcd"))
    large = score(*noisy_predictions(5000, 4), list("abcd"))
    for q in (small, large):
        assert q.accuracy_ci[0] <= q.accuracy <= q.accuracy_ci[1]
        assert q.macro_f1_ci[0] <= q.macro_f1 <= q.macro_f1_ci[1]
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(large.accuracy_ci) < width(small.accuracy_ci) / 3


def test_macro_f1_ignores_classes_absent_from_the_truth() -> None:
    y, p = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])
    assert score(y, p, ["a", "b", "never-seen"]).macro_f1 == 1.0


class SlowModel:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return np.full((len(texts), 2), 0.5)


def test_speed_times_batch_one_calls_and_full_batches() -> None:
    model = SlowModel()
    speed = measure_speed(
        model, ["a", "b", "c"], SpeedConfig(latency_calls=5, throughput_batch=4, throughput_texts=8)
    )
    assert model.calls == [3, 1, 1, 1, 1, 1, 4, 4]  # warm-up, 5 singles, 2 batches
    assert 0 < speed.latency_p50_ms <= speed.latency_p95_ms
    assert speed.throughput_per_s > 0 and speed.throughput_batch == 4


def test_temperature_scaling_fixes_overconfidence_without_changing_labels() -> None:
    from frugalml.ladder.calibration import (
        calibrated_proba,
        expected_calibration_error,
        fit_temperature,
    )

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    true_logits = rng.normal(size=(2000, 3))
    true_logits[np.arange(2000), y] += 1.0
    overconfident = true_logits * 5.0  # the same ranking, far too sharp
    temperature = fit_temperature(overconfident, y)
    assert 3.5 < temperature < 7.0
    before = expected_calibration_error(calibrated_proba(overconfident, 1.0), y)
    after = expected_calibration_error(calibrated_proba(overconfident, temperature), y)
    assert after < before / 3
    np.testing.assert_array_equal(
        calibrated_proba(overconfident, temperature).argmax(1), overconfident.argmax(1)
    )


# -- the registry: every metric against scikit-learn / scipy ----------------------------
def probabilities(n: int, k: int, seed: int = 0, decimals: int | None = None) -> Outcomes:
    """Informative but noisy probabilities; rounding them makes many ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if decimals is not None:
        proba = np.round(proba, decimals)
        proba /= proba.sum(1, keepdims=True)
    return Outcomes(y_true=y, y_pred=proba.argmax(1), n_classes=k, proba=proba)


def value(name: str, outcomes: Outcomes) -> float:
    return evaluate(outcomes, [name], n_boot=20)[get_metric(name).name][0]


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal: most scores are tied
def test_probability_metrics_match_scikit_learn(k: int, decimals: int | None) -> None:
    o = probabilities(400, k, seed=k, decimals=decimals)
    assert o.y_true is not None and o.proba is not None
    y, proba, labels = o.y_true, o.proba, list(range(k))
    auc = roc_auc_score(y, proba[:, 1]) if k == 2 else roc_auc_score(y, proba, multi_class="ovr")
    assert np.isclose(value("auc", o), auc)
    assert np.isclose(value("brier", o), brier_score_loss(y, proba, labels=labels))
    assert np.isclose(value("log_loss", o), log_loss(y, proba, labels=labels))
    assert np.isclose(value("accuracy", o), accuracy_score(y, proba.argmax(1)))
    assert np.isclose(value("macro_f1", o), f1_score(y, proba.argmax(1), average="macro"))
    assert np.isclose(value("ndcg@2", o), ndcg_score(np.eye(k)[y], proba, k=2))
    if k == 2:
        ks = ks_2samp(proba[y == 1, 1], proba[y == 0, 1]).statistic
        assert np.isclose(value("ks", o), ks)
        fpr, tpr, _ = roc_curve(y, proba[:, 1])
        assert np.isclose(value("ks", o), np.max(tpr - fpr))  # the credit-scoring reading
    if decimals is None:  # without ties recall@k is exactly top-k accuracy
        assert np.isclose(value("recall@1", o), accuracy_score(y, proba.argmax(1)))
        if k > 2:
            top2 = top_k_accuracy_score(y, proba, k=2, labels=labels)
            assert np.isclose(value("recall@2", o), top2)


def test_ranking_metrics_with_ties_and_graded_relevance() -> None:
    rng = np.random.default_rng(0)
    relevance = rng.integers(0, 4, (60, 7)) * (rng.random((60, 7)) < 0.4)
    relevance[0] = 0  # a query with nothing relevant is left out
    scores = rng.integers(0, 4, (60, 7)).astype(float)  # heavy ties
    o = Outcomes(relevance=relevance, scores=scores)
    keep = relevance.sum(1) > 0
    for k in (1, 3, 7, 20):
        assert np.isclose(value(f"ndcg@{k}", o), ndcg_score(relevance[keep], scores[keep], k=k))
        assert np.isclose(
            value(f"recall@{k}", o), brute_force_recall(relevance[keep], scores[keep], k)
        )


def brute_force_recall(relevance: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Recall@k averaged over every order that breaks the ties (what `recall@k` promises)."""
    per_query = []
    for rel, row in zip(relevance, scores, strict=True):
        orders = [
            p
            for p in itertools.permutations(range(len(row)))
            if all(row[p[i]] >= row[p[i + 1]] for i in range(len(p) - 1))
        ]
        hits = [sum(rel[j] > 0 for j in order[:k]) for order in orders]
        per_query.append(np.mean(hits) / np.sum(rel > 0))
    return float(np.mean(per_query))


def test_out_of_scope_metrics() -> None:
    rng = np.random.default_rng(0)
    is_oos = rng.random(300) < 0.2
    oos_score = np.clip(rng.normal(0.3 + 0.4 * is_oos, 0.2), 0, 1).round(1)  # ties too
    o = Outcomes(is_oos=is_oos, oos_score=oos_score)
    assert np.isclose(value("oos_auroc", o), roc_auc_score(is_oos, oos_score))
    flagged = oos_score >= 0.5
    assert np.isclose(value("oos_recall", o), recall_score(is_oos, flagged))


@pytest.mark.parametrize(
    "name", ["accuracy", "macro_f1", "auc", "brier", "log_loss", "recall@2", "ndcg@3"]
)
def test_weighted_bootstrap_equals_scoring_each_resample(name: str) -> None:
    """A resample weighted by draw counts scores exactly as the resampled examples do."""
    o = probabilities(120, 3, decimals=1)
    assert o.y_true is not None and o.y_pred is not None and o.proba is not None
    metric = get_metric(name)
    weights = bootstrap_weights(len(o), n_boot=5, seed=3)
    idx = np.random.default_rng(3).integers(0, len(o), size=(5, len(o)))
    by_weight = metric.compute(o, weights)
    for row, drawn in zip(by_weight, idx, strict=True):
        resampled = Outcomes(o.y_true[drawn], o.y_pred[drawn], 3, o.proba[drawn])
        assert np.isclose(row, metric.compute(resampled, np.ones((1, len(drawn))))[0])


def test_every_interval_brackets_its_estimate() -> None:
    o = probabilities(300, 2)
    names = ["accuracy", "macro_f1", "auc", "ks", "brier", "log_loss", "recall@1", "ndcg@2"]
    for name, (point, (low, high)) in evaluate(o, names, n_boot=200).items():
        assert low <= point <= high, name
        assert low < high, name


def test_one_class_and_wrong_shapes_fail_with_a_reason() -> None:
    one_class = Outcomes(
        y_true=np.ones(5, int), y_pred=np.ones(5, int), n_classes=2, proba=np.full((5, 2), 0.5)
    )
    for name in ("auc", "ks"):
        with pytest.raises(DataError, match=f"'{name}' needs both classes"):
            evaluate(one_class, [name])
    with pytest.raises(ConfigError, match="'ks' is defined for two classes; this task has 3"):
        evaluate(probabilities(30, 3), ["ks"])
    in_scope_only = Outcomes(is_oos=np.zeros(4, bool), oos_score=np.zeros(4))
    with pytest.raises(DataError, match="'oos_auroc' needs in- and out-of-scope examples"):
        evaluate(in_scope_only, ["oos_auroc"])
    with pytest.raises(
        ConfigError, match="'brier' needs probabilities; these outcomes have labels"
    ):
        score(np.array([0, 1]), np.array([0, 1]), ["a", "b"], metrics=["brier"])


def test_names_parse_and_unknown_ones_suggest_the_closest() -> None:
    assert get_metric("recall@5").name == "recall_at_5" and get_metric("recall@5").k == 5
    assert get_metric("ndcg_at_3").k == 3 and get_metric("ndcg_at_k").name == "ndcg_at_10"
    assert get_metric("brier").direction == "lower" and get_metric("auc").direction == "higher"
    assert {"accuracy", "macro_f1", "auc", "gini", "ks", "brier", "log_loss", "oos_recall",
            "oos_auroc", "recall@K", "ndcg@K", "mrr", "coverage@K",
            "popularity_bias@K"} == set(metric_names())  # fmt: skip
    assert all(m.description for m in registered_metrics())
    with pytest.raises(
        ConfigError,
        match=r"unknown metric 'f1' \(known: accuracy, auc.*\); did you mean 'macro_f1'\?",
    ):
        get_metric("f1")
    with pytest.raises(ConfigError, match="did you mean 'log_loss'"):
        get_metric("logloss")
    with pytest.raises(ConfigError, match="k must be at least 1"):
        get_metric("recall@0")
    with pytest.raises(ValueError, match="already registered"):
        register_metric("brier", higher_is_better=False, needs="probabilities", description="")(
            lambda o, w: w.sum(1)
        )


def test_quality_keeps_extra_metrics_and_compares_by_direction() -> None:
    o = probabilities(200, 3)
    assert o.y_true is not None and o.proba is not None
    q = score(
        o.y_true, o.proba.argmax(1), list("abc"), proba=o.proba, metrics=["brier", "recall@2"]
    )
    data = q.to_dict()
    assert {"accuracy", "accuracy_ci", "macro_f1_ci", "brier", "brier_ci", "recall_at_2"} <= set(
        data
    )
    assert Quality.from_dict(json.loads(json.dumps(data))) == q
    brier = q.metric("brier")
    high = q.interval("brier")[1]
    assert q.meets("brier", brier) and not q.meets("brier", brier - 0.01)  # lower is better
    assert not q.meets("brier", (brier + high) / 2, strict=True)  # the interval's high end counts
    assert q.meets("brier", high, strict=True)
    assert q.metric("recall@2") == q.metric("recall_at_2")
    with pytest.raises(ConfigError, match="'auc' was not scored here"):
        q.metric("auc")


def test_ranking_metrics_sort_once_per_evaluate_and_give_the_same_values() -> None:
    from frugalml import metrics

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(30, 12)).astype(np.float32)  # many ties
    relevance = (rng.random((30, 12)) < 0.2).astype(np.float32)
    outcomes = metrics.Outcomes(relevance=relevance, scores=scores)
    names = ("ndcg@5", "recall@5", "mrr")
    alone = {m: float(get_metric(m).compute(outcomes, np.ones((1, 30)))[0]) for m in names}
    shared = metrics.evaluate(outcomes, names, n_boot=50)
    assert {m: shared[get_metric(m).name][0] for m in names} == alone
    assert metrics._SORTED.get() is None  # the memo lives only inside one evaluate
