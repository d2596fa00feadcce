"""Frozen pretrained embeddings and a logistic-regression head: transfer learning, cheapest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np
from pydantic import Field

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.forecast import (
    Forecast,
    memory_growth,
    remembered,
    rss_bytes,
    stopwatch,
    timed,
)
from frugalml.models.backbones import DEFAULT_BACKBONE, resolve_backbone
from frugalml.models.encoder import (
    EmbeddingCache,
    Encoder,
    default_cache_dir,
    embed_for_training,
    sorted_batches,
    sorted_padded_tokens,
    warm_encoder,
)
from frugalml.models.encoder_head import EncoderHeadPredictor
from frugalml.models.heads import LinearHead
from frugalml.strategies.base import StrategyConfig, register_strategy


class FrozenProbeConfig(StrategyConfig):
    kind: Literal["frozen_probe"] = Field("frozen_probe", description="The registry name.")
    backbone: str = Field(DEFAULT_BACKBONE, description="Packaged name, hf://ORG/NAME or folder.")
    max_length: int = Field(128, ge=8, description="Tokens per text; longer texts are truncated.")
    batch_size: int = Field(32, ge=1, description="Texts the encoder embeds at once.")
    Cs: tuple[float, ...] = Field(
        (3.0, 10.0, 30.0), min_length=1, description="Inverse L2 strengths tried on validation."
    )
    class_weight: Literal["balanced"] | None = Field(
        None, description="'balanced' weighs classes by inverse frequency; None does not."
    )
    cache: bool = Field(True, description="Cache training embeddings on disk ($FRUGALML_CACHE).")


@register_strategy(
    "frozen_probe",
    config=FrozenProbeConfig,
    predictor=EncoderHeadPredictor,
    cost_rank=1,
    extra="transformers",
    needs=("torch", "transformers"),
)
class FrozenProbeStrategy:
    """Mean-pooled embeddings from a frozen backbone, computed once, with a linear head."""

    def __init__(self, config: FrozenProbeConfig) -> None:
        self.config = config

    def fit(
        self,
        train: Dataset,
        val: Dataset,
        *,
        budget: Budget,
        meter: CostMeter,
        workdir: Path | None = None,
    ) -> EncoderHeadPredictor:
        c = self.config
        encoder = Encoder(
            resolve_backbone(c.backbone), max_length=c.max_length, batch_size=c.batch_size
        )
        X, X_val = embed_for_training(encoder, [train.texts, val.texts], meter, cache=c.cache)
        head = LinearHead.fit_select(
            X, train.y, X_val, val.y, len(train.labels), Cs=c.Cs, class_weight=c.class_weight
        )
        return EncoderHeadPredictor(encoder, head, train.labels, val_logits=head.logits(X_val))

    def forecast(self, train: Dataset, val: Dataset) -> Forecast:
        """Encoder load + embedding what the cache lacks (a token rate timed on real batches)
        + a head fit on synthetic rows, scaled to the training set."""
        c = self.config
        warm_encoder(resolve_backbone(c.backbone))
        base = rss_bytes()
        enc = encoder_calibration(c.backbone, c.max_length, c.batch_size, train, val)
        embed = enc.embed(enc.uncached([*train.texts, *val.texts], c.cache))
        n, k = len(train), len(train.labels)
        n_head = min(n, 1000)
        X = synthetic_embeddings(np.arange(n_head) % k, k, enc.dim)
        y = np.arange(n_head) % k
        head = timed(lambda: LinearHead.fit_select(X, y, X[:100], y[:100], k, Cs=c.Cs), "")
        n_present = int(np.count_nonzero(train.class_counts()))
        memory = enc.memory(len(enc.lengths)) + LinearHead.fit_bytes(n, enc.dim, n_present)
        return (
            enc.load
            + embed
            + head.scaled(n / n_head, f"head on {n_head} synthetic rows, scaled to {n}")
        ).with_memory(memory, base)


def synthetic_embeddings(y: np.ndarray, k: int, dim: int) -> np.ndarray:
    """Unit rows around one centre per class, shaped like sentence embeddings: a head fitted
    on pure noise never converges, and its fit time once forecast 4x the real head."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(k, dim))[y] + rng.normal(size=(len(y), dim))
    return np.asarray(X / np.linalg.norm(X, axis=1, keepdims=True), dtype=np.float32)


@dataclass(frozen=True)
class EncoderCalibration:
    """An encoder loaded and timed on the data once: what frozen_probe and hybrid share."""

    load: Forecast
    fingerprint: str  # the embedding cache's key
    dim: int
    batch_size: int
    lengths: dict[str, int]  # tokens of each training and validation text
    per_token: Forecast  # embedding time per padded token; zero when nothing was timed
    growth: int  # peak RSS growth of loading the encoder and embedding a few batches

    def uncached(self, texts: Sequence[str], cache: bool) -> list[str]:
        unique = list(dict.fromkeys(texts))
        if not cache:
            return unique
        return EmbeddingCache(default_cache_dir(), self.fingerprint).missing(unique)

    def embed(self, texts: Sequence[str]) -> Forecast:
        tokens = sorted_padded_tokens([self.lengths[t] for t in texts], self.batch_size)
        return self.per_token.scaled(tokens, f"{len(texts)} texts to embed, {tokens} tokens")

    def memory(self, n_texts: int) -> int:
        """The model and a batch's activations, plus `n_texts` embeddings (computed, cached
        rows and the stacked copy the head trains on)."""
        return self.growth + n_texts * (self.dim * 4 * 3 + 300)


def encoder_calibration(
    backbone: str, max_length: int, batch_size: int, train: Dataset, val: Dataset
) -> EncoderCalibration:
    """Load the encoder, tokenize the data and time up to 4 real batches (at most 1 in 8),
    once per data and settings in this process."""
    folder = resolve_backbone(backbone)
    key = ("encoder", str(folder), max_length, batch_size, train.fingerprint(), val.fingerprint())
    return cast(
        EncoderCalibration,
        remembered(key, lambda: _calibrate(folder, max_length, batch_size, train, val)),
    )


def _calibrate(
    folder: Path, max_length: int, batch_size: int, train: Dataset, val: Dataset
) -> EncoderCalibration:
    warm_encoder(folder)
    with memory_growth() as growth:
        with stopwatch() as load:
            encoder = Encoder(folder, max_length=max_length, batch_size=batch_size)
        texts = list(dict.fromkeys([*train.texts, *val.texts]))
        lengths = [len(x) for x in encoder.tokenize(texts)]
        # Time real batches (length-sorted chunks, as `encode` forms them) spread over the
        # length range: a random sample pads far more and over-forecast 4x on Banking77.
        chunks = sorted_batches(lengths, batch_size)
        # At most 1 batch in 8: timing more than that would cost a small data set's rung
        # half again (twice, plus a warm-up).
        timed_batches = min(4, max(1, len(chunks) // 8))
        picked = sorted({round(float(q)) for q in np.linspace(0, len(chunks) - 1, timed_batches)})
        rows = [i for p in (picked if chunks else []) for i in chunks[p]]
        sample = [texts[i] for i in rows]
        if sample:
            encoder.encode(sample[-8:])  # the first pass pays one-off kernel and thread start-up
        # On a busy machine one timing can be several times too slow; the faster of two is not.
        embed = min((timed(lambda: encoder.encode(sample), "") for _ in range(2)), key=_wall)
    tokens = sorted_padded_tokens([lengths[i] for i in rows], batch_size)
    return EncoderCalibration(
        load=load.forecast("load"),
        fingerprint=encoder.fingerprint(),
        dim=encoder.dim,
        batch_size=batch_size,
        lengths=dict(zip(texts, lengths, strict=True)),
        per_token=embed.scaled(1 / tokens if tokens else 0.0, ""),
        growth=growth.bytes,
    )


def _wall(forecast: Forecast) -> float:
    return forecast.wall_s
