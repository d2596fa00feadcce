"""One linear head over TF-IDF n-grams and frozen embeddings together.

Words the encoder blurs (product names, amounts, negations) survive in the n-grams; meaning
the n-grams miss lives in the embeddings. After `frozen_probe`, the embeddings come from the
disk cache, so this rung costs little more than `tfidf`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from scipy import sparse

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.forecast import Forecast, rss_bytes, timed_mean, warm_up
from frugalml.models.backbones import DEFAULT_BACKBONE, resolve_backbone
from frugalml.models.encoder import (
    EmbeddingCache,
    Encoder,
    TextEncoder,
    default_cache_dir,
    embed_for_training,
    load_encoder,
    unit_rows,
    warm_encoder,
)
from frugalml.models.heads import LinearHead, softmax
from frugalml.models.onnx_ngrams import OnnxNgramFeatures
from frugalml.strategies.base import StrategyConfig, register_strategy
from frugalml.strategies.frozen_probe import encoder_calibration, synthetic_embeddings
from frugalml.strategies.tfidf import (
    NgramFeatures,
    TfidfConfig,
    head_scale,
    import_sklearn,
    load_ngrams,
    ngram_calibration,
)


class HybridConfig(StrategyConfig):
    kind: Literal["hybrid"] = Field("hybrid", description="The registry name.")
    backbone: str = Field(DEFAULT_BACKBONE, description="Packaged name, hf://ORG/NAME or folder.")
    max_length: int = Field(128, ge=8, description="Tokens per text for the encoder.")
    batch_size: int = Field(32, ge=1, description="Texts the encoder embeds at once.")
    ngrams: TfidfConfig = Field(TfidfConfig(), description="The n-gram features' settings.")
    embedding_weight: float = Field(
        1.0, gt=0, description="Scale of the unit-length embedding beside the n-gram blocks."
    )
    Cs: tuple[float, ...] = Field(
        (3.0, 10.0, 30.0), min_length=1, description="Inverse L2 strengths tried on validation."
    )
    class_weight: Literal["balanced"] | None = Field(
        None, description="'balanced' weighs classes by inverse frequency; None does not."
    )
    cache: bool = Field(True, description="Reuse cached embeddings ($FRUGALML_CACHE).")


class HybridPredictor:
    """[n-gram TF-IDF | weight * embedding] → linear head."""

    onnx_precisions: tuple[str, ...] = ("fp32", "int8")

    def __init__(
        self,
        ngrams: NgramFeatures | OnnxNgramFeatures,
        encoder: Encoder | TextEncoder,
        head: LinearHead,
        weight: float,
        labels: tuple[str, ...],
        temperature: float = 1.0,
        *,
        val_logits: np.ndarray | None = None,
    ) -> None:
        self.ngrams, self.encoder, self.head, self.weight = ngrams, encoder, head, weight
        self.labels = labels
        self.temperature = temperature
        self.stopped = ""  # no training loop: nothing cuts it short
        self.val_logits = val_logits  # the validation texts' logits, computed while fitting

    def features(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> Any:
        vectors = self.encoder.encode(texts) if embeddings is None else embeddings
        dense = sparse.csr_matrix(vectors * self.weight)
        return sparse.hstack([self.ngrams.transform(texts), dense], format="csr")

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.head.logits(self.features(texts))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(texts) / self.temperature)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence vectors from the encoder (the n-grams are not a sentence vector)."""
        return unit_rows(self.encoder.encode(texts))

    def logits_and_embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Both from one encoder pass."""
        vectors = self.encoder.encode(texts)
        return self.head.logits(self.features(texts, vectors)), unit_rows(vectors)

    def save(self, folder: Path) -> dict[str, Any]:
        specs = self.ngrams.save(folder)
        self.encoder.save(folder / "encoder")
        self.head.save(folder / "head.safetensors")
        return self._spec(specs)

    def export_onnx(self, folder: Path, *, precision: str = "fp32") -> dict[str, Any]:
        """Like `save`, with the n-grams and the encoder as ONNX graphs; the head stays."""
        folder.mkdir(parents=True, exist_ok=True)
        specs = self.ngrams.export_onnx(folder)
        details = self.encoder.export_onnx(folder / "encoder", precision=precision)
        self.head.save(folder / "head.safetensors")
        return {**self._spec(specs), "format": "onnx", "precision": precision, **details}

    def _spec(self, vectorizers: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "vectorizers": vectorizers,
            "max_length": self.encoder.max_length,
            "batch_size": self.encoder.batch_size,
            "embedding_weight": self.weight,
            "temperature": self.temperature,
        }

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], labels: tuple[str, ...]) -> HybridPredictor:
        encoder = load_encoder(
            folder / "encoder",
            max_length=int(spec["max_length"]),
            batch_size=int(spec["batch_size"]),
            normalize=True,
        )
        return cls(
            load_ngrams(folder, spec),
            encoder,
            LinearHead.load(folder / "head.safetensors"),
            float(spec["embedding_weight"]),
            labels,
            float(spec["temperature"]),
        )


@register_strategy(
    "hybrid",
    config=HybridConfig,
    predictor=HybridPredictor,
    cost_rank=2,
    extra="transformers",
    needs=("torch", "transformers"),
)
class HybridStrategy:
    """TF-IDF n-grams and frozen embeddings side by side, one linear head: cheap and strong."""

    def __init__(self, config: HybridConfig) -> None:
        self.config = config

    def fit(
        self,
        train: Dataset,
        val: Dataset,
        *,
        budget: Budget,
        meter: CostMeter,
        workdir: Path | None = None,
    ) -> HybridPredictor:
        c = self.config
        encoder = Encoder(
            resolve_backbone(c.backbone), max_length=c.max_length, batch_size=c.batch_size
        )
        E, E_val = embed_for_training(encoder, [train.texts, val.texts], meter, cache=c.cache)
        ngrams, X_ngrams = NgramFeatures.fit(train.texts, c.ngrams)
        unfitted = HybridPredictor(
            ngrams, encoder, LinearHead(np.zeros(0), np.zeros(0)), c.embedding_weight, train.labels
        )
        X = sparse.hstack([X_ngrams, sparse.csr_matrix(E * c.embedding_weight)], format="csr")
        X_val = unfitted.features(val.texts, E_val)
        head = LinearHead.fit_select(
            X,
            train.y,
            X_val,
            val.y,
            len(train.labels),
            Cs=c.Cs,
            class_weight=c.class_weight,
        )
        return HybridPredictor(
            ngrams, encoder, head, c.embedding_weight, train.labels, val_logits=head.logits(X_val)
        )

    def forecast(self, train: Dataset, val: Dataset) -> Forecast:
        """Encoder load, embedding what the cache lacks, vectorizing once, and the head once
        per C: timed on the tfidf forecast's subsample with its embeddings beside the n-grams
        (one fit at the middle C), scaled by lbfgs' work (`head_scale`). The n-gram and
        encoder calibrations are the ones the tfidf and frozen_probe forecasts made, when
        they ran on the same data."""
        c, n = self.config, len(train)
        warm_up(("scikit-learn",), import_sklearn)
        warm_encoder(resolve_backbone(c.backbone))
        base = rss_bytes()
        cal = ngram_calibration(train, c.ngrams)
        enc = encoder_calibration(c.backbone, c.max_length, c.batch_size, train, val)
        embed = enc.embed(enc.uncached([*train.texts, *val.texts], c.cache))
        sample = cal.sample
        E = None
        if c.cache:
            E = EmbeddingCache(default_cache_dir(), enc.fingerprint).cached(sample.texts)
        if E is None:  # not embedded yet: rows shaped like embeddings
            E = synthetic_embeddings(sample.y, len(train.labels), enc.dim)
        X = sparse.hstack([cal.X, sparse.csr_matrix(E * c.embedding_weight)], format="csr")
        C = sorted(c.Cs)[len(c.Cs) // 2]
        head = timed_mean(
            lambda: LinearHead.fit(
                X, sample.y, len(train.labels), C=C, class_weight=c.class_weight
            ),
            "",
        ).scaled(len(c.Cs), "")
        k = int(np.count_nonzero(train.class_counts()))
        memory = (
            enc.memory(len(enc.lengths))
            + cal.memory(n, LinearHead.fit_bytes(n, cal.features_full + enc.dim, k))
            + n * enc.dim * 12 * 2  # the embeddings as a sparse block, and hstack's copy
        )
        scale = head_scale(
            cal.n_sub,
            n,
            X.nnz,
            (cal.X.nnz + cal.n_sub * enc.dim) * n / cal.n_sub,
            X.shape[1],
            cal.features_full + enc.dim,
            k,
        )
        vectorize = cal.vectorize.scaled(n / cal.n_sub, f"n-grams of {cal.n_sub} of {n}, linearly")
        basis = f"{len(c.Cs)} heads timed on {cal.n_sub}, scaled {scale:.1f}x by lbfgs' work"
        parts = enc.load + embed + vectorize + head.scaled(scale, basis)
        return parts.with_memory(memory, base)
