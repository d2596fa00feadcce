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
from typing import Any, Protocol

import numpy as np

from frugalml.costs import CostMeter, transformer_flops
from frugalml.errors import MissingExtraError
from frugalml.models.backbones import check_backbone_folder

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


def mean_pool(hidden: Any, mask: Any) -> Any:
    """Average of the token vectors that are not padding: how MiniLM-style encoders were trained."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): a dot product is then a cosine."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices in batches of similar length (a stable sort): little compute goes to padding.

    Every length-sorted pass (encoding, batched logits, cached layer states, ONNX Runtime)
    forms its batches here and writes each batch's results back at its indices.
    """
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def tight_batches(lengths: Sequence[int], max_rows: int, call_tokens: int) -> list[np.ndarray]:
    """Length-sorted batches of at most `max_rows` that minimise the tokens computed (padding
    included) plus `call_tokens` for each call: the cost of a call in tokens' worth of work.

    Within one serving call of 32 short texts, fixed batches pad every text to the longest
    (on Banking77, twice the CPU of batches of 8); one batch per text pays the per-call cost
    32 times. Exact dynamic programming over the sorted lengths, O(len * max_rows).
    """
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    width = [int(lengths[i]) for i in order]
    best = [0.0] + [float("inf")] * len(order)
    start_of = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):  # the batch ending at `end` is padded to width[end-1]
        for start in range(max(0, end - max_rows), end):
            cost = best[start] + call_tokens + (end - start) * width[end - 1]
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    batches, end = [], len(order)
    while end > 0:
        batches.append(order[start_of[end] : end])
        end = start_of[end]
    return batches[::-1]


def pad_batch(ids: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) padded to the longest sequence in this batch only."""
    torch = _torch()
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def longest_input(tokenizer: Any, config: Any) -> int:
    """Tokens the model reads at most: the tokenizer's `model_max_length` where the backbone
    sets it (transformers uses a huge number for "unknown"), else its position table."""
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if 0 < limit < 1_000_000:
        return limit
    return int(getattr(config, "max_position_embeddings", 512))


def sorted_padded_tokens(lengths: Sequence[int], batch_size: int) -> int:
    """Tokens a length-sorted pass computes, padding included: what its time scales with."""
    width = np.asarray(lengths, dtype=np.int64)
    batches = sorted_batches(lengths, batch_size)
    return sum(int(width[batch].max()) * len(batch) for batch in batches)


class Encoder:
    """A transformer that turns texts into mean-pooled vectors (unit length when `normalize`)."""

    def __init__(
        self,
        folder: Path,
        *,
        max_length: int = 128,
        batch_size: int = 32,
        device: str | None = None,
        normalize: bool = True,
    ) -> None:
        torch = _torch()
        from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # Per-load and per-save bars ("Loading weights", "Writing model shards") are noise
        # beside our own progress display.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        disable_progress_bars()

        self.folder = check_backbone_folder(Path(folder))
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = device or pick_device()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        self.model = AutoModel.from_pretrained(str(self.folder), use_safetensors=True)
        # A longer setting than the model's position table crashes on long texts only.
        self.max_length = min(max_length, longest_input(self.tokenizer, self.model.config))
        self.model.eval().to(self.device)
        embedding_params = sum(p.numel() for p in self.model.embeddings.parameters())
        self.n_params = sum(p.numel() for p in self.model.parameters()) - embedding_params
        self.dim = int(self.model.config.hidden_size)
        self.trained = False  # set when a strategy fine-tunes self.model in place
        self._torch = torch

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:  # tokenizers reject an empty batch
            return []
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
        pad = self.pad_id
        computed_tokens = 0
        with torch.inference_mode(), self._autocast():
            for batch in sorted_batches([len(x) for x in ids], self.batch_size):
                input_ids, mask = pad_batch([ids[i] for i in batch], pad)
                out[batch] = self._pool(input_ids.to(self.device), mask.to(self.device))
                computed_tokens += input_ids.numel()
        if meter is not None:
            meter.add_flops(transformer_flops(self.n_params, computed_tokens))
        return out

    def _pool(self, input_ids: Any, mask: Any) -> np.ndarray:
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        pooled = mean_pool(hidden, mask).float()
        if self.normalize:
            pooled = self._torch.nn.functional.normalize(pooled, dim=-1)
        return np.asarray(pooled.cpu().numpy(), dtype=np.float32)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)

    def _autocast(self) -> Any:
        torch = self._torch
        if self.device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def fingerprint(self) -> str:
        """Names the exact weights, tokenizer and settings: the embedding cache's key."""
        digest = hashlib.sha256(f"mean|{self.normalize}|{self.max_length}".encode())
        for name in _COPIED:
            path = self.folder / name
            if path.exists():
                with path.open("rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
        return digest.hexdigest()[:32]

    def export_onnx(self, folder: Path, *, precision: str = "fp32") -> dict[str, Any]:
        """Write this encoder and its pooling as an ONNX encoder folder (`OnnxEncoder` serves
        it without torch); return what the export did (the fused operators)."""
        from frugalml.models.onnx_export import export_encoder

        return export_encoder(self, folder, precision)

    def save(self, folder: Path) -> None:
        """Weights as safetensors and the tokenizer as JSON/text, so the bundle stands alone.

        A frozen encoder's files are copied as they are; a fine-tuned one is serialized.
        """
        folder.mkdir(parents=True, exist_ok=True)
        if self.trained:
            self.model.save_pretrained(str(folder), safe_serialization=True)
            self.tokenizer.save_pretrained(str(folder))
            return
        for name in _COPIED:
            if (self.folder / name).exists():
                shutil.copyfile(self.folder / name, folder / name)


class TextEncoder(Protocol):
    """What predictors need of an encoder: `Encoder` (torch) or an exported `OnnxEncoder`."""

    max_length: int
    batch_size: int
    normalize: bool

    def encode(self, texts: Sequence[str], meter: CostMeter | None = None) -> np.ndarray: ...

    def export_onnx(self, folder: Path, *, precision: str = "fp32") -> dict[str, Any]: ...

    def save(self, folder: Path) -> None: ...


def warm_encoder(folder: Path) -> None:
    """Load `folder`'s model once in this process, untimed, before a forecast times a load:
    the first load pays one-off imports and start-up (4 CPU-s for MiniLM, 0.1 s after it)."""
    from frugalml.forecast import warm_up

    warm_up(("encoder", str(folder)), lambda: Encoder(folder))


def load_encoder(folder: Path, *, max_length: int, batch_size: int, normalize: bool) -> TextEncoder:
    """A bundle's encoder: ONNX Runtime when it was exported (no torch import), else torch."""
    from frugalml.models.onnx_encoder import OnnxEncoder, is_onnx_folder

    if is_onnx_folder(folder):
        return OnnxEncoder(
            folder, max_length=max_length, batch_size=batch_size, normalize=normalize
        )
    return Encoder(folder, max_length=max_length, batch_size=batch_size, normalize=normalize)


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
        digests = [_digest(t) for t in texts]
        missing = sorted({d: i for i, d in enumerate(digests) if d not in rows}.values())
        if missing:
            fresh = encoder.encode([texts[i] for i in missing], meter)
            self._append([digests[i] for i in missing], fresh)
            rows.update({digests[i]: fresh[k] for k, i in enumerate(missing)})
        return np.stack([rows[d] for d in digests]) if digests else np.zeros((0, encoder.dim))

    def cached(self, texts: Sequence[str]) -> np.ndarray | None:
        """The cached embeddings of `texts`, or None when any is not cached."""
        rows = self._load()
        digests = [_digest(t) for t in texts]
        if not digests or any(d not in rows for d in digests):
            return None
        return np.stack([rows[d] for d in digests])

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The texts whose embeddings are not cached yet."""
        rows = self._load()
        return [t for t in texts if _digest(t) not in rows]

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


def embed_for_training(
    encoder: Encoder, parts: Sequence[Sequence[str]], meter: CostMeter, *, cache: bool
) -> list[np.ndarray]:
    """Embeddings of each text list (e.g. train and validation), through the disk cache when
    `cache` is set; what a strategy embeds once and then fits heads on."""
    if not cache:
        return [encoder.encode(texts, meter) for texts in parts]
    store = EmbeddingCache(default_cache_dir(), encoder.fingerprint())
    return [store.encode(encoder, texts, meter) for texts in parts]


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def text_encoder(
    backbone: str | Path = "minilm", *, max_length: int = 128, batch_size: int = 32
) -> Encoder:
    """A frozen encoder of a backbone (a packaged name, a folder or hf://ORG/NAME): what an
    application keeps in its bundle (`encoder.save(folder)`, `load_encoder(folder, ...)`) to
    embed texts it has not seen, e.g. items added after training."""
    from frugalml.models.backbones import resolve_backbone

    return Encoder(resolve_backbone(backbone), max_length=max_length, batch_size=batch_size)


def embed_texts(
    texts: Sequence[str],
    backbone: str | Path | Encoder = "minilm",
    *,
    max_length: int = 128,
    batch_size: int = 32,
    cache: bool = True,
    meter: CostMeter | None = None,
) -> np.ndarray:
    """Unit-length sentence vectors of `texts` from a frozen backbone (a packaged name, a
    folder, hf://ORG/NAME, or a `text_encoder`), through the disk cache: what applications
    embed items, documents or queries with."""
    encoder = (
        backbone
        if isinstance(backbone, Encoder)
        else text_encoder(backbone, max_length=max_length, batch_size=batch_size)
    )
    if not cache:
        return encoder.encode(texts, meter)
    return EmbeddingCache(default_cache_dir(), encoder.fingerprint()).encode(encoder, texts, meter)
