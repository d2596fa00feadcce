"""The model side of a federated run (Flower's `task.py`): a rung's job on one party's data.

A job is built once per party and then trained round after round; between rounds only its
trainable state travels (`trainable_state` / `load_trainable`): the head over frozen
embeddings (`frozen_probe`), LoRA adapters and the head (`lora`, never merged during rounds),
or the whole encoder (`full`). A fine-tuning job can first warm its head up alone (`--head-rounds`):
the head over the untouched encoder's embeddings, as `frozen_probe` trains it, only the head
travelling. `finish` makes the predictor a bundle ships. Imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.errors import ConfigError
from frugalml.metrics import macro_f1
from frugalml.models.backbones import resolve_backbone
from frugalml.models.encoder import Encoder, embed_for_training
from frugalml.models.encoder_head import EncoderHeadPredictor
from frugalml.models.heads import LinearHead
from frugalml.strategies import get_strategy
from frugalml.training.finetune import FineTune, cross_entropy, predict_logits
from frugalml.training.loop import (
    Batch,
    Bucketed,
    TrainConfig,
    TrainState,
    load_trainable,
    train,
    trainable_state,
)

RUNGS = ("frozen_probe", "lora", "full")
HEAD = "head."  # the prefix of the head's weights, in every job's trainable state
State = dict[str, torch.Tensor]


class Job(Protocol):
    """What a client trains each round and the server evaluates and finishes."""

    def state(self) -> State: ...
    def load(self, state: State) -> None: ...
    def train_round(self, epochs: int, seed: int, meter: CostMeter, mu: float = 0.0) -> float: ...
    def logits(self, data: Dataset) -> np.ndarray: ...
    def finish(self) -> EncoderHeadPredictor: ...


def rung_config(rung: str, options: dict[str, Any]) -> Any:
    """The rung's validated config (its registry defaults, `options` on top)."""
    if rung not in RUNGS:
        raise ConfigError(
            f"--rung must be one of {', '.join(RUNGS)}; got '{rung}'",
            ["other rungs do not train a state that can be averaged (TF-IDF, SetFit, hybrid)"],
        )
    return get_strategy(rung).build(**options).config


def build_job(rung: str, options: dict[str, Any], train_data: Dataset, val: Dataset) -> Job:
    """A rung's job on one party's data; every party builds the same initial weights."""
    strategy = get_strategy(rung).build(**options)
    if rung == "frozen_probe":
        return HeadJob.build(strategy.config, train_data, val)
    job = strategy.fine_tuning(train_data, val)  # type: ignore[attr-defined]
    return FineTuneJob(job, train_data, val)


class HeadModel(nn.Module):
    """A linear head over fixed embeddings: what the loop trains for `frozen_probe`."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)  # type: ignore[no-any-return]


@dataclass
class HeadJob:
    """Frozen embeddings computed once (disk-cached), a torch head trained on them."""

    encoder: Encoder
    model: HeadModel
    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor
    y_val: np.ndarray
    labels: tuple[str, ...]
    config: TrainConfig
    embedded: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Any, train_data: Dataset, val: Dataset) -> HeadJob:
        """The head trains with AdamW at 0.05, no decay (the rung's settings have no loop)."""
        encoder = Encoder(
            resolve_backbone(settings.backbone),
            max_length=settings.max_length,
            batch_size=settings.batch_size,
        )
        with CostMeter() as meter:
            torch.manual_seed(0)  # every party starts from the same head
            model = HeadModel(encoder.dim, len(train_data.labels))
            return cls.over(encoder, model, train_data, val, meter, cache=settings.cache)

    @classmethod
    def over(
        cls,
        encoder: Encoder,
        model: HeadModel,
        train_data: Dataset,
        val: Dataset,
        meter: CostMeter,
        *,
        cache: bool,
    ) -> HeadJob:
        """`model`'s head trained over `encoder`'s embeddings of this party's texts (embedded
        once, through the disk cache when `cache`)."""
        x, x_val = embed_for_training(encoder, [train_data.texts, val.texts], meter, cache=cache)
        # 0.05 over unit vectors; over longer ones (unnormalized), the same step relative to
        # their length, else the logits move several times as far per step and overshoot
        lr = 5e-2 / max(1.0, float(np.linalg.norm(x, axis=1).mean())) if len(x) else 5e-2
        return cls(
            encoder=encoder,
            model=model,
            x=torch.as_tensor(x),
            y=torch.as_tensor(train_data.y),
            x_val=torch.as_tensor(x_val),
            y_val=val.y,
            labels=train_data.labels,
            config=TrainConfig(lr=lr, head_lr=lr, weight_decay=0.0, warmup_ratio=0.0),
        )

    def state(self) -> State:
        return trainable_state(self.model)

    def load(self, state: State) -> None:
        load_trainable(self.model, state, source="the global head")

    def train_round(self, epochs: int, seed: int, meter: CostMeter, mu: float = 0.0) -> float:
        def collate(idx: np.ndarray) -> Batch:
            return {"x": self.x[idx], "labels": self.y[idx]}

        loss = _proximal(lambda m, b: cross_entropy(m(b["x"]), b, None), self.state(), mu)
        config = self.config.model_copy(update={"epochs": epochs, "seed": seed, "patience": epochs})
        batches = Bucketed(np.ones(len(self.y), dtype=np.int64), config.batch_size, seed, collate)
        train(self.model, batches, loss, self._evaluate, config, meter=meter)
        return self._evaluate(self.model)

    def rows(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """This party's embeddings and labels for the exact solve: its local "train" split,
        the "val" split it holds out, or "all" of them."""
        train = (np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.int64))
        val = (np.asarray(self.x_val, dtype=np.float64), np.asarray(self.y_val, dtype=np.int64))
        if which in ("train", "val"):
            return train if which == "train" else val
        return np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])

    def load_theta(self, theta: np.ndarray) -> None:
        """The head from the exact solve's flat vector (coefficients, then intercepts)."""
        k, d = self.model.head.weight.shape
        w, b = theta[: k * d].reshape(k, d), theta[k * d :]
        self.load(
            {"head.weight": torch.as_tensor(w).float(), "head.bias": torch.as_tensor(b).float()}
        )

    def _evaluate(self, model: nn.Module) -> float:
        with torch.inference_mode():
            predicted = model(self.x_val).argmax(1).numpy()
        return macro_f1(self.y_val, predicted, len(self.labels))

    def logits(self, data: Dataset) -> np.ndarray:
        """The server scores the same validation set every round: it is embedded once."""
        key = data.fingerprint()
        if key not in self.embedded:
            self.embedded[key] = torch.as_tensor(self.encoder.encode(data.texts))
        with torch.inference_mode():
            return self.model(self.embedded[key]).numpy()  # type: ignore[no-any-return]

    def finish(self) -> EncoderHeadPredictor:
        return EncoderHeadPredictor(
            self.encoder, LinearHead.from_linear(self.model.head), self.labels
        )


@dataclass
class FineTuneJob:
    """A rung's `FineTune` (LoRA or full), trained a round at a time; its head can first be
    warmed up alone over the encoder's embeddings (`head_state`, `train_head_round`)."""

    job: FineTune
    train_data: Dataset
    val: Dataset
    warm: HeadJob | None = None

    def state(self) -> State:
        return trainable_state(self.job.model)

    def load(self, state: State) -> None:
        load_trainable(self.job.model, state, source="the global model")

    def head_state(self) -> State:
        """What a warm-up round exchanges: the head alone (it names its weights as the
        whole model does, `head.weight` and `head.bias`)."""
        return {k: v for k, v in self.state().items() if k.startswith(HEAD)}

    def load_head(self, state: State) -> None:
        """The global head, over this job's current encoder weights."""
        self.load({**self.state(), **state})

    def train_head_round(self, epochs: int, seed: int, meter: CostMeter, mu: float = 0.0) -> float:
        """Train the head alone over the untouched encoder's sentence vectors, which the
        fine-tuning model computes while its adapters are still zero (LoRA's start) and its
        encoder untrained: a head that then fits the model it joins, as a ladder that climbed
        from `frozen_probe` would start. The vectors are computed once per party (cached on
        disk: a simulation's workers take turns serving the parties)."""
        if self.warm is None:
            source = self.job.encoder
            encoder = Encoder(
                source.folder,
                max_length=source.max_length,
                batch_size=source.batch_size,
                normalize=False,  # the fine-tuning model's pooling (classifier_module)
            )
            linear = cast(nn.Linear, self.job.model.head)
            shared = HeadModel(linear.in_features, linear.out_features)
            shared.head = linear  # the warm-up trains the model's own head, in place
            self.warm = HeadJob.over(encoder, shared, self.train_data, self.val, meter, cache=True)
        return self.warm.train_round(epochs, seed, meter, mu)

    def train_round(self, epochs: int, seed: int, meter: CostMeter, mu: float = 0.0) -> float:
        config = self.job.config.model_copy(
            update={"epochs": epochs, "seed": seed, "patience": epochs}
        )
        job = dataclasses.replace(self.job, loss_fn=_proximal(self.job.loss_fn, self.state(), mu))
        job.train(budget=Budget(), meter=meter, workdir=None, config=config)
        return self.job.evaluate(self.job.model)

    def logits(self, data: Dataset) -> np.ndarray:
        e = self.job.encoder
        return predict_logits(self.job.model, e.tokenize(data.texts), e.pad_id, e.batch_size)

    def finish(self) -> EncoderHeadPredictor:
        """Merges LoRA adapters (once, here), so the bundle is an ordinary fine-tuned one."""
        return self.job.finish(TrainState())


LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def _proximal(loss_fn: LossFn, anchor: State, mu: float) -> LossFn:
    """FedProx's local objective: the loss plus mu/2 ||w - w_global||^2 over what trains."""
    if mu <= 0:
        return loss_fn

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        params = dict(model.named_parameters())
        drift = sum(((params[k] - v) ** 2).sum() for k, v in anchor.items())
        return loss_fn(model, batch) + mu / 2 * drift

    return loss
