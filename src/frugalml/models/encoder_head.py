"""The predictor every encoder-based rung ships: an encoder, mean pooling, a linear head.

Frozen probe, SetFit-style, LoRA (merged) and full fine-tuning differ in how they train, not
in what they serve, so they share this one predictor and its bundle layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.models.encoder import Encoder, TextEncoder, load_encoder
from frugalml.models.heads import LinearHead, softmax


class EncoderHeadPredictor:
    """Encoder (saved in the bundle as safetensors) → pooled vector → linear head."""

    def __init__(
        self,
        encoder: Encoder | TextEncoder,
        head: LinearHead,
        labels: tuple[str, ...],
        temperature: float = 1.0,
    ) -> None:
        self.encoder = encoder
        self.head = head
        self.labels = labels
        self.temperature = temperature
        self.stopped = ""  # "deadline" when training was cut short by the budget

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.head.logits(self.encoder.encode(texts))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(texts) / self.temperature)

    def save(self, folder: Path) -> dict[str, Any]:
        self.encoder.save(folder / "encoder")
        self.head.save(folder / "head.safetensors")
        return {
            "max_length": self.encoder.max_length,
            "batch_size": self.encoder.batch_size,
            "pooling": "mean",
            "normalize": self.encoder.normalize,
            "temperature": self.temperature,
        }

    @classmethod
    def load(
        cls, folder: Path, spec: dict[str, Any], labels: tuple[str, ...]
    ) -> EncoderHeadPredictor:
        encoder = load_encoder(
            folder / "encoder",
            max_length=int(spec["max_length"]),
            batch_size=int(spec["batch_size"]),
            normalize=bool(spec["normalize"]),
        )
        head = LinearHead.load(folder / "head.safetensors")
        return cls(encoder, head, labels, float(spec["temperature"]))
