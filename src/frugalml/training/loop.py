"""The one torch training loop every fine-tuning rung uses (and a DDP wrapper can drive).

It knows nothing of strategies: it gets a model, a batch source, a loss and an evaluation,
and provides AdamW with linear warmup and decay, weight decay, gradient clipping and
accumulation, mixed precision on GPU, early stopping, seeded determinism, a checkpoint each
epoch (safetensors + JSON, so resuming never unpickles), and a clean stop at a deadline.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from frugalml.config import Frozen
from frugalml.costs import CostMeter


class TrainConfig(Frozen):
    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-4, gt=0, description="Peak learning rate of the encoder.")
    head_lr: float = Field(2e-3, gt=0, description="Peak learning rate of new layers (the head).")
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1, description="Batches per optimizer step.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    patience: int = Field(2, ge=1, description="Epochs without improvement before stopping.")
    amp: bool = Field(True, description="bf16 autocast on CUDA; ignored on CPU.")
    seed: int = 0


@dataclass
class TrainState:
    """Everything needed to resume, saved as JSON beside the weights."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = ""  # "", "early", "deadline"


Batch = dict[str, Any]
LossFn = Callable[[Any, Batch], Any]  # (model, batch) -> scalar tensor
EvalFn = Callable[[Any], float]  # model -> validation score, higher is better


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    model: Any,
    batches: Callable[[int], Iterable[Batch]],
    loss_fn: LossFn,
    evaluate: EvalFn,
    config: TrainConfig,
    *,
    head_prefixes: tuple[str, ...] = ("head",),
    checkpoint_dir: Path | None = None,
    deadline: float | None = None,
    meter: CostMeter | None = None,
    flops_per_batch: Callable[[Batch], float] | None = None,
    log: Callable[[str], None] = lambda message: None,
    curves_dir: Path | None = None,
) -> TrainState:
    """Train `model` in place and leave it holding its best validation weights.

    `batches(epoch)` must yield the same batches for the same epoch (seed it with the epoch),
    so a resumed run sees exactly the data order it would have seen.
    """
    import torch

    device = next(model.parameters()).device
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = _optimizer(params, config, head_prefixes)
    steps_per_epoch = max(1, math.ceil(sum(1 for _ in batches(0)) / config.grad_accum))
    total_steps = steps_per_epoch * config.epochs
    state = TrainState()
    checkpoints = Checkpoints(checkpoint_dir) if checkpoint_dir else None
    if checkpoints and checkpoints.exists():
        state = checkpoints.restore(model, optimizer)
        log(f"resuming from epoch {state.epoch} (step {state.step})")
    seed_everything(config.seed)
    autocast = _autocast(device, config.amp)
    best: dict[str, Any] | None = None
    while state.epoch < config.epochs and not state.stopped:
        model.train()
        torch.manual_seed(config.seed + state.epoch)  # dropout masks: same after a resume
        losses = []
        for i, batch in enumerate(batches(state.epoch)):
            with autocast:
                loss = loss_fn(model, _to(batch, device)) / config.grad_accum
            loss.backward()
            losses.append(float(loss.detach()) * config.grad_accum)
            if meter is not None and flops_per_batch is not None:
                meter.add_flops(flops_per_batch(batch))
            if (i + 1) % config.grad_accum:
                continue
            _step(optimizer, params, config, state.step, total_steps)
            state.step += 1
            if deadline is not None and time.perf_counter() > deadline:
                state.stopped = "deadline"
                break
        score = evaluate(model)
        state.history.append(
            {"epoch": state.epoch, "loss": float(np.mean(losses or [0.0])), "val": score}
        )
        log(f"epoch {state.epoch}: loss {state.history[-1]['loss']:.4f}, val {score:.4f}")
        if curves_dir is not None:
            write_scalars(
                curves_dir,
                state.epoch,
                {"train/loss": state.history[-1]["loss"], "val/score": score},
            )
        if score > state.best_score:
            state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
            best = {k: v.detach().clone() for k, v in _trainable(model).items()}
            if checkpoints:
                checkpoints.save_best(model)
        else:
            state.bad_epochs += 1
            if state.bad_epochs >= config.patience and not state.stopped:
                state.stopped = "early"
        state.epoch += 1
        if checkpoints:
            checkpoints.save_last(model, optimizer, state)
    if best is not None:
        model.load_state_dict(best, strict=False)
    elif checkpoints and checkpoints.has_best():  # resumed after the best epoch was saved
        checkpoints.load_best(model)
    return state


def _optimizer(
    params: list[tuple[str, Any]], config: TrainConfig, head_prefixes: tuple[str, ...]
) -> Any:
    """AdamW; no weight decay on biases and norms; the new head learns faster."""
    import torch

    groups: dict[tuple[float, float], list[Any]] = {}
    for name, param in params:
        lr = config.head_lr if name.startswith(head_prefixes) else config.lr
        decay = 0.0 if param.ndim < 2 else config.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return torch.optim.AdamW(
        [
            {"params": ps, "lr": lr, "initial_lr": lr, "weight_decay": wd}
            for (lr, wd), ps in groups.items()
        ]
    )


def _step(
    optimizer: Any, params: list[tuple[str, Any]], config: TrainConfig, step: int, total: int
) -> None:
    import torch

    scale = _schedule(step, total, config.warmup_ratio)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * scale
    torch.nn.utils.clip_grad_norm_([p for _, p in params], config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _schedule(step: int, total: int, warmup_ratio: float) -> float:
    """Linear warmup to 1, then linear decay to 0."""
    warmup = max(1, int(total * warmup_ratio))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _autocast(device: Any, enabled: bool) -> Any:
    import torch

    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _to(batch: Batch, device: Any) -> Batch:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def _trainable(model: Any) -> dict[str, Any]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in names}


class Checkpoints:
    """`last` (weights + optimizer + state) each epoch and `best` weights, as safetensors + JSON.

    Only trainable tensors are saved: for LoRA that is the adapter and the head.
    Files are written beside their final names and renamed, so a kill never leaves half a file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        return (self.folder / "state.json").exists()

    def has_best(self) -> bool:
        return (self.folder / "best.safetensors").exists()

    def save_best(self, model: Any) -> None:
        self._save_tensors("best.safetensors", _trainable(model))

    def load_best(self, model: Any) -> None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(self.folder / "best.safetensors")), strict=False)

    def save_last(self, model: Any, optimizer: Any, state: TrainState) -> None:
        self._save_tensors("last.safetensors", _trainable(model))
        self._save_tensors("optimizer.safetensors", _flatten_optimizer(optimizer))
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(state)))
        tmp.replace(self.folder / "state.json")  # written last: it marks the checkpoint complete

    def restore(self, model: Any, optimizer: Any) -> TrainState:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(self.folder / "last.safetensors")), strict=False)
        _restore_optimizer(optimizer, load_file(str(self.folder / "optimizer.safetensors")))
        data = json.loads((self.folder / "state.json").read_text())
        return TrainState(**data)

    def _save_tensors(self, name: str, tensors: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        tmp = self.folder / f"{name}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        tmp.replace(self.folder / name)


def _flatten_optimizer(optimizer: Any) -> dict[str, Any]:
    """AdamW's per-parameter state as flat tensors ('3.exp_avg'); scalar steps become tensors."""
    import torch

    flat = {}
    for index, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            flat[f"{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(float(value))
    return flat


def _restore_optimizer(optimizer: Any, flat: dict[str, Any]) -> None:
    state_dict = optimizer.state_dict()
    restored: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        restored.setdefault(int(index), {})[name] = value
    state_dict["state"] = restored
    optimizer.load_state_dict(state_dict)


def bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int) -> list[np.ndarray]:
    """Shuffled batches of similar lengths: little padding, still a random order each epoch.

    Indices are shuffled, cut into windows of 50 batches, sorted by length inside a window,
    batched, and the batches shuffled again.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def write_scalars(folder: Path, step: int, scalars: dict[str, float]) -> None:
    """Training curves as TensorBoard scalars when a writer is installed, and always as JSON
    lines (readable without TensorBoard)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "scalars.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"step": step, **scalars}) + "\n")
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return
    with SummaryWriter(str(folder)) as writer:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
