"""Top-layer fine-tuning: the cached split reproduces the encoder, and only the top trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.split import Splits
from frugalml.errors import ConfigError
from frugalml.strategies import get_strategy


def test_cached_lower_states_through_the_top_equal_the_whole_encoder(
    demo_splits: Splits, tiny_backbone: Path
) -> None:
    import torch

    from frugalml.models.classifier_module import EncoderClassifier
    from frugalml.models.encoder import Encoder, mean_pool, pad_batch
    from frugalml.training.layer_cache import TopLayers, lower_states, top_logits

    encoder = Encoder(tiny_backbone, normalize=False)
    texts = list(demo_splits.val.texts[:40])
    ids = encoder.tokenize(texts)
    top = TopLayers(encoder.model, 1)  # shares the top layer
    model = EncoderClassifier(top, encoder.dim, 3).eval()  # no dropout
    got = top_logits(model, lower_states(encoder, ids, 1), batch_size=8)
    with torch.inference_mode():
        input_ids, mask = pad_batch(ids, encoder.pad_id)
        hidden = encoder.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        expected = model.head(mean_pool(hidden, mask)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert len(encoder.model.encoder.layer) == 2  # the temporary truncation was undone


def test_only_the_top_layers_and_the_head_change(
    demo_splits: Splits, tiny_backbone: Path, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    before = load_file(str(tiny_backbone / "model.safetensors"))
    strategy = get_strategy("top_layers").build(
        backbone=str(tiny_backbone), train_layers=1, train={"epochs": 2}
    )
    with CostMeter() as meter:
        predictor = strategy.fit(demo_splits.train, demo_splits.val, budget=Budget(), meter=meter)
    predictor.save(tmp_path)
    after = load_file(str(tmp_path / "encoder" / "model.safetensors"))
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed, "the top layer did not train"
    assert all(k.startswith(("encoder.layer.1.", "layer.1.")) for k in changed), changed
    assert meter.card.flops > 0


def test_impossible_layer_counts_are_refused_with_the_allowed_range(
    demo_splits: Splits, tiny_backbone: Path
) -> None:
    strategy = get_strategy("top_layers").build(backbone=str(tiny_backbone), train_layers=3)
    with pytest.raises(ConfigError, match=r"between 1 and 2 .* got 3"):
        strategy.fit(demo_splits.train, demo_splits.val, budget=Budget(), meter=CostMeter())
