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
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from frugalml.config import Budget, Scale
from frugalml.costs import CostMeter, transformer_flops
from frugalml.data.dataset import Dataset
from frugalml.errors import ConfigError, plural
from frugalml.metrics import macro_f1
from frugalml.models.classifier_module import EncoderClassifier
from frugalml.models.encoder import Encoder, pad_batch
from frugalml.models.encoder_head import EncoderHeadPredictor
from frugalml.training.finetune import FineTune, freeze_pooler, predict_logits
from frugalml.training.layer_cache import encoder_layers
from frugalml.training.loop import Batch, Bucketed, TrainConfig, TrainState

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
    kept = _kept_layers(model, keep)
    student: Any = copy.deepcopy(model)
    student.encoder.layer = nn.ModuleList([student.encoder.layer[i] for i in kept])
    student.config.num_hidden_layers = len(kept)
    for index, layer in enumerate(student.encoder.layer):
        for module in layer.modules():  # cache slots of decoders; renumbered as a reload would
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    return student  # type: ignore[no-any-return]


def _kept_layers(model: nn.Module, keep: str) -> list[int]:
    """The indices of the layers `keep` keeps; an unknown rule or a model without BERT-style
    layers is refused."""
    if keep not in KEEP:
        raise ConfigError(
            f"The 'keep' parameter of distill must be one of {sorted(KEEP)}; got {keep!r}"
        )
    layers = encoder_layers(
        model,
        "distillation drops layers from",
        "distill a teacher built on a BERT-style backbone (BERT, RoBERTa, MiniLM, ...)",
    )
    return KEEP[keep](len(layers))


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
    head_dropout: float = 0.1,
    meter: CostMeter | None = None,
    workdir: Path | None = None,
    scale: Scale | None = None,
) -> EncoderHeadPredictor:
    """Train a layer-dropped copy of `teacher` on its soft labels for `train_texts` (and their
    word-dropout copies, see `transfer_set`); with `labels`, the loss is
    `(1 - hard_weight) * soft + hard_weight * cross-entropy on the true labels`.

    Early stopping and the kept weights follow the student's macro-F1 on `val`. The result has
    temperature 1.0 (the caller recalibrates); per-epoch losses are logged and, with a
    `workdir`, written to its curves like `fit_classifier`'s. With a `scale` asking for
    several processes, the student trains data-parallel under torchrun (`distill_parallel`).
    """
    config = config or DISTILL_TRAIN
    _check(teacher, train_texts, val, temperature, labels, hard_weight)
    if not isinstance(teacher.encoder, Encoder):
        raise ConfigError("distill needs a teacher with a PyTorch encoder (not an exported one)")
    _kept_layers(teacher.encoder.model, keep)  # refused before the teacher's pass, if at all
    # Teacher logits once, before training, with their inference FLOPs on the meter.
    texts, y = transfer_set(train_texts, labels, config.seed)
    targets = teacher.head.logits(teacher.encoder.encode(texts, meter))
    settings: dict[str, Any] = {
        "hard_weight": hard_weight if labels is not None else 0.0,
        "temperature": temperature,
        "keep": keep,
        "head_dropout": head_dropout,
    }
    if scale is not None and scale.parallel:
        return distill_parallel(
            teacher, texts, y, targets, val, config, settings, scale, meter, workdir
        )
    job = student_job(teacher, texts, y, targets, val, config, **settings)
    state = job.train(budget=Budget(), meter=meter or CostMeter(), workdir=workdir)
    log.info("student: best val macro-F1 %.4f at epoch %d", state.best_score, state.best_epoch)
    return _student(job, state)


def student_job(
    teacher: EncoderHeadPredictor,
    texts: Sequence[str],
    y: np.ndarray,
    targets: np.ndarray,
    val: Dataset,
    config: TrainConfig,
    *,
    hard_weight: float,
    temperature: float,
    keep: str,
    head_dropout: float,
) -> FineTune:
    """The student's training on the transfer set (`texts`, true labels `y`, the teacher's
    logits `targets`), built but not trained: one process trains it, or each rank its shard."""
    assert isinstance(teacher.encoder, Encoder)
    torch.manual_seed(config.seed)  # the student's dropout; its weights are all copied
    student_encoder = _student_encoder(teacher.encoder, keep)
    # The teacher's own serving path (normalization included), so its head transfers as is.
    model = EncoderClassifier.from_head(
        student_encoder.model,
        teacher.head,
        normalize=teacher.encoder.normalize,
        dropout=head_dropout,
    )
    model.to(student_encoder.device)
    hard = torch.as_tensor(np.asarray(y), dtype=torch.long)
    soft_targets = torch.as_tensor(np.asarray(targets))
    train_ids, val_ids = student_encoder.tokenize(texts), student_encoder.tokenize(val.texts)
    lengths = np.array([len(x) for x in train_ids])
    pad_id, n_classes = student_encoder.pad_id, len(teacher.labels)

    def collate(idx: np.ndarray) -> Batch:
        input_ids, mask = pad_batch([train_ids[i] for i in idx], pad_id)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "targets": soft_targets[idx],
            "labels": hard[idx],
        }

    def loss_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
        logits = m(batch["input_ids"], batch["attention_mask"])
        soft = soft_label_loss(logits, batch["targets"], temperature)
        if not hard_weight:
            return soft
        ce = nn.functional.cross_entropy(logits.float(), batch["labels"], ignore_index=IGNORE)
        return (1 - hard_weight) * soft + hard_weight * ce

    def evaluate(m: nn.Module) -> float:
        predicted = predict_logits(m, val_ids, pad_id, config.batch_size).argmax(1)
        return macro_f1(val.y, predicted, n_classes)

    return FineTune(
        encoder=student_encoder,
        body=model.encoder,
        model=model,
        labels=teacher.labels,
        config=config,
        batches=Bucketed(lengths, config.batch_size, config.seed, collate),
        loss_fn=loss_fn,
        evaluate=evaluate,
        flops_per_batch=lambda b: transformer_flops(
            student_encoder.n_params, int(b["input_ids"].numel()), training=True
        ),
    )


def _student(job: FineTune, state: TrainState) -> EncoderHeadPredictor:
    """The trained student (temperature 1.0: the caller recalibrates)."""
    student = job.finish(state)
    student.temperature, student.stopped = 1.0, ""
    return student


# -- data-parallel -------------------------------------------------------------------------------
TEACHER = "teacher"  # the teacher's predictor, saved in WORKDIR/ddp for the ranks to load


def distill_parallel(
    teacher: EncoderHeadPredictor,
    texts: list[str],
    y: np.ndarray,
    targets: np.ndarray,
    val: Dataset,
    config: TrainConfig,
    settings: dict[str, Any],
    scale: Scale,
    meter: CostMeter | None,
    workdir: Path | None,
) -> EncoderHeadPredictor:
    """`distill` on `scale`'s ranks under torchrun, as the ladder trains a torch rung
    (`ladder.scale.run_parallel`): the teacher is saved once for the ranks, which get the
    transfer set and its soft labels as JSON (no rank repeats the teacher's pass); rank 0
    alone evaluates, checkpoints and saves the student; `meter` counts every rank."""
    from frugalml.ladder.scale import PREDICTOR, dataset_to_json, parallel_job, run_parallel

    with tempfile.TemporaryDirectory(prefix="frugalml-distill-") as tmp:
        folder = (workdir or Path(tmp)).resolve()
        meter = meter or CostMeter()
        spec = teacher.save(folder / "ddp" / TEACHER)
        args = {
            "teacher": spec,
            "teacher_dir": str(folder / "ddp" / TEACHER),
            "labels": list(teacher.labels),
            "texts": list(texts),
            "y": np.asarray(y).tolist(),
            "targets": np.asarray(targets).tolist(),
            "val": dataset_to_json(val),
            "config": config.model_dump(mode="json"),
            "settings": settings,
        }
        job = parallel_job(f"{__name__}:rank_job", args, workdir=folder, prices=meter.prices)
        result = run_parallel(job, scale, meter, "distillation")
        path = folder / "ddp" / PREDICTOR
        student = EncoderHeadPredictor.load(path, result["spec"], teacher.labels)
        assert isinstance(student.encoder, Encoder)
        student.encoder.trained = True  # saved from memory later: its folder is temporary
    log.info("student: trained on %d processes", scale.nproc)
    return student


def rank_job(args: dict[str, Any], *, meter: CostMeter) -> FineTune:
    """On each rank: the student's job, from what `distill_parallel` sent (the builder of
    its `parallel_job`)."""
    from frugalml.ladder.scale import dataset_from_json

    labels = tuple(args["labels"])
    teacher = EncoderHeadPredictor.load(Path(args["teacher_dir"]), args["teacher"], labels)
    return student_job(
        teacher,
        args["texts"],
        np.asarray(args["y"], dtype=np.int64),
        np.asarray(args["targets"], dtype=np.float32),
        dataset_from_json(args["val"]),
        TrainConfig(**args["config"]),
        **args["settings"],
    )


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
