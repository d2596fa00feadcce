"""SetFit: contrastive fine-tuning of the encoder on sentence pairs, then a linear head.

A few labeled examples make many pairs (same class: similar; different: dissimilar), so even
8 examples per class can reshape the embedding space before the head is fit. This follows
Tunstall et al. (2022) and the `setfit` package, rebuilt on frugalml's one training loop and
encoder, and ships the same bundle as the frozen probe: a (tuned) encoder and a linear head.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from frugalml.config import Budget
from frugalml.costs import CostMeter, transformer_flops
from frugalml.data.dataset import Dataset
from frugalml.forecast import Forecast, memory_growth, rss_bytes, stopwatch
from frugalml.metrics import macro_f1
from frugalml.models.backbones import DEFAULT_BACKBONE, resolve_backbone
from frugalml.models.encoder import Encoder, mean_pool, pad_batch, warm_encoder
from frugalml.models.encoder_head import EncoderHeadPredictor
from frugalml.models.heads import LinearHead
from frugalml.strategies.base import StrategyConfig, register_strategy
from frugalml.training import loop as training
from frugalml.training.loop import Batch, TrainConfig, TrainState

# Under a wall budget, the seconds left once embedding for the head is set aside are the
# tuning's: pairs are planned for PLANNED_SHARE of them (optimizer steps and the head's fit use
# the rest) and the loop stops at DEADLINE_SHARE if the forecast was still too low.
PLANNED_SHARE = 0.7
DEADLINE_SHARE = 0.85
FORWARD_SHARE = 1 / 3  # embedding is a forward pass: 2·N·T of training's 6·N·T FLOPs
TIMED_BATCHES = 3  # the first warms up; the others are timed


class SetfitConfig(StrategyConfig):
    kind: Literal["setfit"] = Field("setfit", description="The registry name.")
    backbone: str = Field(DEFAULT_BACKBONE, description="Packaged name, hf://ORG/NAME or folder.")
    max_length: int = Field(64, ge=8, description="Tokens per text; longer texts are truncated.")
    shots: int | None = Field(
        None,
        ge=1,
        description="Examples per class drawn from the training set (all of a smaller class); "
        "None trains on every example.",
    )
    iterations: int = Field(
        20, ge=1, description="Pair rounds: each gives every example one positive and one negative."
    )
    max_pairs: int = Field(
        4000, ge=2, description="Most pairs trained on; a wall-clock budget may lower it further."
    )
    freeze_embeddings: bool = Field(
        True,
        description="Keep the token-embedding table fixed: half of MiniLM's weights, whose "
        "gradients and optimizer updates cost about a fifth of the training CPU.",
    )
    Cs: tuple[float, ...] = Field(
        (3.0, 10.0, 30.0), min_length=1, description="Inverse L2 strengths tried on validation."
    )
    train: TrainConfig = Field(
        TrainConfig(epochs=1, lr=2e-5, batch_size=16, warmup_ratio=0.1),
        description="The contrastive phase; batch_size counts pairs, head_lr is unused.",
    )


@dataclass(frozen=True)
class Pairs:
    """Indices of two training examples and their target cosine: 1 same class, 0 different."""

    a: np.ndarray
    b: np.ndarray
    label: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.a)

    def first(self, n: int) -> Pairs:
        """The first n pairs, rounded down to even: positives and negatives stay balanced."""
        n -= n % 2
        return Pairs(self.a[:n], self.b[:n], self.label[:n])


def few_shot(data: Dataset, shots: int, seed: int) -> Dataset:
    """`shots` examples per class drawn with `seed`; a class with fewer gives all it has."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(data.y == c))[:shots] for c in range(len(data.labels))]
    return data.subset(np.sort(np.concatenate(picked)), f"{data.name}:{shots}-shot")


def sample_pairs(y: np.ndarray, *, iterations: int, max_pairs: int, seed: int) -> Pairs:
    """SetFit's pairs: each round gives every example one same-class and one other-class partner.

    Rounds stop at `max_pairs`; examples come in a fresh random order each round, so a cut
    round favours none of them. A positive partner is never the example itself unless it is
    alone in its class.
    """
    if len(np.unique(y)) < 2:
        raise ValueError("SetFit pairs need at least 2 classes in the training data")
    rng = np.random.default_rng(seed)
    n = len(y)
    order = np.argsort(y, kind="stable")  # the examples, grouped by class
    counts = np.bincount(y)
    starts = np.cumsum(counts) - counts
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    a, b = [], []
    for _ in range(min(iterations, math.ceil(max_pairs / (2 * n)))):
        anchor = rng.permutation(n)
        k, start = counts[y[anchor]], starts[y[anchor]]
        shift = rng.integers(1, np.maximum(k, 2))  # 1..k-1 places on within the class
        positive = order[start + (rank[anchor] - start + shift) % k]
        other = rng.integers(0, n - k)  # a position among the other classes' examples
        negative = order[np.where(other < start, other, other + k)]
        a.append(np.repeat(anchor, 2))
        b.append(np.stack([positive, negative], axis=1).ravel())
    label = np.tile(np.array([1.0, 0.0], dtype=np.float32), n * len(a))
    return Pairs(np.concatenate(a), np.concatenate(b), label).first(max_pairs)


def cosine_loss(model: Any, batch: Batch) -> Any:
    """SetFit's CosineSimilarityLoss: MSE between cos(u, v) of pooled embeddings and the target.

    A batch embeds each of its distinct texts once; `a` and `b` pick each pair's two rows.
    """
    from torch.nn import functional

    mask = batch["attention_mask"]
    hidden = model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
    pooled = mean_pool(hidden, mask).float()
    cosine = functional.cosine_similarity(pooled[batch["a"]], pooled[batch["b"]])
    return functional.mse_loss(cosine, batch["labels"])


def pair_batches(
    ids: list[list[int]], pairs: Pairs, batch_size: int, seed: int, pad_id: int
) -> training.Bucketed:
    """Length-bucketed batches of pairs, the same ones for the same epoch (resumable).

    With few shots, the pairs of a batch share many texts: each is embedded once (the loss
    and its gradient are the same). At 8 shots on 3 classes that is a third of the tokens.
    """
    import torch

    lengths = np.array([len(x) for x in ids])
    pair_lengths = np.maximum(lengths[pairs.a], lengths[pairs.b])

    def collate(idx: np.ndarray) -> Batch:
        texts, rows = np.unique(np.concatenate([pairs.a[idx], pairs.b[idx]]), return_inverse=True)
        input_ids, mask = pad_batch([ids[i] for i in texts], pad_id)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "a": torch.as_tensor(rows[: len(idx)]),
            "b": torch.as_tensor(rows[len(idx) :]),
            "labels": torch.as_tensor(pairs.label[idx]),
        }

    return training.Bucketed(pair_lengths, batch_size, seed, collate)


def seconds_per_token(encoder: Encoder, batches: Sequence[Batch], meter: CostMeter) -> float:
    """Forward + backward seconds per padded token, timed on real batches; weights unchanged.

    The first batch only warms up (allocations, kernel choice) unless it is the only one.
    """
    model = encoder.model.train()
    seconds, tokens = 0.0, 0
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        cosine_loss(model, {k: v.to(encoder.device) for k, v in batch.items()}).backward()
        if i > 0 or len(batches) == 1:
            seconds += time.perf_counter() - start
            tokens += int(batch["input_ids"].numel())
        meter.add_flops(_training_flops(encoder, batch))
    model.zero_grad(set_to_none=True)  # the loop's first step must not see these gradients
    return seconds / max(tokens, 1)


def budget_cap(pairs: Pairs, seconds_per_pair: float, epochs: int, seconds: float) -> Pairs:
    """The first pairs (all rounds in order) whose training is forecast to take `seconds`."""
    return pairs.first(int(max(seconds, 0.0) / (seconds_per_pair * epochs)))


def _training_flops(encoder: Encoder, batch: Batch) -> float:
    return transformer_flops(encoder.n_params, int(batch["input_ids"].numel()), training=True)


class HeadOnValidation:
    """The loop's evaluation: embed, fit the head, score macro-F1 on validation.

    It keeps the embeddings and head of the best epoch, so that with the default single
    epoch, evaluating is the final step rather than a second pass over the data.
    """

    def __init__(
        self,
        encoder: Encoder,
        train: Dataset,
        val: Dataset,
        Cs: tuple[float, ...],
        meter: CostMeter,
    ) -> None:
        self.encoder, self.train, self.val, self.Cs, self.meter = encoder, train, val, Cs, meter
        self.scores: list[float] = []
        self.best: tuple[np.ndarray, LinearHead] | None = None

    def __call__(self, model: Any) -> float:
        model.eval()  # no dropout while embedding; the loop sets train mode each epoch
        X_val, head = self.fit_head()
        score = macro_f1(self.val.y, head.logits(X_val).argmax(1), len(self.val.labels))
        if not self.scores or score > max(self.scores):
            self.best = (X_val, head)
        self.scores.append(score)
        return score

    def fit_head(self) -> tuple[np.ndarray, LinearHead]:
        """Validation embeddings and the head chosen on them, from the encoder as it is now."""
        X, X_val = (self.encoder.encode(d.texts, self.meter) for d in (self.train, self.val))
        head = LinearHead.fit_select(
            X, self.train.y, X_val, self.val.y, len(self.train.labels), Cs=self.Cs
        )
        return X_val, head

    def final(self, state: TrainState | None) -> tuple[np.ndarray, LinearHead]:
        """Reuse the best epoch's result when the loop kept that epoch's weights (no resume)."""
        if state is not None and self.best is not None and len(self.scores) == len(state.history):
            return self.best
        return self.fit_head()


@dataclass(eq=False)
class SetfitTuning:
    """SetFit's contrastive phase as a job in the shape of `finetune.FineTune` (`model`,
    `batches`, `train`, `finish`), so the ladder runs it data-parallel as it runs the other
    torch rungs: the loop trains the encoder body on pairs, then `finish` fits the head."""

    encoder: Encoder
    model: Any  # the encoder body: what the loop trains (DDP-wrapped on several ranks)
    batches: training.Bucketed
    evaluate: HeadOnValidation
    config: TrainConfig
    train_data: Dataset  # the (few-shot) examples the pairs are drawn from
    pairs: Pairs
    deadline: float | None = None  # from the pairs' budget forecast, when one was made

    def train(self, *, budget: Budget, meter: CostMeter, workdir: Path | None) -> TrainState:
        """The loop on the pairs. Without a forecast deadline (under DDP), the tuning stops
        at `DEADLINE_SHARE` of the wall budget, leaving the rest for the head."""
        deadline = self.deadline
        if deadline is None and budget.max_wall_s is not None:
            deadline = time.perf_counter() + DEADLINE_SHARE * budget.max_wall_s
        return training.train(
            self.model,
            self.batches,
            cosine_loss,
            self.evaluate,
            self.config,
            head_prefixes=(),  # no new layers: every weight is the pretrained body's
            checkpoint_dir=workdir / "checkpoints" if workdir else None,
            deadline=deadline,
            meter=meter,
            flops_per_batch=lambda batch: _training_flops(self.encoder, batch),
        )

    def finish(self, state: TrainState | None) -> EncoderHeadPredictor:
        """The tuned encoder and the head chosen on validation (the best epoch's, kept by
        the evaluation when it ran here; fitted now otherwise). `state` None: no pairs."""
        self.encoder.model.eval()
        self.encoder.trained = state is not None and state.step > 0
        X_val, head = self.evaluate.final(state)
        labels = self.train_data.labels
        return EncoderHeadPredictor(self.encoder, head, labels, val_logits=head.logits(X_val))


@register_strategy(
    "setfit",
    config=SetfitConfig,
    predictor=EncoderHeadPredictor,
    cost_rank=4,
    extra="transformers",
    needs=("torch", "transformers"),
)
class SetfitStrategy:
    """Contrastive pairs tune the encoder, then a linear head: strong with few labels.

    After `fit`, `train_` is the (few-shot) data it learned from, `pairs_` the pairs it
    tuned on, and `state_` the loop's record (None when the budget left time for no pairs).
    """

    def __init__(self, config: SetfitConfig) -> None:
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
        job = self.fine_tuning(train, val, meter=meter, budget=budget)
        self.state_ = job.train(budget=budget, meter=meter, workdir=workdir) if job.pairs else None
        self.pairs_, self.train_ = job.pairs, job.train_data
        return job.finish(self.state_)

    def fine_tuning(
        self, train: Dataset, val: Dataset, *, meter: CostMeter, budget: Budget | None = None
    ) -> SetfitTuning:
        """The contrastive phase `fit` runs, built but not trained: the ladder trains it on
        several ranks (each takes its shard of every batch of pairs; rank 0 alone fits and
        scores the head). A wall `budget` cuts the pairs to what a timing of a few batches
        forecasts to fit; under DDP none is given (each rank would time its own), and the
        deadline all ranks agree on bounds the tuning instead (`SetfitTuning.train`)."""
        c, started = self.config, time.perf_counter()
        encoder = Encoder(
            resolve_backbone(c.backbone), max_length=c.max_length, batch_size=c.train.batch_size
        )
        if c.shots is not None:
            train = few_shot(train, c.shots, c.train.seed)
        ids = encoder.tokenize(train.texts)
        pairs = sample_pairs(
            train.y, iterations=c.iterations, max_pairs=c.max_pairs, seed=c.train.seed
        )
        deadline = None
        if budget is not None and budget.max_wall_s is not None:
            end = started + budget.max_wall_s
            pairs, deadline = self._fit_to_budget(encoder, ids, val, pairs, end, meter)
        from frugalml.training.finetune import freeze_pooler

        freeze_pooler(encoder.model)  # mean pooling never reads it (and DDP refuses it)
        if c.freeze_embeddings:
            encoder.model.get_input_embeddings().requires_grad_(False)
        return SetfitTuning(
            encoder=encoder,
            model=encoder.model,
            batches=pair_batches(ids, pairs, c.train.batch_size, c.train.seed, encoder.pad_id),
            evaluate=HeadOnValidation(encoder, train, val, c.Cs, meter),
            config=c.train,
            train_data=train,
            pairs=pairs,
            deadline=deadline,
        )

    def forecast(self, train: Dataset, val: Dataset) -> Forecast:
        """Timed pair batches scaled to every pair's tokens (+25% for optimizer steps), plus
        embedding train and validation for the head once per epoch and once at the end."""
        warm_encoder(resolve_backbone(self.config.backbone))
        base = rss_bytes()
        with memory_growth() as growth:
            forecast, dim = self._timed(train, val)
        n_texts = len(train) + len(val)  # embedded for the head: (texts, dim) float32, copies
        return forecast.with_memory(growth.bytes + n_texts * (dim * 4 * 3 + 300), base)

    def _timed(self, train: Dataset, val: Dataset) -> tuple[Forecast, int]:
        c = self.config
        with stopwatch() as load:
            encoder = Encoder(
                resolve_backbone(c.backbone), max_length=c.max_length, batch_size=c.train.batch_size
            )
        if c.shots is not None:
            train = few_shot(train, c.shots, c.train.seed)
        ids = encoder.tokenize(train.texts)
        pairs = sample_pairs(
            train.y, iterations=c.iterations, max_pairs=c.max_pairs, seed=c.train.seed
        )
        batches = pair_batches(ids, pairs, c.train.batch_size, c.train.seed, encoder.pad_id)
        with CostMeter() as meter, stopwatch() as timing:
            per_token = seconds_per_token(encoder, list(islice(batches(0), TIMED_BATCHES)), meter)
        cpu_per_wall = timing.cpu_s / max(timing.wall_s, 1e-9)
        pair_tokens = sum(int(b["input_ids"].numel()) for b in batches(0))
        head_tokens = sum(map(len, ids)) + sum(map(len, encoder.tokenize(val.texts)))
        wall = (
            per_token * pair_tokens * c.train.epochs * 1.25
            + per_token * FORWARD_SHARE * head_tokens * (c.train.epochs + 1)
        )
        forecast = load.forecast("load") + Forecast(
            wall,
            wall * cpu_per_wall,
            f"{TIMED_BATCHES - 1} timed pair batches scaled to {len(pairs)} pairs",
        )
        return forecast, encoder.dim

    def _fit_to_budget(
        self,
        encoder: Encoder,
        ids: list[list[int]],
        val: Dataset,
        pairs: Pairs,
        end: float,
        meter: CostMeter,
    ) -> tuple[Pairs, float]:
        """Time a few real batches; return the pairs forecast to fit, and the loop's deadline."""
        c = self.config
        batches = pair_batches(ids, pairs, c.train.batch_size, c.train.seed, encoder.pad_id)
        per_token = seconds_per_token(encoder, list(islice(batches(0), TIMED_BATCHES)), meter)
        # padded tokens per pair over the whole epoch: shared texts and padding included
        tokens_per_pair = sum(int(b["input_ids"].numel()) for b in batches(0)) / len(pairs)
        head_tokens = sum(map(len, ids)) + sum(map(len, encoder.tokenize(val.texts)))
        tuning_s = end - time.perf_counter() - per_token * FORWARD_SHARE * head_tokens
        per_pair = per_token * tokens_per_pair
        kept = budget_cap(pairs, per_pair, c.train.epochs, PLANNED_SHARE * tuning_s)
        return kept, time.perf_counter() + DEADLINE_SHARE * tuning_s
