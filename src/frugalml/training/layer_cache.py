"""Run an encoder's frozen lower layers once; train only its top layers over their outputs.

Fine-tuning pays for a forward and a backward pass through every layer on every epoch. When
only the top layers train, the lower layers' outputs never change, so they are computed once
(inference mode, no activations kept for backward) and each epoch runs just the top layers.
For MiniLM with 2 of 6 layers trained this costs about a third of a full fine-tune and keeps
most of its gain on short texts. Importing this module imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from frugalml.costs import CostMeter, transformer_flops
from frugalml.data.dataset import Dataset
from frugalml.errors import ConfigError
from frugalml.forecast import Forecast, memory_growth, rss_bytes, stopwatch
from frugalml.metrics import macro_f1
from frugalml.models.classifier_module import EncoderClassifier
from frugalml.models.encoder import Encoder, pad_batch, sorted_batches, warm_encoder
from frugalml.training.finetune import (
    FineTune,
    class_weights,
    cross_entropy,
    sorted_logits,
    time_steps,
)
from frugalml.training.loop import Batch, Bucketed, TrainConfig

# Stored per text as (tokens, hidden); above this many bytes in all they are kept in float16.
FLOAT32_LIMIT = 2 << 30


def encoder_layers(
    model: nn.Module,
    need: str = "the top_layers strategy trains the top of",
    fix: str = "use the `full` or `lora` strategy for this backbone",
) -> nn.ModuleList:
    """The stack of transformer blocks of a BERT-style encoder (BERT, RoBERTa, MiniLM, ...);
    `need` and `fix` say who asks and what to do instead."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise ConfigError(
            f"{need} a BERT-style encoder's `encoder.layer`; got a '{kind}' model without one",
            [fix],
        )
    return layers


def check_split(model: nn.Module, train_layers: int) -> int:
    """The number of frozen lower layers; says what is wrong when the split is impossible."""
    n_layers = len(encoder_layers(model))
    if not 1 <= train_layers <= n_layers:
        raise ConfigError(
            f"top_layers.train_layers must be between 1 and {n_layers} "
            f"(the backbone's layer count); got {train_layers}",
            [f"e.g. --set top_layers.train_layers={min(2, n_layers)}"],
        )
    return n_layers - train_layers


@contextmanager
def truncated(model: nn.Module, n_lower: int) -> Iterator[None]:
    """Let the model's own forward run only its first `n_lower` layers (masks and all)."""
    encoder: Any = model.encoder
    layers = encoder.layer
    encoder.layer = layers[:n_lower]
    try:
        yield
    finally:
        encoder.layer = layers


@torch.inference_mode()
def lower_states(encoder: Encoder, ids: list[list[int]], n_lower: int) -> list[torch.Tensor]:
    """Each text's hidden states after the first `n_lower` layers, (tokens, hidden), on CPU."""
    total = sum(len(x) for x in ids) * encoder.dim * 4
    dtype = torch.float32 if total <= FLOAT32_LIMIT else torch.float16
    out: list[torch.Tensor] = [torch.empty(0)] * len(ids)
    model = encoder.model
    was_training = model.training
    model.eval()
    with truncated(model, n_lower):
        for idx in sorted_batches([len(x) for x in ids], encoder.batch_size):
            input_ids, mask = pad_batch([ids[i] for i in idx], encoder.pad_id)
            device = encoder.device
            hidden = model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
            states = hidden.last_hidden_state.to("cpu", dtype)
            for row, i in enumerate(idx):
                out[i] = states[row, : len(ids[i])].clone()
    model.train(was_training)
    return out


def pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (tokens, hidden) tensors into a zero-padded batch and its attention mask."""
    width = max(len(s) for s in states)
    hidden = torch.zeros(len(states), width, states[0].shape[1], dtype=torch.float32)
    mask = torch.zeros(len(states), width, dtype=torch.long)
    for row, s in enumerate(states):
        hidden[row, : len(s)] = s
        mask[row, : len(s)] = 1
    return hidden, mask


class TopLayers(nn.Module):
    """The encoder's top layers (shared with it, so training updates the encoder) as an
    encoder of cached lower-layer states: what `EncoderClassifier` pools and classifies."""

    def __init__(self, model: Any, n_lower: int):
        super().__init__()
        self.layers = encoder_layers(model)[n_lower:]

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
        # The additive mask BERT-style blocks take: 0 where attended, a large negative elsewhere.
        mask = attention_mask[:, None, None, :].to(hidden.dtype)
        blocked = (1.0 - mask) * torch.finfo(hidden.dtype).min
        for layer in self.layers:
            out: Any = layer(hidden, attention_mask=blocked)
            hidden = out[0] if isinstance(out, tuple) else out  # older transformers: a tuple
        return BaseModelOutput(last_hidden_state=hidden)


def top_logits(model: nn.Module, states: list[torch.Tensor], batch_size: int) -> np.ndarray:
    """Logits in input order from cached states, in length-sorted batches."""
    return sorted_logits(model, states, pad_states, batch_size)


def build_top_layers(
    train_data: Dataset,
    val: Dataset,
    *,
    backbone: Path,
    config: TrainConfig,
    train_layers: int,
    max_length: int,
    meter: CostMeter,
    class_weighted: bool = False,
) -> FineTune:
    """Cache the lower layers' outputs for train and validation (their FLOPs on `meter`) and
    build the job that trains the top layers and a head; it ships the whole, partly updated,
    encoder."""
    encoder = Encoder(
        backbone, max_length=max_length, batch_size=config.batch_size, normalize=False
    )
    n_lower = check_split(encoder.model, train_layers)
    train_ids, val_ids = encoder.tokenize(train_data.texts), encoder.tokenize(val.texts)
    train_states = lower_states(encoder, train_ids, n_lower)
    val_states = lower_states(encoder, val_ids, n_lower)
    lower_tokens = sum(len(x) for x in train_ids) + sum(len(x) for x in val_ids)
    lower_params = encoder.n_params * n_lower // len(encoder_layers(encoder.model))
    meter.add_flops(transformer_flops(lower_params, lower_tokens))
    for parameter in encoder.model.parameters():
        parameter.requires_grad_(False)
    torch.manual_seed(config.seed)  # the head's initial weights
    top = TopLayers(encoder.model, n_lower)
    model = EncoderClassifier(top, encoder.dim, len(train_data.labels))
    model.requires_grad_(True)
    model.to(encoder.device)
    lengths = np.array([len(x) for x in train_ids])
    labels = torch.as_tensor(train_data.y)
    weights = class_weights(train_data) if class_weighted else None
    top_params = sum(p.numel() for p in top.parameters())

    def collate(idx: np.ndarray) -> Batch:
        hidden, mask = pad_states([train_states[i] for i in idx])
        return {"hidden": hidden, "mask": mask, "labels": labels[idx]}

    def loss_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
        return cross_entropy(m(batch["hidden"], batch["mask"]), batch, weights)

    def evaluate(m: nn.Module) -> float:
        predicted = top_logits(m, val_states, config.batch_size).argmax(1)
        return macro_f1(val.y, predicted, len(val.labels))

    return FineTune(
        encoder=encoder,
        body=encoder.model,
        model=model,
        labels=train_data.labels,
        config=config,
        batches=Bucketed(lengths, config.batch_size, config.seed, collate),
        loss_fn=loss_fn,
        evaluate=evaluate,
        flops_per_batch=lambda b: transformer_flops(
            top_params, int(b["mask"].numel()), training=True
        ),
    )


def forecast_top_layers(
    train_data: Dataset,
    val: Dataset,
    *,
    backbone: Path,
    config: TrainConfig,
    train_layers: int,
    max_length: int,
) -> Forecast:
    """Time the lower pass on a sample and real optimizer steps on the top; scale by tokens.

    Memory: the calibration's peak growth (weights, optimizer state, a batch) plus every
    text's cached lower-layer states, (tokens, hidden) each."""
    warm_encoder(backbone)
    base = rss_bytes()
    with memory_growth() as growth:
        timing, tokens, texts, dim = _time_top_layers(
            train_data,
            val,
            backbone=backbone,
            config=config,
            train_layers=train_layers,
            max_length=max_length,
        )
    width = 4 if tokens * dim * 4 <= FLOAT32_LIMIT else 2
    states = tokens * dim * width + texts * TENSOR_BYTES
    return timing.with_memory(growth.bytes + states, base)


# What a small CPU tensor costs beyond its data: the Python object, storage and allocator slack.
TENSOR_BYTES = 400


def _time_top_layers(
    train_data: Dataset,
    val: Dataset,
    *,
    backbone: Path,
    config: TrainConfig,
    train_layers: int,
    max_length: int,
) -> tuple[Forecast, int, int, int]:
    with stopwatch() as load:
        encoder = Encoder(
            backbone, max_length=max_length, batch_size=config.batch_size, normalize=False
        )
        n_lower = check_split(encoder.model, train_layers)
        top = TopLayers(encoder.model, n_lower)
        model = EncoderClassifier(top, encoder.dim, len(train_data.labels))
        model.to(encoder.device)
    train_ids, val_ids = encoder.tokenize(train_data.texts), encoder.tokenize(val.texts)
    all_tokens = sum(len(x) for x in train_ids) + sum(len(x) for x in val_ids)
    rng = np.random.default_rng(0)
    picks = [
        rng.choice(len(train_ids), min(config.batch_size, len(train_ids)), replace=False)
        for _ in range(3)
    ]
    sample = [train_ids[i] for i in np.concatenate(picks)]
    with stopwatch() as lower:
        states = lower_states(encoder, sample, n_lower)
    sample_tokens = sum(len(x) for x in sample)
    labels = torch.as_tensor(train_data.y)
    steps, step_tokens = time_steps(
        model,
        (
            (pad_states(states[i * len(idx) : (i + 1) * len(idx)]), labels[idx])
            for i, idx in enumerate(picks)
        ),
    )
    per_epoch = sum(len(x) for x in train_ids) * 1.1 / step_tokens  # ~10% padding left
    # Validation each epoch runs the top layers forward only: about a third of a step.
    val_share = sum(len(x) for x in val_ids) / max(1, sum(len(x) for x in train_ids)) / 3
    texts = len(train_ids) + len(val_ids)
    return (
        load.forecast("load")
        + lower.forecast("").scaled(
            all_tokens / max(1, sample_tokens), "lower layers once, timed on 96 texts"
        )
        + steps.forecast("").scaled(
            per_epoch * config.epochs * (1 + val_share),
            f"2 timed steps scaled to {config.epochs} epochs of tokens and validation",
        ),
        all_tokens,
        texts,
        encoder.dim,
    )
