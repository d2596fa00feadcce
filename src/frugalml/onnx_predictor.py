"""Serve an exported model with ONNX Runtime, `tokenizers` and numpy alone: no torch.

A serving install (`pip install 'frugalml[onnx]'`) is then a few tens of megabytes instead of
a deep-learning stack, and loads in well under a second. Texts are tokenized with the
model's own `tokenizer.json`, sorted by length and padded per batch, as in training.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.errors import BundleError, MissingExtraError
from frugalml.heads import softmax

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


class OnnxPredictor:
    """ONNX graph (input_ids, attention_mask → logits) plus its tokenizer."""

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        labels: tuple[str, ...],
        *,
        max_length: int,
        batch_size: int,
        pad_id: int,
        temperature: float = 1.0,
        info: dict[str, Any] | None = None,
    ) -> None:
        require_onnxruntime()
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_path, self.tokenizer_path = model_path, tokenizer_path
        self.labels = labels
        self.max_length, self.batch_size, self.pad_id = max_length, batch_size, pad_id
        self.temperature = temperature
        self.info = info or {}  # precision, fusions, parity: kept in the manifest
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))] if texts else []

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        ids = self.tokenize(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out: np.ndarray | None = None
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in idx)
            input_ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            (logits,) = self.session.run(
                ["logits"], {"input_ids": input_ids, "attention_mask": mask}
            )
            if out is None:
                out = np.zeros((len(ids), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
        if out is None:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(texts) / self.temperature)

    def save(self, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.model_path, folder / MODEL_FILE)
        shutil.copyfile(self.tokenizer_path, folder / TOKENIZER_FILE)
        return {
            "format": "onnx",
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "pad_id": self.pad_id,
            "temperature": self.temperature,
            **self.info,
        }

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], labels: tuple[str, ...]) -> OnnxPredictor:
        keys = ("max_length", "batch_size", "pad_id", "temperature")
        missing = [k for k in keys if not isinstance(spec.get(k), int | float)]
        if missing:
            raise BundleError(
                f"{folder}: the ONNX predictor's settings lack {', '.join(missing)}; "
                "the bundle is damaged"
            )
        return cls(
            folder / MODEL_FILE,
            folder / TOKENIZER_FILE,
            labels,
            max_length=int(spec["max_length"]),
            batch_size=int(spec["batch_size"]),
            pad_id=int(spec["pad_id"]),
            temperature=float(spec["temperature"]),
            info={k: v for k, v in spec.items() if k not in (*keys, "format")},
        )


def require_onnxruntime() -> None:
    for module in ("onnxruntime", "tokenizers"):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError("An ONNX bundle", "onnx")


def is_onnx(spec: dict[str, Any]) -> bool:
    return spec.get("format") == "onnx"
