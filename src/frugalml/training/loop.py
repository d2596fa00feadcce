"""The one torch training loop every fine-tuning rung uses, ready for DDP and federation.

It knows nothing of strategies: it gets a model, a batch source, a loss and an evaluation,
and provides AdamW with linear warmup and decay, weight decay, gradient clipping and
accumulation, mixed precision on GPU, early stopping, seeded determinism, a checkpoint each
epoch (safetensors + JSON, so resuming never unpickles), and a clean stop at a deadline.

Data-parallel (torchrun, gloo or NCCL): pass the `DistributedDataParallel`-wrapped model and
each rank's own shard of batches, the same number on every rank. Every rank trains; rank 0
alone evaluates, checkpoints, writes curves and logs, and its score is broadcast, so all ranks
take the same early-stopping decision; a deadline reached by any rank stops all of them at the
same step, so none waits forever in a collective. Without an initialized process group no
collective runs and a single process behaves as it always did.

Federation: `trainable_state` and `load_trainable` are what a client exchanges (for LoRA, the
adapters and the head); checkpoints save and load the same dictionaries.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import Field

from frugalml.config import Frozen
from frugalml.costs import CostMeter
from frugalml.errors import FrugalError, plural


class TrainConfig(Frozen):
    """The one training loop's settings; every fine-tuning rung has its own defaults."""

    epochs: int = Field(
        3, ge=1, description="Passes over the training batches; early stopping may end sooner."
    )
    lr: float = Field(1e-4, gt=0, description="Peak learning rate of the encoder.")
    head_lr: float = Field(2e-3, gt=0, description="Peak learning rate of new layers (the head).")
    batch_size: int = Field(32, ge=1, description="Examples per batch (per rank under DDP).")
    grad_accum: int = Field(
        1,
        ge=1,
        description="Batches per optimizer step; an epoch's last, smaller group steps too, "
        "its loss scaled by its own size.",
    )
    warmup_ratio: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of all optimizer steps over which the learning rate rises "
        "linearly to its peak; it then decays linearly to 0.",
    )
    weight_decay: float = Field(
        0.01, ge=0, description="AdamW's decoupled weight decay; biases and norms get none."
    )
    max_grad_norm: float = Field(
        1.0, gt=0, description="Gradients are clipped to this global L2 norm before each step."
    )
    patience: int = Field(2, ge=1, description="Epochs without improvement before stopping.")
    amp: bool = Field(True, description="bf16 autocast on CUDA; ignored on CPU.")
    seed: int = Field(
        0,
        description="Seeds new weights, the batch order and dropout: "
        "the same seed and data give the same model.",
    )


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


class BatchSource(Protocol):
    """What the loop trains on: `len(source)` batches per epoch, yielded by `source(epoch)`.

    The loop reads the length (for the schedule and the accumulation groups) without
    iterating, then iterates each epoch exactly once. An epoch must yield the same batches
    each time it is asked (seed its shuffle with the epoch), so a resumed run sees the order
    it would have seen. Under DDP each rank passes its own shard, of the same length.
    """

    def __len__(self) -> int: ...

    def __call__(self, epoch: int) -> Iterable[Batch]: ...


@dataclass(frozen=True, eq=False)
class Bucketed:
    """Length-bucketed batches of `lengths`' examples, reshuffled each epoch
    (`bucketed_batches`); `collate` turns a batch's example indices into tensors."""

    lengths: np.ndarray
    batch_size: int
    seed: int
    collate: Callable[[np.ndarray], Batch]

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)  # windows hold whole batches

    def __call__(self, epoch: int) -> Iterator[Batch]:
        for idx in bucketed_batches(self.lengths, self.batch_size, self.seed + epoch):
            yield self.collate(idx)


class TrainableStateError(FrugalError, ValueError):
    """Trainable weights (a checkpoint, a federated update) do not fit the model."""


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    model: Any,
    batches: BatchSource,
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

    `model` may be wrapped (DDP): `loss_fn` gets it as given, so gradients are synchronized;
    `evaluate` gets the unwrapped module, and runs on rank 0 only. `head_prefixes` name the
    new modules (e.g. `head`) that learn at `head_lr`, in the unwrapped model's names.
    Under DDP `checkpoint_dir` must be a folder every rank can read (rank 0 writes it).
    """
    import torch

    net = unwrap(model)
    device = next(net.parameters()).device
    ranks = Ranks(device)
    n_batches = len(batches)
    ranks.require_same(
        n_batches, "on the batches per epoch; give every rank a shard of the same length"
    )
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, config, head_prefixes)
    total_steps = max(1, math.ceil(n_batches / config.grad_accum)) * config.epochs
    state = TrainState()
    checkpoints = Checkpoints(checkpoint_dir) if checkpoint_dir else None
    if checkpoints and ranks.require_same(
        checkpoints.exists(), f"on whether {checkpoint_dir} holds a checkpoint; share that folder"
    ):
        state = checkpoints.restore(net, optimizer)
        ranks.log(log, f"resuming from epoch {state.epoch} (step {state.step})")
    seed_everything(config.seed)
    autocast = _autocast(device, config.amp)
    best: dict[str, Any] | None = None
    while state.epoch < config.epochs and not state.stopped:
        model.train()
        torch.manual_seed(config.seed + state.epoch)  # dropout masks: same after a resume
        losses, seen = [], 0
        for i, batch in enumerate(batches(state.epoch)):
            if i == n_batches:
                raise RuntimeError(f"the batch source yielded more than its len() of {n_batches}")
            # The epoch's last group may be smaller: its mean loss is over its own batches.
            group_size = min(config.grad_accum, n_batches - i + i % config.grad_accum)
            last = (i + 1) % config.grad_accum == 0 or i + 1 == n_batches
            with _no_sync(model, not last):  # DDP: one all-reduce per accumulated group
                with autocast:
                    loss = loss_fn(model, _to(batch, device)) / group_size
                loss.backward()
            losses.append(float(loss.detach()) * group_size)
            seen = i + 1
            if meter is not None and flops_per_batch is not None:
                meter.add_flops(flops_per_batch(batch))
            if not last:
                continue
            _step(optimizer, params, config, state.step, total_steps)
            state.step += 1
            if deadline is not None and ranks.any(time.perf_counter() > deadline):
                state.stopped = "deadline"
                break
        if seen != n_batches and not state.stopped:
            raise RuntimeError(
                f"the batch source yielded {seen} batches, not its len() {n_batches}"
            )
        loss_mean = ranks.mean(float(np.mean(losses or [0.0])))
        score = ranks.from_rank0(lambda: evaluate(net))
        state.history.append({"epoch": state.epoch, "loss": loss_mean, "val": score})
        ranks.log(log, f"epoch {state.epoch}: loss {loss_mean:.4f}, val {score:.4f}")
        if curves_dir is not None and ranks.rank == 0:
            write_scalars(curves_dir, state.epoch, {"train/loss": loss_mean, "val/score": score})
        if score > state.best_score:
            state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
            best = trainable_state(net)
            if checkpoints and ranks.rank == 0:
                checkpoints.save_best(net)
        else:
            state.bad_epochs += 1
            if state.bad_epochs >= config.patience and not state.stopped:
                state.stopped = "early"
        state.epoch += 1
        if checkpoints and ranks.rank == 0:
            checkpoints.save_last(net, optimizer, state)
    if best is not None:
        load_trainable(net, best, source="the best epoch's weights")
    elif checkpoints and checkpoints.has_best():  # resumed after the best epoch was saved
        checkpoints.load_best(net)
    ranks.barrier()  # every rank returns once rank 0's checkpoint is complete
    return state


def unwrap(model: Any) -> Any:
    """The module inside DDP, DataParallel and `torch.compile` wrappers: its parameter names
    are the model's own (a wrapper prefixes them with `module.` or `_orig_mod.`)."""
    import torch

    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def is_head(name: str, head_prefixes: tuple[str, ...]) -> bool:
    """Whether parameter `name` (unwrapped) belongs to one of the new modules `head_prefixes`."""
    return any(name == p or name.startswith(p + ".") for p in head_prefixes)


def build_optimizer(model: Any, config: TrainConfig, head_prefixes: tuple[str, ...]) -> Any:
    """AdamW over the trainable weights; no weight decay on biases and norms; the new head
    learns at `head_lr`, recognized by its name in the unwrapped model."""
    import torch

    groups: dict[tuple[float, float], list[Any]] = {}
    for name, param in unwrap(model).named_parameters():
        if not param.requires_grad:
            continue
        lr = config.head_lr if is_head(name, head_prefixes) else config.lr
        decay = 0.0 if param.ndim < 2 else config.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return torch.optim.AdamW(
        [
            {"params": ps, "lr": lr, "initial_lr": lr, "weight_decay": wd}
            for (lr, wd), ps in groups.items()
        ]
    )


def _step(optimizer: Any, params: list[Any], config: TrainConfig, step: int, total: int) -> None:
    import torch

    scale = _schedule(step, total, config.warmup_ratio)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * scale
    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
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


def _no_sync(model: Any, skip: bool) -> AbstractContextManager[Any]:
    """DDP's `no_sync` while a group's gradients accumulate (a no-op otherwise)."""
    no_sync = getattr(model, "no_sync", None)
    return no_sync() if skip and no_sync is not None else nullcontext()


def _to(batch: Batch, device: Any) -> Batch:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


class Ranks:
    """The loop's few collectives over the default process group; in a single process
    (no group initialized) each is the identity and nothing is communicated."""

    def __init__(self, device: Any) -> None:
        import torch
        import torch.distributed as dist

        self.dist = dist if dist.is_available() and dist.is_initialized() else None
        self.rank = self.dist.get_rank() if self.dist else 0
        self.world = self.dist.get_world_size() if self.dist else 1
        nccl = self.dist is not None and self.dist.get_backend() == "nccl"
        self.device = device if nccl else torch.device("cpu")  # NCCL reduces GPU tensors only

    def _reduce(self, value: float, op: str) -> float:
        import torch

        assert self.dist is not None
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(tensor, op=getattr(self.dist.ReduceOp, op))
        return float(tensor.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any: a stop all ranks agree on."""
        return bool(self._reduce(float(flag), "MAX")) if self.dist else flag

    def mean(self, value: float) -> float:
        return self._reduce(value, "SUM") / self.world if self.dist else value

    def from_rank0(self, compute: Callable[[], float]) -> float:
        """`compute()` on rank 0, its result on every rank (the others wait for it)."""
        if not self.dist:
            return compute()
        import torch

        value = compute() if self.rank == 0 else math.nan
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        self.dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def require_same(self, value: int, what: str) -> int:
        """`value`, after checking every rank holds the same (a mismatch would hang DDP)."""
        if not self.dist:
            return value
        low, high = -self._reduce(-float(value), "MAX"), self._reduce(float(value), "MAX")
        if low != high:
            raise RuntimeError(f"ranks disagree ({low:g} to {high:g}) {what}")
        return value

    def log(self, log: Callable[[str], None], message: str) -> None:
        if self.rank == 0:
            log(message)

    def barrier(self) -> None:
        if self.dist:
            self.dist.barrier()


def trainable_state(model: Any) -> dict[str, Any]:
    """Copies of the weights that train (`requires_grad`), by their unwrapped names: for LoRA
    the adapters and the head. What checkpoints save and a federated client sends; copies, so
    training on does not change them."""
    return {
        name: param.detach().clone()
        for name, param in unwrap(model).named_parameters()
        if param.requires_grad
    }


def load_trainable(
    model: Any,
    state: dict[str, Any],
    *,
    source: str = "the trainable state",
    fix: str = "load weights saved from a model built with the same configuration",
) -> None:
    """Copy `state` into the model's trainable weights, in place (an optimizer keeps them).

    Strict over the trainable weights: a missing, unexpected or misshapen key raises
    `TrainableStateError` naming them, and nothing is loaded; `source` and `fix` word it.
    """
    import torch

    params = {n: p for n, p in unwrap(model).named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    problems = []
    if missing:
        problems.append(f"{plural(len(missing), 'trained weight')} missing: {_names(missing)}")
    if unexpected:
        problems.append(
            f"{plural(len(unexpected), 'key')} the model does not train: {_names(unexpected)}"
        )
    problems += [
        f"{name!r} has shape {tuple(state[name].shape)}; the model's is {tuple(p.shape)}"
        for name, p in params.items()
        if name in state and tuple(state[name].shape) != tuple(p.shape)
    ]
    if problems:
        raise TrainableStateError(f"{source} does not fit the model:", [*problems, fix])
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])


def _names(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


class Checkpoints:
    """`last` (weights + optimizer + state) each epoch and `best` weights, as safetensors + JSON.

    Only trainable tensors are saved (`trainable_state`): for LoRA the adapters and the head.
    Loads are strict over them, so a folder left by another configuration is refused, not
    silently half-loaded. Files are written beside their final names and renamed, so a kill
    never leaves half a file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        return (self.folder / "state.json").exists()

    def has_best(self) -> bool:
        return (self.folder / "best.safetensors").exists()

    def save_best(self, model: Any) -> None:
        self._save_tensors("best.safetensors", trainable_state(model))

    def load_best(self, model: Any) -> None:
        self._load_weights(model, "best.safetensors")

    def save_last(self, model: Any, optimizer: Any, state: TrainState) -> None:
        self._save_tensors("last.safetensors", trainable_state(model))
        self._save_tensors("optimizer.safetensors", _flatten_optimizer(optimizer))
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(state)))
        tmp.replace(self.folder / "state.json")  # written last: it marks the checkpoint complete

    def restore(self, model: Any, optimizer: Any) -> TrainState:
        from safetensors.torch import load_file

        self._load_weights(model, "last.safetensors")
        _restore_optimizer(optimizer, load_file(str(self.folder / "optimizer.safetensors")))
        data = json.loads((self.folder / "state.json").read_text())
        return TrainState(**data)

    def _load_weights(self, model: Any, name: str) -> None:
        from safetensors.torch import load_file

        path = self.folder / name
        load_trainable(
            model,
            load_file(str(path)),
            source=f"the checkpoint {path}",
            fix=f"it was left by another configuration: delete {self.folder} to start afresh, "
            "or train with another workdir",
        )

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
