"""The dear rung: the text encoder fine-tuned on behaviour, on the one training loop.

Two towers share one encoder: the user is the recency-weighted mean of their recent items'
text vectors, the item its text vector; in-batch negatives (each user's next item against the
other users' next items) teach the encoder which texts go together in people's histories.
The user tower is exactly the content rung's user, so the result ships as a content
recommender: item vectors from the fine-tuned encoder, and the encoder itself, which embeds
items added later without retraining.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from frugalml import CostMeter, Dataset
from frugalml.apps.recommend.data import Interactions, interactions_of
from frugalml.apps.recommend.model import Recommender, Scorer, histories
from frugalml.apps.recommend.rungs import INPUTS, SELECT_BY
from frugalml.config import Budget
from frugalml.costs import transformer_flops
from frugalml.metrics import get_metric
from frugalml.models.encoder import Encoder, mean_pool, pad_batch
from frugalml.strategies.base import StrategyConfig, register_strategy
from frugalml.training import loop as training
from frugalml.training.loop import Batch, TrainConfig


class TwoTowerConfig(StrategyConfig):
    kind: Literal["two_tower"] = Field("two_tower", description="The registry name.")
    backbone: str = Field("minilm", description="Packaged name, hf://ORG/NAME or folder.")
    max_length: int = Field(32, ge=8, description="Tokens per item text.")
    history: int = Field(5, ge=1, description="Recent items in the user tower.")
    pairs_per_user: int = Field(
        20, ge=1, description="A user's latest (history, next item) pairs trained on."
    )
    half_life: float = Field(20.0, ge=0, description="Recency half-life of the user (items).")
    temperature: float = Field(0.05, gt=0, description="Of the in-batch softmax.")
    train: TrainConfig = Field(
        TrainConfig(epochs=2, lr=5e-5, batch_size=32, patience=1),
        description="The one training loop's settings.",
    )


@register_strategy(
    "two_tower",
    config=TwoTowerConfig,
    predictor=Recommender,
    cost_rank=16,
    extra="transformers",
    needs=("torch", "transformers"),
    inputs=INPUTS,
)
class TwoTowerStrategy:
    """The text encoder fine-tuned on behaviour (two towers, in-batch negatives: recent item
    texts → the next item's text): content ranking that has learnt what people pick."""

    def __init__(self, config: TwoTowerConfig) -> None:
        self.config = config

    def fit(
        self, train: Dataset, val: Dataset, *, budget: Budget, meter: CostMeter,
        workdir: Path | None = None,
    ) -> Recommender:  # fmt: skip
        from frugalml.models.backbones import resolve_backbone

        c, events = self.config, interactions_of(train)
        encoder = Encoder(
            resolve_backbone(c.backbone), max_length=c.max_length, batch_size=c.train.batch_size
        )
        pairs = next_item_pairs(events, c.history, c.pairs_per_user)
        batches = PairBatches(pairs, encoder.tokenize(events.catalogue.texts), c, encoder.pad_id)

        def evaluate(net: Any) -> float:
            net.eval()
            return validation_score(self._recommender(encoder, events, meter), val)

        deadline = None if budget.max_wall_s is None else budget.max_wall_s + time.perf_counter()
        self.state_ = training.train(
            encoder.model, batches, self._loss, evaluate, c.train, head_prefixes=(),
            checkpoint_dir=None if workdir is None else workdir / "checkpoints",
            deadline=deadline, meter=meter,
            flops_per_batch=lambda b: transformer_flops(
                encoder.n_params, int(b["input_ids"].numel()), training=True
            ),
        )  # fmt: skip
        encoder.model.eval()
        encoder.trained = self.state_.step > 0
        model = self._recommender(encoder, events, meter)
        model.encoder = encoder  # shipped: new items are embedded without retraining
        return model

    def _recommender(self, encoder: Encoder, events: Interactions, meter: CostMeter) -> Recommender:
        vectors = encoder.encode(events.catalogue.texts, meter)
        scorer = Scorer("vectors", {"vectors": vectors}, {"half_life": self.config.half_life})
        return Recommender.fitted(events, scorer)

    def _loss(self, model: Any, batch: Batch) -> Any:
        """In-batch softmax: each user's next item against the others' (same items masked)."""
        import torch

        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["mask"])
        texts = torch.nn.functional.normalize(
            mean_pool(hidden.last_hidden_state, batch["mask"]), dim=-1
        )
        recent = texts[batch["history"].clamp(min=0)]  # (B, history, dim)
        users = torch.nn.functional.normalize((batch["weights"][..., None] * recent).sum(1), dim=-1)
        logits = users @ texts[batch["target"]].T / self.config.temperature
        item = batch["target_item"]
        same = (item[:, None] == item[None, :]) & ~torch.eye(len(item), dtype=torch.bool)
        logits = logits.masked_fill(same, float("-inf"))
        return torch.nn.functional.cross_entropy(logits, torch.arange(len(item)))


def validation_score(model: Recommender, val: Dataset) -> float:
    outcomes = model.outcomes(val)
    return float(get_metric(SELECT_BY).compute(outcomes, np.ones((1, len(outcomes))))[0])


def next_item_pairs(events: Interactions, history: int, per_user: int) -> np.ndarray:
    """(pairs, history + 1) item indices: up to `history` items a user chose (oldest first,
    -1 padded at the front), then the item they chose next; each user's latest `per_user`."""
    indptr, items = histories(events)
    rows = []
    for u in range(len(indptr) - 1):
        seq = items[indptr[u] : indptr[u + 1]]
        for t in range(max(1, len(seq) - per_user), len(seq)):
            recent = seq[max(0, t - history) : t]
            rows.append(np.r_[np.full(history - len(recent), -1), recent, seq[t]])
    return np.asarray(rows, dtype=np.int64).reshape(-1, history + 1)


@dataclass(frozen=True, eq=False)
class PairBatches:
    """The loop's batch source: shuffled pairs; each batch tokenizes its distinct items once."""

    pairs: np.ndarray
    ids: list[list[int]]  # token ids per catalogue item
    config: TwoTowerConfig
    pad_id: int

    def __len__(self) -> int:
        return math.ceil(len(self.pairs) / self.config.train.batch_size)

    def __call__(self, epoch: int) -> Any:
        import torch

        c = self.config
        order = np.random.default_rng(c.train.seed + epoch).permutation(len(self.pairs))
        for start in range(0, len(order), c.train.batch_size):
            chunk = self.pairs[order[start : start + c.train.batch_size]]
            distinct, position = np.unique(chunk[chunk >= 0], return_inverse=True)
            index = np.full(chunk.shape, -1, dtype=np.int64)
            index[chunk >= 0] = position
            input_ids, mask = pad_batch([self.ids[i] for i in distinct], self.pad_id)
            age = np.arange(c.history)[::-1].astype(np.float32)
            weights = 0.5 ** (age / c.half_life) if c.half_life else np.ones(c.history)
            weights = np.where(chunk[:, :-1] >= 0, weights, 0.0).astype(np.float32)
            weights /= np.maximum(weights.sum(1, keepdims=True), 1e-9)
            yield {
                "input_ids": input_ids, "mask": mask,
                "history": torch.from_numpy(index[:, :-1]),
                "weights": torch.from_numpy(weights),
                "target": torch.from_numpy(index[:, -1]),
                "target_item": torch.from_numpy(chunk[:, -1].copy()),
            }  # fmt: skip
