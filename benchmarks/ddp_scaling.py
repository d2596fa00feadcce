"""Data-parallel scaling of the `full` rung on Financial PhraseBank: 1 process x 2 threads
against 2 processes x 1 thread (the same global batch, so the same optimization).

Both go through the launcher `fit --nproc` uses (`ladder.scale.fit_rung`, torchrun), so they
pay the same start-up; the cost card is the launcher's (all ranks' CPU, summed peaks).
Reports samples/s and CPU-s per sample of training, the final test accuracy, and the scaling
efficiency (speed-up / processes); nothing is asserted. On a shared machine figures move
with the load: `load_avg` is recorded beside them.

    nice -n 10 python benchmarks/ddp_scaling.py                 # reduced: 800 texts, 1 epoch
    nice -n 10 python benchmarks/ddp_scaling.py --train 0 --epochs 3   # the whole train split
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, phrasebank, write_result


def run(nproc: int, threads: int, global_batch: int, epochs: int, train: Any, test: Any) -> Any:
    from frugalml.config import Budget, Scale
    from frugalml.costs import CostMeter, Prices
    from frugalml.ladder.scale import fit_rung
    from frugalml.strategies import get_strategy

    strategy = get_strategy("full").build(
        max_length=64, train={"epochs": epochs, "batch_size": global_batch // nproc}
    )
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, CostMeter() as meter:
        predictor = fit_rung(
            "full",
            strategy,
            train,
            test,  # validation = the held-out split: with 1 epoch it only reports
            budget=Budget(),
            meter=meter,
            workdir=Path(tmp),
            # max_restarts=1 sends one process through torchrun too: the same start-up
            scale=Scale(nproc=nproc, threads=threads, max_restarts=1),
            prices=Prices(),
        )
    accuracy = float(np.mean(predictor.predict_proba(test.texts).argmax(1) == test.y))
    card = meter.card
    samples = len(train) * epochs
    return {
        "processes": nproc,
        "threads_per_process": threads,
        "per_rank_batch": global_batch // nproc,
        "wall_s": card.wall_s,
        "cpu_s": card.cpu_s,
        "peak_rss_mb": card.peak_rss_mb,
        "samples_per_s": samples / card.wall_s,
        "cpu_s_per_sample": card.cpu_s / samples,
        "test_accuracy": accuracy,
        "load_avg_before": load0,
        "load_avg_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=800, help="Training texts (0: all).")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32, help="Global batch.")
    args = parser.parse_args()
    data = phrasebank()
    train = data.train
    if args.train:
        rng = np.random.default_rng(0)
        train = train.subset(np.sort(rng.choice(len(train), args.train, replace=False)))
    rows = [
        run(1, 2, args.batch, args.epochs, train, data.test),
        run(2, 1, args.batch, args.epochs, train, data.test),
    ]
    for row in rows:
        print(row, flush=True)
    one, two = rows
    speedup = two["samples_per_s"] / one["samples_per_s"]
    result = {
        "machine": machine(),
        "setup": {
            "strategy": "full",
            "backbone": "packaged MiniLM-L6",
            "train_texts": len(train),
            "epochs": args.epochs,
            "global_batch": args.batch,
            "test_texts": len(data.test),
            "reduced": bool(args.train),
        },
        "runs": rows,
        "speedup_2x1_vs_1x2": speedup,
        "scaling_efficiency": speedup / 1.0,  # same cores (2) either way: 1.0 is break-even
        "gpu": "not measured: no GPU was lent to this session",
    }
    print(write_result("ddp_scaling", result))


if __name__ == "__main__":
    main()
