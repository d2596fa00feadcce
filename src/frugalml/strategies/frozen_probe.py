"""Frozen pretrained embeddings and a logistic-regression head: transfer learning, cheapest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from frugalml.backbones import DEFAULT_BACKBONE, resolve_backbone
from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.embeddings import EmbeddingCache, Encoder, default_cache_dir
from frugalml.heads import LinearHead, softmax
from frugalml.strategies.base import StrategyConfig, register_strategy


class FrozenProbeConfig(StrategyConfig):
    kind: Literal["frozen_probe"] = "frozen_probe"
    backbone: str = Field(DEFAULT_BACKBONE, description="Packaged name, HF hub id or local folder.")
    max_length: int = Field(128, ge=8, description="Tokens per text; longer texts are truncated.")
    batch_size: int = Field(32, ge=1)
    Cs: tuple[float, ...] = Field(
        (3.0, 10.0, 30.0), min_length=1, description="Inverse L2 strengths tried on validation."
    )
    class_weight: Literal["balanced"] | None = None
    cache: bool = Field(True, description="Cache training embeddings on disk ($FRUGALML_CACHE).")


class FrozenProbePredictor:
    """Encoder (copied into the bundle as safetensors) → linear head."""

    def __init__(
        self, encoder: Encoder, head: LinearHead, labels: tuple[str, ...], temperature: float = 1.0
    ) -> None:
        self.temperature = temperature
        self.encoder = encoder
        self.head = head
        self.labels = labels

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(texts) / self.temperature)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.head.logits(self.encoder.encode(texts))

    def save(self, folder: Path) -> dict[str, Any]:
        self.encoder.save(folder / "encoder")
        self.head.save(folder / "head.safetensors")
        return {
            "max_length": self.encoder.max_length,
            "batch_size": self.encoder.batch_size,
            "pooling": "mean",
            "normalize": True,
            "temperature": self.temperature,
        }

    @classmethod
    def load(
        cls, folder: Path, spec: dict[str, Any], labels: tuple[str, ...]
    ) -> FrozenProbePredictor:
        encoder = Encoder(
            folder / "encoder",
            max_length=int(spec["max_length"]),
            batch_size=int(spec["batch_size"]),
        )
        head = LinearHead.load(folder / "head.safetensors")
        return cls(encoder, head, labels, float(spec["temperature"]))


@register_strategy(
    "frozen_probe",
    config=FrozenProbeConfig,
    predictor=FrozenProbePredictor,
    cost_rank=1,
    extra="transformers",
    needs=("torch", "transformers"),
)
class FrozenProbeStrategy:
    """Mean-pooled embeddings from a frozen backbone, computed once, with a linear head."""

    def __init__(self, config: FrozenProbeConfig) -> None:
        self.config = config

    def fit(
        self, train: Dataset, val: Dataset, *, budget: Budget, meter: CostMeter
    ) -> FrozenProbePredictor:
        c = self.config
        encoder = Encoder(
            resolve_backbone(c.backbone), max_length=c.max_length, batch_size=c.batch_size
        )
        if c.cache:
            cache = EmbeddingCache(default_cache_dir(), encoder.fingerprint())
            X, X_val = (cache.encode(encoder, d.texts, meter) for d in (train, val))
        else:
            X, X_val = (encoder.encode(d.texts, meter) for d in (train, val))
        head = LinearHead.fit_select(
            X, train.y, X_val, val.y, len(train.labels), Cs=c.Cs, class_weight=c.class_weight
        )
        return FrozenProbePredictor(encoder, head, train.labels)
