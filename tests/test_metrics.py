"""Metrics agree with scikit-learn; intervals bracket the estimate; speed is measured for real."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from frugalml.config import SpeedConfig
from frugalml.metrics import confusion, measure_speed, score


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
