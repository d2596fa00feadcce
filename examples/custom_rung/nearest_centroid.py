"""A nearest-centroid rung: each class is the mean of its examples' frozen embeddings, and a
text goes to the class whose centroid is closest (by cosine).

Fitting is one embedding pass and an average: no head to train, so it is cheaper than the
frozen probe's logistic regression and a useful floor for it. The whole rung is this file:
a config, a predictor that saves to safetensors/JSON, and a strategy registered by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from safetensors.numpy import load_file, save_file

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data import Dataset
from frugalml.models.backbones import DEFAULT_BACKBONE, resolve_backbone
from frugalml.models.encoder import Encoder, TextEncoder, load_encoder
from frugalml.models.heads import softmax
from frugalml.strategies import StrategyConfig, register_strategy


class NearestCentroidConfig(StrategyConfig):
    kind: Literal["nearest_centroid"] = "nearest_centroid"
    backbone: str = Field(DEFAULT_BACKBONE, description="Packaged name, HF hub id or local folder.")
    max_length: int = Field(128, ge=8, description="Tokens per text; longer texts are truncated.")
    batch_size: int = Field(32, ge=1, description="Texts per forward pass.")
    scale: float = Field(
        20.0, gt=0, description="Logits are scale × cosine: how sharp the probabilities are."
    )


class NearestCentroidPredictor:
    """Unit-length embedding → scale * cosine to each class centroid → softmax."""

    def __init__(
        self,
        encoder: Encoder | TextEncoder,
        centroids: np.ndarray,
        scale: float,
        labels: tuple[str, ...],
        temperature: float = 1.0,
    ) -> None:
        self.encoder, self.centroids, self.scale = encoder, centroids, scale
        self.labels = labels
        self.temperature = temperature  # the ladder calibrates it on validation data

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        # The encoder's vectors are unit length and so are the centroids: a dot is a cosine.
        # Row by row the same, whatever else is in the batch (check_strategy verifies it).
        return np.asarray(self.scale * (self.encoder.encode(texts) @ self.centroids.T))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(texts) / self.temperature)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The `Embedder` capability (strategies.base): unit-length sentence vectors, what
        retrieval and out-of-scope detection build on. Having the method is all it takes."""
        return self.encoder.encode(texts)

    def save(self, folder: Path) -> dict[str, Any]:
        self.encoder.save(folder / "encoder")  # safetensors + tokenizer JSON
        save_file({"centroids": self.centroids}, str(folder / "centroids.safetensors"))
        return {
            "max_length": self.encoder.max_length,
            "batch_size": self.encoder.batch_size,
            "scale": self.scale,
            "temperature": self.temperature,
        }

    @classmethod
    def load(
        cls, folder: Path, spec: dict[str, Any], labels: tuple[str, ...]
    ) -> NearestCentroidPredictor:
        encoder = load_encoder(
            folder / "encoder",
            max_length=int(spec["max_length"]),
            batch_size=int(spec["batch_size"]),
            normalize=True,
        )
        centroids = load_file(str(folder / "centroids.safetensors"))["centroids"]
        return cls(encoder, centroids, float(spec["scale"]), labels, float(spec["temperature"]))


@register_strategy(
    "nearest_centroid",
    config=NearestCentroidConfig,
    predictor=NearestCentroidPredictor,
    cost_rank=1,  # one embedding pass, like frozen_probe
    extra="transformers",
    needs=("torch", "transformers"),
)
class NearestCentroidStrategy:
    """Frozen embeddings, one centroid per class, nearest wins: no head to train."""

    def __init__(self, config: NearestCentroidConfig) -> None:
        self.config = config

    def fit(
        self,
        train: Dataset,
        val: Dataset,
        *,
        budget: Budget,
        meter: CostMeter,
        workdir: Path | None = None,
    ) -> NearestCentroidPredictor:
        c = self.config
        encoder = Encoder(
            resolve_backbone(c.backbone), max_length=c.max_length, batch_size=c.batch_size
        )
        X = encoder.encode(train.texts, meter)  # reports its FLOPs to the meter
        centroids = np.zeros((len(train.labels), X.shape[1]), dtype=np.float32)
        for k in np.unique(train.y):
            mean = X[train.y == k].mean(axis=0)
            centroids[k] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return NearestCentroidPredictor(encoder, centroids, c.scale, train.labels)
