"""The one training loop: learns, checkpoints, resumes to the same weights, stops on a deadline."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.split import Splits
from frugalml.training.loop import TrainConfig, _schedule, bucketed_batches

torch = pytest.importorskip("torch")
FAST = TrainConfig(epochs=4, lr=5e-3, head_lr=2e-2, batch_size=16, patience=10)


def fit(
    splits: Splits,
    backbone: Path,
    config: TrainConfig,
    workdir: Path | None,
    budget: Budget | None = None,
) -> tuple[Any, Any, Any]:  # (predictor, train state, cost card)
    from frugalml.training.finetune import fit_classifier

    with CostMeter() as meter:
        result = fit_classifier(
            splits.train,
            splits.val,
            backbone=backbone,
            config=config,
            max_length=32,
            budget=budget or Budget(),
            meter=meter,
            workdir=workdir,
        )
    return (*result, meter.card)


def test_loss_goes_down_and_flops_are_counted(demo_splits: Splits, tiny_backbone: Path) -> None:
    _, state, card = fit(demo_splits, tiny_backbone, FAST, None)
    losses = [h["loss"] for h in state.history]
    assert losses[-1] < losses[0] * 0.8
    assert state.best_score == max(h["val"] for h in state.history)
    assert card.flops and card.flops > 0


def test_resume_after_a_crash_reaches_the_same_weights(
    demo_splits: Splits,
    tiny_backbone: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    straight, _, _ = fit(demo_splits, tiny_backbone, FAST, tmp_path / "a")
    import frugalml.metrics as evaluate_module

    calls = {"n": 0}
    real = evaluate_module.macro_f1

    def crash_on_third_epoch(*args: object) -> float:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill during epoch 2")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr("frugalml.training.finetune.macro_f1", crash_on_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(demo_splits, tiny_backbone, FAST, tmp_path / "b")
    monkeypatch.setattr("frugalml.training.finetune.macro_f1", real)
    resumed, state, _ = fit(demo_splits, tiny_backbone, FAST, tmp_path / "b")
    assert [h["epoch"] for h in state.history] == [0, 1, 2, 3]  # epochs 0-1 from the checkpoint
    texts = list(demo_splits.test.texts)
    np.testing.assert_allclose(resumed.logits(texts), straight.logits(texts), atol=1e-5)


def test_deadline_stops_cleanly_and_keeps_the_best_weights(
    demo_splits: Splits,
    tiny_backbone: Path,
) -> None:
    start = time.perf_counter()
    predictor, state, _ = fit(
        demo_splits, tiny_backbone, TrainConfig(epochs=50), None, Budget(max_wall_s=0.01)
    )
    assert state.stopped == "deadline"
    assert len(state.history) == 1 and time.perf_counter() - start < 30
    proba = predictor.predict_proba(["my card is lost"])
    assert proba.shape == (1, len(demo_splits.train.labels))


def test_bucketed_batches_cover_everything_once_with_little_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, 1000)
    batches = bucketed_batches(lengths, 16, seed=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    naive = sum(len(b) * lengths[b].max() for b in np.array_split(rng.permutation(1000), 63))
    assert padded < 0.75 * naive
    assert [b.tolist() for b in bucketed_batches(lengths, 16, seed=1)] == [
        b.tolist() for b in batches
    ]


def test_schedule_warms_up_then_decays_to_zero() -> None:
    values = [_schedule(step, 100, 0.1) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[50] == pytest.approx(50 / 90) and values[-1] == pytest.approx(1 / 90)
    assert all(a >= b for a, b in pairwise(values[9:]))
