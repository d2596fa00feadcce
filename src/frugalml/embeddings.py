"""The one embedding function: mean-pooled, normalized sentence vectors from a backbone.

Batches are formed from texts of similar token length (length bucketing), so little compute
goes to padding. Embeddings of training texts are cached on disk keyed by backbone and text.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.backbones import check_backbone_folder
from frugalml.costs import CostMeter, transformer_flops
from frugalml.errors import MissingExtraError

_COPIED = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def _torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401 - checked here so the error names the extra
    except ImportError:
        raise MissingExtraError("Pretrained encoders", "transformers") from None
    return torch


def pick_device() -> str:
    """CUDA when present, else Apple's MPS, else CPU."""
    torch = _torch()
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class Encoder:
    """A frozen transformer that turns texts into unit-length mean-pooled vectors."""

    def __init__(
        self,
        folder: Path,
        *,
        max_length: int = 128,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        torch = _torch()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a per-load weights bar is noise in our own progress

        self.folder = check_backbone_folder(Path(folder))
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device or pick_device()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        self.model = AutoModel.from_pretrained(str(self.folder), use_safetensors=True)
        self.model.eval().to(self.device)
        embedding_params = sum(p.numel() for p in self.model.embeddings.parameters())
        self.n_params = sum(p.numel() for p in self.model.parameters()) - embedding_params
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True
        )
        return list(encoded["input_ids"])

    def encode(self, texts: Sequence[str], meter: CostMeter | None = None) -> np.ndarray:
        """(len(texts), dim) float32; rows are in the order of `texts`."""
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        pad = self.tokenizer.pad_token_id or 0
        computed_tokens = 0
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                width = max(len(ids[i]) for i in batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                out[batch] = self._pool(input_ids.to(self.device), mask.to(self.device))
                computed_tokens += len(batch) * width
        if meter is not None:
            meter.add_flops(transformer_flops(self.n_params, computed_tokens))
        return out

    def _pool(self, input_ids: Any, mask: Any) -> np.ndarray:
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        pooled = self._torch.nn.functional.normalize(pooled.float(), dim=-1)
        return np.asarray(pooled.cpu().numpy(), dtype=np.float32)

    def _autocast(self) -> Any:
        torch = self._torch
        if self.device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def fingerprint(self) -> str:
        """Names the exact weights, tokenizer and settings: the embedding cache's key."""
        digest = hashlib.sha256(f"mean-normalized|{self.max_length}".encode())
        for name in _COPIED:
            path = self.folder / name
            if path.exists():
                with path.open("rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
        return digest.hexdigest()[:32]

    def save(self, folder: Path) -> None:
        """Copy the backbone's safe files (no pickles) so the bundle stands alone."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in _COPIED:
            if (self.folder / name).exists():
                shutil.copyfile(self.folder / name, folder / name)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FRUGALML_CACHE", Path.home() / ".cache" / "frugalml"))


class EmbeddingCache:
    """Per-text embeddings on disk, in safetensors shards under one folder per backbone."""

    def __init__(self, root: Path, key: str) -> None:
        self.folder = root / "embeddings" / key
        self._rows: dict[bytes, np.ndarray] | None = None

    def encode(
        self, encoder: Encoder, texts: Sequence[str], meter: CostMeter | None = None
    ) -> np.ndarray:
        rows = self._load()
        digests = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]
        missing = sorted({d: i for i, d in enumerate(digests) if d not in rows}.values())
        if missing:
            fresh = encoder.encode([texts[i] for i in missing], meter)
            self._append([digests[i] for i in missing], fresh)
            rows.update({digests[i]: fresh[k] for k, i in enumerate(missing)})
        return np.stack([rows[d] for d in digests]) if digests else np.zeros((0, encoder.dim))

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._rows is None:
            from safetensors.numpy import load_file

            self._rows = {}
            for shard in sorted(self.folder.glob("*.safetensors")):
                arrays = load_file(str(shard))
                for digest, vector in zip(arrays["digests"], arrays["vectors"], strict=True):
                    self._rows[digest.tobytes()] = vector
        return self._rows

    def _append(self, digests: list[bytes], vectors: np.ndarray) -> None:
        from safetensors.numpy import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{uuid.uuid4().hex}.tmp"
        digest_array = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 16)
        save_file({"digests": digest_array, "vectors": vectors}, str(tmp))
        tmp.rename(self.folder / f"{uuid.uuid4().hex}.safetensors")  # atomic: no torn shards
