"""The predictor every encoder-based rung ships: an encoder, mean pooling, a linear head.

Frozen probe, SetFit-style, LoRA (merged) and full fine-tuning differ in how they train, not
in what they serve, so they share this one predictor and its bundle layout. Its torch twin,
the module those rungs train, is `classifier_module.EncoderClassifier`.

Besides the `Predictor` contract it has the capabilities of `strategies.base`: `embed`
(sentence vectors), `export_onnx` (served by ONNX Runtime alone), and what `fit` reports
(`stopped`, `val_logits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.models.encoder import Encoder, TextEncoder, load_encoder, unit_rows
from frugalml.models.heads import LinearHead, softmax


class EncoderHeadPredictor:
    """Encoder (saved in the bundle as safetensors) → pooled vector → linear head."""

    onnx_precisions: tuple[str, ...] = ("fp32", "int8")

    def __init__(
        self,
        encoder: Encoder | TextEncoder,
        head: LinearHead,
        labels: tuple[str, ...],
        temperature: float = 1.0,
        *,
        val_logits: np.ndarray | None = None,
    ) -> None:
        self.encoder = encoder
        self.head = head
        self.labels = labels
        self.temperature = temperature
        self.stopped = ""  # "deadline" when training was cut short by the budget
        self.val_logits = val_logits  # the validation texts' logits, when `fit` computed them

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.head.logits(self.encoder.encode(texts))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(texts) / self.temperature)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence vectors: the pooled vectors the head reads, normalized."""
        return unit_rows(self.encoder.encode(texts))

    def logits_and_embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Both from one encoder pass (the head reads the pooled vectors `embed` normalizes)."""
        pooled = self.encoder.encode(texts)
        return self.head.logits(pooled), unit_rows(pooled)

    def save(self, folder: Path) -> dict[str, Any]:
        self.encoder.save(folder / "encoder")
        self.head.save(folder / "head.safetensors")
        return self._spec()

    def export_onnx(self, folder: Path, *, precision: str = "fp32") -> dict[str, Any]:
        """Like `save`, with the encoder (and its pooling) as an ONNX graph; the head stays."""
        details = self.encoder.export_onnx(folder / "encoder", precision=precision)
        self.head.save(folder / "head.safetensors")
        return {**self._spec(), "format": "onnx", "precision": precision, **details}

    def _spec(self) -> dict[str, Any]:
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
