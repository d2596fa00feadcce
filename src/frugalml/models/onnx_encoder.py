"""An exported encoder served by ONNX Runtime, `tokenizers` and numpy alone: no torch.

It stands in for `encoder.Encoder` inside any encoder-based predictor (the probe, hybrid,
fine-tuned rungs): same `encode(texts)` → pooled vectors, so heads and n-gram features stay
as they are and a serving install (`pip install 'frugalml[onnx]'`) needs no deep-learning
stack. Texts are tokenized with the model's own `tokenizer.json`, sorted by length and padded
per batch, as in training, with batches cut where padding would cost more than a call.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.errors import BundleError, ConfigError, require_extra
from frugalml.models.encoder import tight_batches

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
SETTINGS_FILE = "onnx.json"  # pad id, width, precision, fusions, parity
# What one ONNX Runtime call costs beyond its tokens, in tokens' worth of work: batches are
# split where padding would cost more than another call (`encoder.tight_batches`).
CALL_TOKENS = 8


@dataclass(frozen=True)
class SessionTuning:
    """How ONNX Runtime runs encoders loaded from now on in this process.

    `threads`: intra-op threads per session (None: ONNX Runtime's default, one per core).
    `spinning`: idle worker threads busy-wait for the next op. That is fastest for one caller
    alone, but in a server it takes CPU from the event loop and the other workers' sessions.
    """

    threads: int | None = None
    spinning: bool = True


_tuning = SessionTuning()


def tune_sessions(tuning: SessionTuning) -> None:
    """Set once per process, before loading (a server does it from its settings)."""
    global _tuning
    _tuning = tuning


class OnnxEncoder:
    """ONNX graph (input_ids, attention_mask → pooled embedding) plus its tokenizer."""

    trained = True  # its weights are its own: saving copies them as they are

    def __init__(
        self,
        folder: Path,
        *,
        max_length: int,
        batch_size: int,
        normalize: bool,
        settings: dict[str, Any] | None = None,
    ) -> None:
        require_onnxruntime()
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = folder
        self.max_length, self.batch_size, self.normalize = max_length, batch_size, normalize
        self.settings = settings if settings is not None else _read_settings(folder)
        self.pad_id = int(self.settings["pad_id"])
        self.call_tokens = CALL_TOKENS
        self.dim = int(self.settings["dim"])
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if _tuning.threads is not None:
            options.intra_op_num_threads = _tuning.threads
        if not _tuning.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))] if texts else []

    def encode(self, texts: Sequence[str], meter: Any = None) -> np.ndarray:
        """(len(texts), dim) float32 in the order of `texts`; normalized inside the graph."""
        ids = self.tokenize(texts)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for idx in tight_batches([len(x) for x in ids], self.batch_size, self.call_tokens):
            width = max(len(ids[i]) for i in idx)
            input_ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            (pooled,) = self.session.run(
                ["embedding"], {"input_ids": input_ids, "attention_mask": mask}
            )
            out[idx] = pooled
        return out

    @property
    def precision(self) -> str:
        return str(self.settings.get("precision", "fp32"))

    def export_onnx(self, folder: Path, *, precision: str = "fp32") -> dict[str, Any]:
        """Already ONNX: copied as it is, or quantized from fp32 to int8 (nothing to fuse)."""
        if precision == self.precision:
            self.save(folder)
        elif (self.precision, precision) == ("fp32", "int8"):
            from frugalml.models.onnx_export import quantize_encoder

            quantize_encoder(self.folder, folder, self.settings)
        else:
            raise ConfigError(
                f"an {self.precision} ONNX encoder cannot be exported at {precision!r}",
                ["export the uncompressed model (RUN_DIR/candidates/<rung>) instead"],
            )
        return {}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in (MODEL_FILE, TOKENIZER_FILE):
            shutil.copyfile(self.folder / name, folder / name)
        write_settings(folder, self.settings)


def is_onnx_folder(folder: Path) -> bool:
    return (folder / MODEL_FILE).exists()


def write_settings(folder: Path, settings: dict[str, Any]) -> None:
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def _read_settings(folder: Path) -> dict[str, Any]:
    try:
        settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise BundleError(f"{folder}: {SETTINGS_FILE} is missing or damaged ({err})") from None
    if not isinstance(settings, dict) or not all(
        isinstance(settings.get(k), int) for k in ("pad_id", "dim")
    ):
        raise BundleError(f"{folder}/{SETTINGS_FILE} must give integer 'pad_id' and 'dim'")
    return settings


def require_onnxruntime() -> None:
    require_extra("An ONNX bundle", "onnx", "onnxruntime", "tokenizers")


def is_onnx(spec: dict[str, Any]) -> bool:
    """Whether a manifest's predictor spec says its encoder was exported to ONNX."""
    return spec.get("format") == "onnx"
