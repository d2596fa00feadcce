"""The SetFit rung: pair sampling, few-shot draws, the budget cap, and that the pairs teach."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.data.split import Splits
from frugalml.strategies import get_strategy
from frugalml.strategies.setfit import Pairs, budget_cap, few_shot, sample_pairs

pytest.importorskip("torch")
FAST = {"epochs": 1, "lr": 5e-3, "batch_size": 16}


def fit(splits: Splits, backbone: Path, budget: Budget | None = None, **options: Any) -> Any:
    """Fit the rung on the tiny BERT; returns (strategy, predictor)."""
    strategy: Any = get_strategy("setfit").build(backbone=str(backbone), **options)
    with CostMeter() as meter:
        predictor = strategy.fit(splits.train, splits.val, budget=budget or Budget(), meter=meter)
    return strategy, predictor


def pair_loss(X: np.ndarray, pairs: Pairs) -> float:
    """CosineSimilarityLoss over unit vectors, in numpy."""
    cosine = (X[pairs.a] * X[pairs.b]).sum(axis=1)
    return float(np.mean((cosine - pairs.label) ** 2))


def test_pairs_are_deterministic_balanced_and_cover_every_example() -> None:
    y = np.repeat(np.arange(4), [5, 3, 1, 7])
    pairs = sample_pairs(y, iterations=3, max_pairs=10_000, seed=7)
    again = sample_pairs(y, iterations=3, max_pairs=10_000, seed=7)
    for name in ("a", "b", "label"):
        np.testing.assert_array_equal(getattr(pairs, name), getattr(again, name))
    assert not np.array_equal(pairs.b, sample_pairs(y, iterations=3, max_pairs=10_000, seed=8).b)

    assert len(pairs) == 2 * len(y) * 3
    assert pairs.label.sum() == len(pairs) / 2  # as many positives as negatives
    np.testing.assert_array_equal(y[pairs.a] == y[pairs.b], pairs.label == 1)
    np.testing.assert_array_equal(np.bincount(pairs.a), 6)  # each example anchors 2 per round
    positive = pairs.label == 1
    alone = y[pairs.a] == 2  # the one class with a single example pairs with itself
    assert (pairs.a[positive & ~alone] != pairs.b[positive & ~alone]).all()


def test_pairs_are_capped_by_max_pairs_and_stay_balanced() -> None:
    y = np.repeat(np.arange(3), 50)
    pairs = sample_pairs(y, iterations=20, max_pairs=101, seed=0)
    assert len(pairs) == 100
    assert pairs.label.sum() == 50


def test_pairs_need_two_classes() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        sample_pairs(np.zeros(5, dtype=np.int64), iterations=1, max_pairs=10, seed=0)


def test_few_shot_draws_k_per_class_or_all_of_a_smaller_class() -> None:
    data = Dataset.from_lists([f"t{i}" for i in range(13)], ["a"] * 10 + ["b"] * 3)
    sample = few_shot(data, 4, seed=0)
    np.testing.assert_array_equal(sample.class_counts(), [4, 3])
    assert few_shot(data, 4, seed=0).texts == sample.texts
    assert few_shot(data, 4, seed=1).texts != sample.texts


def test_shots_train_on_exactly_k_per_class(demo_splits: Splits, tiny_backbone: Path) -> None:
    strategy, predictor = fit(demo_splits, tiny_backbone, shots=4, iterations=2, train=FAST)
    n_classes = len(demo_splits.train.labels)
    np.testing.assert_array_equal(strategy.train_.class_counts(), 4)
    assert len(strategy.pairs_) == 2 * 4 * n_classes * 2
    assert predictor.labels == demo_splits.train.labels


def test_budget_cap_keeps_the_pairs_forecast_to_fit() -> None:
    pairs = sample_pairs(np.repeat([0, 1], 5), iterations=20, max_pairs=400, seed=0)
    assert len(budget_cap(pairs, seconds_per_pair=0.01, epochs=1, seconds=0.5)) == 50
    assert len(budget_cap(pairs, seconds_per_pair=0.01, epochs=2, seconds=0.5)) == 24  # even
    assert len(budget_cap(pairs, seconds_per_pair=0.01, epochs=1, seconds=100.0)) == 400
    assert len(budget_cap(pairs, seconds_per_pair=0.01, epochs=1, seconds=-1.0)) == 0


def test_a_small_wall_budget_trains_on_fewer_pairs(
    demo_splits: Splits, tiny_backbone: Path
) -> None:
    strategy, predictor = fit(
        demo_splits, tiny_backbone, Budget(max_wall_s=1.0), max_pairs=4000, train=FAST
    )
    assert len(strategy.pairs_) < 4000  # 392 examples x 20 rounds x 2 would be capped at 4000
    proba = predictor.predict_proba(list(demo_splits.test.texts[:5]))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_contrastive_phase_lowers_the_pair_loss(demo_splits: Splits, tiny_backbone: Path) -> None:
    from frugalml.models.encoder import Encoder

    strategy, predictor = fit(
        demo_splits, tiny_backbone, shots=8, iterations=2, max_pairs=256, train=FAST
    )
    texts = strategy.train_.texts  # the pairs index the 8-per-class sample
    before = pair_loss(Encoder(tiny_backbone, max_length=64).encode(texts), strategy.pairs_)
    after = pair_loss(predictor.encoder.encode(texts), strategy.pairs_)
    assert after < 0.7 * before
    assert predictor.encoder.trained  # so the bundle saves the tuned weights, not the originals
    # the head's validation logits, reported for calibration: no second pass over val
    assert predictor.val_logits is not None
    np.testing.assert_allclose(
        predictor.val_logits, predictor.logits(list(demo_splits.val.texts)), atol=1e-5
    )
