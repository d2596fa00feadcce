"""Fine-tuning in three steps: a federated client builds a job once, trains it round after
round exchanging only the trainable state, and merges LoRA adapters once, at `finish`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.split import Splits
from frugalml.strategies import get_strategy

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


def test_lora_rounds_exchange_unmerged_adapters_and_finish_merges_them(
    demo_splits: Splits, tiny_backbone: Path
) -> None:
    from frugalml.training.finetune import predict_logits
    from frugalml.training.loop import load_trainable, trainable_state

    strategy = get_strategy("lora").build(
        backbone=str(tiny_backbone),
        max_length=32,
        train={"epochs": 1, "lr": 5e-3, "head_lr": 2e-2, "batch_size": 16},
    )
    train = demo_splits.train
    clients = [
        strategy.fine_tuning(train.subset(np.arange(i, len(train), 2)), demo_splits.val)
        for i in (0, 1)
    ]
    shared = trainable_state(clients[0].model)
    names = sorted(shared)
    assert {"head.weight", "head.bias"} < set(names)
    assert all(n.startswith("head.") or ".lora_" in n for n in names)  # adapters, not base
    start = {k: v.clone() for k, v in shared.items()}
    for _ in range(2):  # FedAvg: each client trains a round from the shared state
        updates = []
        for job in clients:
            load_trainable(job.model, shared)
            with CostMeter() as meter:
                state = job.train(budget=Budget(), meter=meter, workdir=None)
            updates.append(trainable_state(job.model))
            assert any(".lora_" in n for n, _ in job.body.named_parameters())  # unmerged
        assert not torch.equal(updates[0]["head.weight"], updates[1]["head.weight"])
        shared = {k: (updates[0][k] + updates[1][k]) / 2 for k in names}
    assert not torch.equal(shared["head.weight"], start["head.weight"])

    job = clients[0]
    load_trainable(job.model, shared)
    texts = list(demo_splits.test.texts[:30])
    unmerged = predict_logits(job.model, job.encoder.tokenize(texts), job.encoder.pad_id, 8)
    predictor = job.finish(state)
    assert not any("lora_" in n for n, _ in predictor.encoder.model.named_parameters())
    np.testing.assert_allclose(predictor.logits(texts), unmerged, atol=1e-5)


def test_full_and_top_layers_jobs_expose_what_they_train(
    demo_splits: Splits, tiny_backbone: Path
) -> None:
    from frugalml.training.loop import trainable_state

    full = get_strategy("full").build(backbone=str(tiny_backbone), max_length=32)
    names = set(trainable_state(full.fine_tuning(demo_splits.train, demo_splits.val).model))
    assert "head.weight" in names and "encoder.encoder.layer.0.attention.self.query.weight" in names
    assert not [n for n in names if "word_embeddings" in n or "pooler" in n]  # frozen, unused
    top = get_strategy("top_layers").build(backbone=str(tiny_backbone), train_layers=1)
    with CostMeter() as meter:
        job = top.fine_tuning(demo_splits.train, demo_splits.val, meter=meter)
    names = set(trainable_state(job.model))
    # the shared EncoderClassifier, its encoder the top layers over cached states
    assert "head.weight" in names
    assert all(n.startswith(("head.", "encoder.layers.0.")) for n in names)
