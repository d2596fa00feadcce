"""Layer-drop distillation: a student that keeps every other encoder layer of its teacher.

Half the layers make the student about 2x faster to serve while keeping most of the teacher's
quality. It trains on the teacher's softened logits, so it learns the teacher's confidence,
not just its argmax, and any unlabeled text will do. A small training set is a thin transfer
set, so word-dropout copies of its texts are added (the teacher labels them, so they need no
labels); where true labels are known, they are mixed into the loss. On PhraseBank's 1,539
training texts these two took the student from 2.2 to 0.2 points below its teacher.
Training is the project's one loop (`training.train`). Importing this module imports torch.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from frugalml.costs import CostMeter, transformer_flops
from frugalml.data.dataset import Dataset
from frugalml.errors import ConfigError, plural
from frugalml.metrics import macro_f1
from frugalml.models.classifier_module import EncoderClassifier
from frugalml.models.encoder import Encoder, pad_batch
from frugalml.models.encoder_head import EncoderHeadPredictor
from frugalml.models.heads import LinearHead
from frugalml.training.finetune import CURVES, freeze_pooler, predict_logits
from frugalml.training.layer_cache import encoder_layers
from frugalml.training.loop import Batch, Bucketed, TrainConfig, train

log = logging.getLogger("frugalml")

DISTILL_TRAIN = TrainConfig(epochs=5, lr=1e-4, head_lr=2e-3, patience=3)
# Word-dropout copies are added until the transfer set holds this many texts (at most 2 per text).
TRANSFER_TEXTS = 5000
MAX_COPIES = 2
IGNORE = -100  # the label of a text whose true label is unknown (cross-entropy skips it)


def every_other(n_layers: int) -> list[int]:
    """Layers 1, 3, 5, ... counted so that the last layer, the one the head reads, is kept."""
    return list(range(n_layers - 1, -1, -2))[::-1]


KEEP: dict[str, Callable[[int], list[int]]] = {"every_other": every_other}


def drop_layers(model: nn.Module, keep: str = "every_other") -> nn.Module:
    """A deep copy of a BERT-style `model` holding only the kept layers; `model` is untouched.

    `config.num_hidden_layers` follows, so `save_pretrained` → `from_pretrained` round-trips.
    """
    if keep not in KEEP:
        raise ConfigError(
            f"The 'keep' parameter of distill must be one of {sorted(KEEP)}; got {keep!r}"
        )
    layers = encoder_layers(
        model,
        "distillation drops layers from",
        "distill a teacher built on a BERT-style backbone (BERT, RoBERTa, MiniLM, ...)",
    )
    kept = KEEP[keep](len(layers))
    student: Any = copy.deepcopy(model)
    student.encoder.layer = nn.ModuleList([student.encoder.layer[i] for i in kept])
    student.config.num_hidden_layers = len(kept)
    for index, layer in enumerate(student.encoder.layer):
        for module in layer.modules():  # cache slots of decoders; renumbered as a reload would
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    return student  # type: ignore[no-any-return]


def word_dropout(text: str, rng: np.random.Generator, p: float = 0.15) -> str:
    """`text` with each word dropped with probability `p` (never all of them)."""
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept or words)


def transfer_set(
    texts: Sequence[str], labels: np.ndarray | None, seed: int
) -> tuple[list[str], np.ndarray]:
    """The texts plus enough word-dropout copies to reach `TRANSFER_TEXTS`, with their true
    labels (copies keep their original's; `IGNORE` where labels are unknown)."""
    copies = min(MAX_COPIES, max(0, math.ceil(TRANSFER_TEXTS / max(len(texts), 1)) - 1))
    y = np.asarray(labels) if labels is not None else np.full(len(texts), IGNORE)
    rng = np.random.default_rng(seed)
    out = list(texts)
    for _ in range(copies):
        out += [word_dropout(t, rng) for t in texts]
    return out, np.tile(y, copies + 1)


def soft_label_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher ‖ student) at temperature T, times T² so gradients keep their scale (Hinton)."""
    return (
        nn.functional.kl_div(
            nn.functional.log_softmax(student.float() / temperature, dim=-1),
            nn.functional.log_softmax(teacher.float() / temperature, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )


def distill(
    teacher: EncoderHeadPredictor,
    train_texts: Sequence[str],
    val: Dataset,
    *,
    config: TrainConfig | None = None,
    labels: np.ndarray | None = None,
    hard_weight: float = 0.5,
    temperature: float = 2.0,
    keep: str = "every_other",
    meter: CostMeter | None = None,
    workdir: Path | None = None,
) -> EncoderHeadPredictor:
    """Train a layer-dropped copy of `teacher` on its soft labels for `train_texts` (and their
    word-dropout copies, see `transfer_set`); with `labels`, the loss is
    `(1 - hard_weight) * soft + hard_weight * cross-entropy on the true labels`.

    Early stopping and the kept weights follow the student's macro-F1 on `val`. The result has
    temperature 1.0 (the caller recalibrates); per-epoch losses are logged and, with a
    `workdir`, written to its curves like `fit_classifier`'s.
    """
    config = config or DISTILL_TRAIN
    _check(teacher, train_texts, val, temperature, labels, hard_weight)
    if not isinstance(teacher.encoder, Encoder):
        raise ConfigError("distill needs a teacher with a PyTorch encoder (not an exported one)")
    torch.manual_seed(config.seed)  # the student's dropout; its weights are all copied
    student_encoder = _student_encoder(teacher.encoder, keep)
    # The teacher's own serving path (normalization included), so its head transfers as is.
    model = EncoderClassifier.from_head(
        student_encoder.model, teacher.head, normalize=teacher.encoder.normalize
    )
    model.to(student_encoder.device)
    # Teacher logits once, before training, with their inference FLOPs on the meter.
    texts, y = transfer_set(train_texts, labels, config.seed)
    hard = torch.as_tensor(y, dtype=torch.long)
    targets = torch.as_tensor(teacher.head.logits(teacher.encoder.encode(texts, meter)))
    train_ids, val_ids = student_encoder.tokenize(texts), student_encoder.tokenize(val.texts)
    lengths = np.array([len(x) for x in train_ids])
    pad_id, n_classes = student_encoder.pad_id, len(teacher.labels)

    def collate(idx: np.ndarray) -> Batch:
        input_ids, mask = pad_batch([train_ids[i] for i in idx], pad_id)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "targets": targets[idx],
            "labels": hard[idx],
        }

    def loss_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
        logits = m(batch["input_ids"], batch["attention_mask"])
        soft = soft_label_loss(logits, batch["targets"], temperature)
        if labels is None or not hard_weight:
            return soft
        ce = nn.functional.cross_entropy(logits.float(), batch["labels"], ignore_index=IGNORE)
        return (1 - hard_weight) * soft + hard_weight * ce

    def evaluate(m: nn.Module) -> float:
        predicted = predict_logits(m, val_ids, pad_id, config.batch_size).argmax(1)
        return macro_f1(val.y, predicted, n_classes)

    state = train(
        model,
        Bucketed(lengths, config.batch_size, config.seed, collate),
        loss_fn,
        evaluate,
        config,
        checkpoint_dir=workdir / "checkpoints" if workdir else None,
        meter=meter,
        flops_per_batch=lambda b: transformer_flops(
            student_encoder.n_params, int(b["input_ids"].numel()), training=True
        ),
        log=log.info,
        curves_dir=workdir / CURVES if workdir else None,
    )
    log.info("student: best val macro-F1 %.4f at epoch %d", state.best_score, state.best_epoch)
    student_encoder.model = model.encoder.eval()
    head = LinearHead.from_linear(model.head)
    return EncoderHeadPredictor(student_encoder, head, teacher.labels, temperature=1.0)


def _check(
    teacher: EncoderHeadPredictor,
    train_texts: Sequence[str],
    val: Dataset,
    temperature: float,
    labels: np.ndarray | None,
    hard_weight: float,
) -> None:
    """Every problem with the inputs at once, before any work."""
    problems = []
    if not train_texts:
        problems.append("train_texts is empty; the student learns from the teacher on these texts")
    if val.labels != teacher.labels:
        problems.append(
            f"val's label map ({len(val.labels)} labels) differs from the teacher's "
            f"({len(teacher.labels)}); validate on data labeled with the teacher's label map"
        )
    if not temperature > 0:
        problems.append(f"temperature must be > 0; got {temperature}")
    if not 0 <= hard_weight <= 1:
        problems.append(f"hard_weight must be between 0 and 1; got {hard_weight}")
    if labels is not None and len(labels) != len(train_texts):
        problems.append(
            f"labels has {len(labels)} entries for {len(train_texts)} train_texts; give one "
            "label index per text, or none"
        )
    elif (
        labels is not None
        and len(labels)
        and not 0 <= int(np.min(labels)) <= int(np.max(labels)) < len(teacher.labels)
    ):
        problems.append(f"labels must be indices into the teacher's {len(teacher.labels)} labels")
    if problems:
        raise ConfigError(f"distill got {plural(len(problems), 'problem')}:", problems)


def _student_encoder(teacher: Encoder, keep: str) -> Encoder:
    """A shallow copy of the teacher's `Encoder` around the layer-dropped model.

    Copying (rather than saving the student and loading a fresh `Encoder` from that folder)
    shares the tokenizer and keeps max_length, batch size, normalization and device the
    teacher's by construction, with no disk round trip. `trained` makes `save` serialize the
    student rather than copy the teacher's backbone files.
    """
    student = copy.copy(teacher)
    student.model = drop_layers(teacher.model, keep)
    freeze_pooler(student.model.requires_grad_(True))  # mean pooling never reads it
    # As the `full` rung does by default: the token table's updates cost much, help little.
    student.model.get_input_embeddings().requires_grad_(False)
    embedding_params = sum(p.numel() for p in student.model.embeddings.parameters())
    student.n_params = sum(p.numel() for p in student.model.parameters()) - embedding_params
    student.trained = True
    return student
