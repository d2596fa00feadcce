"""One rank of the 2-process DDP smoke test (started by `torchrun`; see test_distributed.py).

Each rank fine-tunes the tiny backbone on its own half of the demo training set, through
`DistributedDataParallel` and the one training loop, then writes what the test checks into
OUT/rank{N}: the optimizer's learning rate per parameter, the loop's record, how often it
evaluated and logged, and its trained weights.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from frugalml.data import DEMO_INTENTS, read_table, stratified_split, to_dataset
from frugalml.training import loop
from frugalml.training.finetune import build_classifier

SHARDED = 128
CONFIG = loop.TrainConfig(epochs=2, lr=1e-3, head_lr=3e-2, batch_size=16, patience=5)


def main(backbone: Path, out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    splits = stratified_split(to_dataset(read_table(DEMO_INTENTS)).dataset, seed=0)
    # Equal shards of the first 128 texts: every rank takes the same number of steps.
    shard = splits.train.subset(np.arange(rank, SHARDED, world))
    val = splits.val.subset(np.arange(64))
    job = build_classifier(shard, val, backbone=backbone, config=CONFIG, max_length=32)
    folder = out / f"rank{rank}"
    folder.mkdir(parents=True)
    save_file(loop.trainable_state(job.model), str(folder / "initial.safetensors"))

    optimizers: list[Any] = []
    build = loop.build_optimizer

    def recording(*args: Any, **kwargs: Any) -> Any:  # keeps the optimizer `train` builds
        optimizers.append(build(*args, **kwargs))
        return optimizers[-1]

    loop.build_optimizer = recording  # type: ignore[assignment]
    evaluations = {"n": 0}

    def evaluate(model: Any) -> float:
        evaluations["n"] += 1
        return job.evaluate(model)

    messages: list[str] = []
    model = torch.nn.parallel.DistributedDataParallel(job.model)
    state = loop.train(
        model,
        job.batches,
        job.loss_fn,
        evaluate,
        CONFIG,
        checkpoint_dir=out / "checkpoints",
        log=messages.append,
        curves_dir=out / "curves",  # the same folder for both: rank 0 alone writes it
    )
    save_file(loop.trainable_state(model), str(folder / "trained.safetensors"))
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {names[id(p)]: g["initial_lr"] for g in optimizers[0].param_groups for p in g["params"]}

    # A deadline only rank 1 has passed must stop both ranks after the same (first) step.
    deadline = time.perf_counter() + (3600.0 if rank == 0 else -1.0)
    stopped = loop.train(model, job.batches, job.loss_fn, evaluate, CONFIG, deadline=deadline)
    record = {
        "lrs": lrs,
        "history": state.history,
        "steps": state.step,
        "evaluations": evaluations["n"],
        "messages": messages,
        "stopped": [stopped.stopped, stopped.step, len(stopped.history)],
    }
    (folder / "record.json").write_text(json.dumps(record))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
