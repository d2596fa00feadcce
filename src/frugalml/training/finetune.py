"""Fine-tuning an encoder for classification with the one training loop.

The model trained is `classifier_module.EncoderClassifier` (encoder → mean pooling → dropout
→ linear head). Fine-tuning comes in three steps (`FineTune`):
`build_classifier` loads, adapts and tokenizes once; `train` feeds length-bucketed batches
to the one training loop; `finish` exports the encoder and returns the shared
`EncoderHeadPredictor`. `fit_classifier` runs all three; a federated round stops between them.
Importing this module imports torch, so strategies import it inside `fit`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from frugalml.config import Budget
from frugalml.costs import CostMeter, transformer_flops
from frugalml.data.dataset import Dataset
from frugalml.forecast import Forecast, Stopwatch, memory_growth, rss_bytes, stopwatch
from frugalml.metrics import macro_f1
from frugalml.models.backbones import resolve_backbone
from frugalml.models.classifier_module import EncoderClassifier
from frugalml.models.encoder import Encoder, pad_batch, sorted_batches, warm_encoder
from frugalml.models.encoder_head import EncoderHeadPredictor
from frugalml.models.heads import LinearHead
from frugalml.training.loop import (
    Batch,
    BatchSource,
    Bucketed,
    EvalFn,
    LossFn,
    TrainConfig,
    TrainState,
    train,
)

log = logging.getLogger("frugalml")
CURVES = "curves"  # inside a rung's workdir; the ladder keeps it as RUN_DIR/curves/<rung>


def freeze_pooler(model: nn.Module) -> nn.Module:
    """Freeze a BERT-style encoder's pooler: it runs, but mean pooling never reads its output,
    so its weights get no gradient. A single process skips them anyway; DDP refuses weights
    that train without a gradient. Returns `model`, changed in place."""
    pooler = getattr(model, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)
    return model


def deadline_from(budget: Budget) -> float | None:
    """The ladder hands each rung the wall seconds it may still spend."""
    return None if budget.max_wall_s is None else time.perf_counter() + budget.max_wall_s


@dataclass
class FineTune:
    """A fine-tuning job in three steps, so a federated round can stop between them.

    Build it (`build_classifier`, `layer_cache.build_top_layers`), `train` it (again each
    round, reading and loading `trainable_state(job.model)` in between: LoRA adapters stay
    separate from the base weights), then `finish` once: export the trained encoder body
    (merge LoRA) and make the predictor a rung ships.
    """

    encoder: Encoder  # its `model` is replaced by the exported body at `finish`
    body: nn.Module  # the encoder module that trains (adapted, e.g. with LoRA)
    model: nn.Module  # what the loop trains: the body (or part of it) and a `head`
    labels: tuple[str, ...]
    config: TrainConfig
    batches: BatchSource
    loss_fn: LossFn
    evaluate: EvalFn
    flops_per_batch: Callable[[Batch], float]
    export: Callable[[nn.Module], nn.Module] = field(default=lambda body: body)

    def train(
        self,
        *,
        budget: Budget,
        meter: CostMeter,
        workdir: Path | None,
        config: TrainConfig | None = None,
    ) -> TrainState:
        """Run the loop on `model` (with `config`, e.g. a round's epochs; batch size and seed
        stay the build's); checkpoints and curves go under `workdir`. Each call starts a
        fresh optimizer and schedule, and ends on its best epoch's weights."""
        return train(
            self.model,
            self.batches,
            self.loss_fn,
            self.evaluate,
            config or self.config,
            checkpoint_dir=workdir / "checkpoints" if workdir else None,
            deadline=deadline_from(budget),
            meter=meter,
            flops_per_batch=self.flops_per_batch,
            log=log.info,
            curves_dir=workdir / CURVES if workdir else None,
        )

    def finish(self, state: TrainState) -> EncoderHeadPredictor:
        """The predictor to ship: the exported body (in eval mode) and the head."""
        self.encoder.model = self.export(self.body)
        head: Any = self.model.head
        return finished(self.encoder, head, self.labels, state)


def build_classifier(
    train_data: Dataset,
    val: Dataset,
    *,
    backbone: Path,
    config: TrainConfig,
    max_length: int,
    adapt: Callable[[nn.Module], nn.Module] = lambda encoder: encoder,
    export: Callable[[nn.Module], nn.Module] = lambda encoder: encoder,
    class_weighted: bool = False,
    dropout: float = 0.1,
) -> FineTune:
    """Load `backbone`, `adapt` it (e.g. add LoRA adapters), add a head (after `dropout`),
    tokenize once."""
    encoder = Encoder(
        backbone, max_length=max_length, batch_size=config.batch_size, normalize=False
    )
    torch.manual_seed(config.seed)  # the head's initial weights
    body = adapt(freeze_pooler(encoder.model))
    model = EncoderClassifier(body, encoder.dim, len(train_data.labels), dropout=dropout)
    model.to(encoder.device)
    train_ids, val_ids = encoder.tokenize(train_data.texts), encoder.tokenize(val.texts)
    labels = torch.as_tensor(train_data.y)
    weights = class_weights(train_data) if class_weighted else None

    def collate(idx: np.ndarray) -> Batch:
        input_ids, mask = pad_batch([train_ids[i] for i in idx], encoder.pad_id)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels[idx]}

    def loss_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
        return cross_entropy(m(batch["input_ids"], batch["attention_mask"]), batch, weights)

    def evaluate(m: nn.Module) -> float:
        predicted = predict_logits(m, val_ids, encoder.pad_id, config.batch_size).argmax(1)
        return macro_f1(val.y, predicted, len(val.labels))

    lengths = np.array([len(x) for x in train_ids])
    return FineTune(
        encoder=encoder,
        body=body,
        model=model,
        labels=train_data.labels,
        config=config,
        batches=Bucketed(lengths, config.batch_size, config.seed, collate),
        loss_fn=loss_fn,
        evaluate=evaluate,
        flops_per_batch=lambda b: transformer_flops(
            encoder.n_params, int(b["input_ids"].numel()), training=True
        ),
        export=export,
    )


def fit_classifier(
    train_data: Dataset,
    val: Dataset,
    *,
    backbone: Path,
    config: TrainConfig,
    max_length: int,
    budget: Budget,
    meter: CostMeter,
    workdir: Path | None,
    adapt: Callable[[nn.Module], nn.Module] = lambda encoder: encoder,
    export: Callable[[nn.Module], nn.Module] = lambda encoder: encoder,
    class_weighted: bool = False,
) -> tuple[EncoderHeadPredictor, TrainState]:
    """Fine-tune `backbone` (after `adapt`, e.g. LoRA); export it (after `export`, e.g. merge)."""
    job = build_classifier(
        train_data,
        val,
        backbone=backbone,
        config=config,
        max_length=max_length,
        adapt=adapt,
        export=export,
        class_weighted=class_weighted,
    )
    state = job.train(budget=budget, meter=meter, workdir=workdir)
    return job.finish(state), state


def finished(
    encoder: Encoder, head: nn.Linear, labels: tuple[str, ...], state: TrainState
) -> EncoderHeadPredictor:
    """The predictor a fine-tuning run ships: its (trained, in eval mode) encoder and head."""
    encoder.model.eval()
    encoder.trained = True
    predictor = EncoderHeadPredictor(encoder, LinearHead.from_linear(head), labels)
    predictor.stopped = state.stopped if state.stopped == "deadline" else ""
    return predictor


def cross_entropy(logits: torch.Tensor, batch: Batch, weights: torch.Tensor | None) -> torch.Tensor:
    """The fine-tuning loss, in float32 (also under bf16 autocast), optionally class-weighted."""
    w = None if weights is None else weights.to(logits.device)
    return nn.functional.cross_entropy(logits.float(), batch["labels"], weight=w)


def predict_logits(
    model: nn.Module, ids: list[list[int]], pad_id: int, batch_size: int
) -> np.ndarray:
    """Logits in input order, computed in length-sorted batches."""
    return sorted_logits(model, ids, lambda chunk: pad_batch(chunk, pad_id), batch_size)


@torch.inference_mode()
def sorted_logits(
    model: nn.Module,
    items: Sequence[Sized],
    collate: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]],
    batch_size: int,
) -> np.ndarray:
    """Logits in input order; `items` (token ids, cached states) are batched by length and
    `collate` pads a batch into the model's two inputs."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: np.ndarray | None = None
    for idx in sorted_batches([len(x) for x in items], batch_size):
        first, second = collate([items[i] for i in idx])
        logits = model(first.to(device), second.to(device)).float().cpu().numpy()
        if out is None:
            out = np.zeros((len(items), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    model.train(was_training)
    assert out is not None, "no inputs"
    return out


def class_weights(data: Dataset) -> torch.Tensor:
    """Inverse class frequency, mean 1: rare classes count as much as common ones."""
    counts = np.maximum(data.class_counts(), 1).astype(np.float32)
    weights = counts.sum() / (len(counts) * counts)
    return torch.as_tensor(weights)


def forecast_classifier(
    train_data: Dataset,
    val: Dataset,
    *,
    backbone: Path,
    config: TrainConfig,
    max_length: int,
    adapt: Callable[[nn.Module], nn.Module] = lambda encoder: encoder,
) -> Forecast:
    """Time real optimizer steps and a validation pass on a few batches; scale by tokens.

    Memory: what the calibration's peak grew by (weights, gradients, optimizer state, a
    batch's activations) plus the token ids of the data, held as Python lists."""
    warm_encoder(backbone)
    base = rss_bytes()
    with memory_growth() as growth:
        timing, tokens = _time_classifier(
            train_data, val, backbone=backbone, config=config, max_length=max_length, adapt=adapt
        )
    return timing.with_memory(growth.bytes + tokens * TOKEN_ID_BYTES, base)


# A token id in a Python list of ints: the pointer, and the int object beyond the small ones.
TOKEN_ID_BYTES = 40


def _time_classifier(
    train_data: Dataset,
    val: Dataset,
    *,
    backbone: Path,
    config: TrainConfig,
    max_length: int,
    adapt: Callable[[nn.Module], nn.Module],
) -> tuple[Forecast, int]:
    with stopwatch() as load:
        encoder = Encoder(
            backbone, max_length=max_length, batch_size=config.batch_size, normalize=False
        )
        model = EncoderClassifier(
            adapt(freeze_pooler(encoder.model)), encoder.dim, len(train_data.labels)
        )
        model.to(encoder.device)
    train_ids, val_ids = encoder.tokenize(train_data.texts), encoder.tokenize(val.texts)
    rng = np.random.default_rng(0)
    batches = [
        rng.choice(len(train_ids), min(config.batch_size, len(train_ids)), replace=False)
        for _ in range(3)
    ]
    labels = torch.as_tensor(train_data.y)
    watch, sample_tokens = time_steps(
        model,
        ((pad_batch([train_ids[j] for j in idx], encoder.pad_id), labels[idx]) for idx in batches),
    )
    per_epoch = sum(len(x) for x in train_ids) * 1.1 / sample_tokens  # ~10% padding left
    with stopwatch() as evaluation:
        predict_logits(model, val_ids[:256], encoder.pad_id, config.batch_size)
    eval_scale = len(val_ids) / max(1, min(256, len(val_ids)))
    forecast = (
        load.forecast("load")
        + watch.forecast("").scaled(
            per_epoch * config.epochs, f"2 timed steps scaled to {config.epochs} epochs of tokens"
        )
        + evaluation.forecast("").scaled(eval_scale * config.epochs, "validation each epoch")
    )
    return forecast, sum(map(len, train_ids)) + sum(map(len, val_ids))


class FineTuneSettings(Protocol):
    """What `full` and `lora` configs share: the fields these two helpers read."""

    @property
    def backbone(self) -> str: ...
    @property
    def max_length(self) -> int: ...
    @property
    def class_weighted(self) -> bool: ...
    @property
    def train(self) -> TrainConfig: ...


def build_fine_tune(
    settings: FineTuneSettings,
    train_data: Dataset,
    val: Dataset,
    *,
    adapt: Callable[[nn.Module], nn.Module] = lambda encoder: encoder,
    export: Callable[[nn.Module], nn.Module] = lambda encoder: encoder,
) -> FineTune:
    """A fine-tuning rung's job, built from its settings and how it adapts and exports the
    encoder: what its `fit` trains once, and a federated client round after round."""
    return build_classifier(
        train_data,
        val,
        backbone=resolve_backbone(settings.backbone),
        config=settings.train,
        max_length=settings.max_length,
        adapt=adapt,
        export=export,
        class_weighted=settings.class_weighted,
        dropout=getattr(settings, "head_dropout", 0.1),
    )


def forecast_fine_tune(
    settings: FineTuneSettings,
    train_data: Dataset,
    val: Dataset,
    *,
    adapt: Callable[[nn.Module], nn.Module] = lambda encoder: encoder,
) -> Forecast:
    """A fine-tuning rung's `forecast`."""
    return forecast_classifier(
        train_data,
        val,
        backbone=resolve_backbone(settings.backbone),
        config=settings.train,
        max_length=settings.max_length,
        adapt=adapt,
    )


def time_steps(model: Any, steps: Iterable[tuple[tuple[Any, Any], Any]]) -> tuple[Stopwatch, int]:
    """Time real optimizer steps for a forecast: each step is ((inputs, mask), labels); the
    first only warms up allocators and kernels, so it is run but not counted. Returns the
    time of the counted steps and the padded tokens they saw."""
    import torch
    from torch import nn

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    watch, tokens = Stopwatch(), 0
    model.train()
    for i, ((inputs, mask), labels) in enumerate(steps):
        with stopwatch() as step:
            loss = nn.functional.cross_entropy(model(inputs, mask), labels)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            optimizer.zero_grad()
        if i:
            watch.wall_s, watch.cpu_s = watch.wall_s + step.wall_s, watch.cpu_s + step.cpu_s
            tokens += int(mask.numel())
    return watch, tokens
