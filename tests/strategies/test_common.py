"""Every registered strategy passes the same checks, so a new rung is tested by existing code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frugalml import load
from frugalml.bundle import save_bundle
from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.split import Splits
from frugalml.strategies import Predictor, registered
from frugalml.strategies.base import Embedder, FitReport

REPORT_VAL_LOGITS = {"frozen_probe", "hybrid", "setfit"}


def options_for(name: str, backbone: Path) -> dict[str, Any]:
    """Point transformer rungs at the tiny test backbone; give its random weights time to learn."""
    fields = next(r for r in registered() if r.name == name).config.model_fields
    options: dict[str, Any] = {"backbone": str(backbone)} if "backbone" in fields else {}
    if "train" in fields:
        options["train"] = {"epochs": 6, "lr": 5e-3, "head_lr": 2e-2, "batch_size": 16}
    if "max_pairs" in fields:
        options["max_pairs"] = 512
    return options


@pytest.mark.parametrize("name", [r.name for r in registered()])
def test_strategy_fits_predicts_saves_and_reloads_identically(
    name: str,
    demo_splits: Splits,
    tiny_backbone: Path,
    tmp_path: Path,
) -> None:
    entry = next(r for r in registered() if r.name == name)
    strategy = entry.build(**options_for(name, tiny_backbone))
    with CostMeter() as meter:
        predictor = strategy.fit(demo_splits.train, demo_splits.val, budget=Budget(), meter=meter)
    assert isinstance(predictor, Predictor)
    assert predictor.labels == demo_splits.train.labels

    texts = list(demo_splits.test.texts)
    proba = predictor.predict_proba(texts)
    assert proba.shape == (len(texts), len(demo_splits.train.labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert (proba >= 0).all()
    # better than chance on held-out data: the rung actually learned something
    accuracy = (proba.argmax(1) == demo_splits.test.y).mean()
    assert accuracy > 2.0 / len(demo_splits.train.labels)

    check_capabilities(predictor, demo_splits)
    if isinstance(predictor, FitReport):  # these pick their head on validation: no second pass
        assert (predictor.val_logits is not None) == (name in REPORT_VAL_LOGITS)
    folder = save_bundle(
        tmp_path / "bundle",
        predictor,
        strategy=name,
        config=strategy.config.model_dump(mode="json"),
        task="text-classification",
        data_fingerprint="test",
    )
    reloaded = load(folder)
    np.testing.assert_array_equal(reloaded.predict_proba(texts), proba)
    if isinstance(predictor, Embedder):
        np.testing.assert_array_equal(reloaded.embed(texts), predictor.embed(texts))
    assert reloaded.labels == predictor.labels
    assert meter.card.wall_s > 0 and meter.card.cpu_s > 0


def check_capabilities(predictor: Predictor, splits: Splits) -> None:
    """What a predictor says it can do, it does: reported validation logits are its logits
    on the validation texts, and sentence vectors are unit rows, one per text."""
    val = list(splits.val.texts)
    if isinstance(predictor, FitReport):
        assert predictor.stopped in ("", "deadline")
        if predictor.val_logits is not None:
            # computed while fitting, possibly in other batches: equal up to float rounding
            np.testing.assert_allclose(predictor.val_logits, predictor.logits(val), atol=1e-5)
    if isinstance(predictor, Embedder):
        vectors = predictor.embed(val[:8])
        assert vectors.shape[0] == 8 and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", [r.name for r in registered()])
def test_strategy_config_rejects_unknown_options(name: str) -> None:
    entry = next(r for r in registered() if r.name == name)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        entry.config(no_such_option=1)
