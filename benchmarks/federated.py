"""Federated vs centralised, in one run: does federating a rung cost accuracy, and how many
bytes does it move? Also 1 Byzantine client of 5 against each robust strategy, and DP.

For each rung (frozen_probe = head only, lora): the centralised rung on the union of the
clients' data (the same train/validation/test rows), then Flower's simulation with
`--clients` parties split by `--partition`. Figures: final test accuracy, rounds, bytes per
round (down + up), client CPU-s, and the bytes per round full-model FedAvg would move.
Writes benchmarks/results/federated_<data>.json.

    nice -n 10 python benchmarks/federated.py --data phrasebank --rounds 10 \
        --rungs frozen_probe,lora [--head-solvers strategy,lbfgs] [--robust] [--dp] [--secagg]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import DATASETS, machine, write_result
from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.data.split import Splits, split_off_validation
from frugalml.federated import simulate
from frugalml.federated.settings import Privacy, SecureAggregation
from frugalml.strategies import get_strategy


def central(rung: str, splits: Splits) -> dict[str, Any]:
    """The rung as `fit` would train it on all the data, scored on the same test rows."""
    strategy = get_strategy(rung).build()
    with CostMeter() as meter:
        predictor = strategy.fit(splits.train, splits.val, budget=Budget(), meter=meter)
    accuracy = float(np.mean(predictor.predict_proba(splits.test.texts).argmax(1) == splits.test.y))
    return {"test_accuracy": accuracy, "cpu_s": meter.card.cpu_s, "wall_s": meter.card.wall_s}


def federated(
    rung: str, splits: Splits, out: Path, args: argparse.Namespace, **more: Any
) -> dict[str, Any]:
    started = time.perf_counter()
    report = simulate(
        splits,
        out=out,
        clients=args.clients,
        partition_by=more.pop("partition", args.partition),
        rung=rung,
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        force=True,
        **more,
    )
    rounds = report["rounds"][1:]  # round 0 is the initial evaluation
    per_round = [r["bytes_down"] + r["bytes_up"] for r in rounds]
    warm = [r for r in rounds if r.get("stage") == "head"]
    return {
        "test_accuracy": report["test_accuracy"],
        "val_accuracy_by_round": [r["val_accuracy"] for r in report["rounds"]],
        "epsilon_by_round": [r["epsilon"] for r in report["rounds"]],
        "rounds": len(rounds),  # all of them, the head warm-up's included
        "head_rounds": len(warm),
        "bytes_per_round": float(np.mean(per_round)),
        "max_bytes_per_round": max(per_round),
        "bytes_total": int(sum(per_round)),
        "head_bytes_total": sum(r["bytes_down"] + r["bytes_up"] for r in warm),
        "client_cpu_s": sum(c["cpu_s"] for c in report["costs"]["clients"].values()),
        "head_client_cpu_s": sum(r["client_cpu_s"] for r in warm),
        "server_cpu_s": report["costs"]["server"]["cpu_s"],
        "wall_s": time.perf_counter() - started,
    }


def full_fedavg_bytes(splits: Splits, clients: int) -> int:
    """What one round of full-model FedAvg moves: every trained weight, down and up."""
    from frugalml.training.loop import trainable_state

    tiny = splits.train.subset(np.arange(8))
    job = get_strategy("full").build().fine_tuning(tiny, tiny)  # type: ignore[attr-defined]
    per_client = sum(t.numel() * t.element_size() for t in trainable_state(job.model).values())
    return 2 * clients * per_client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="phrasebank", choices=sorted(DATASETS))
    parser.add_argument("--rungs", default="frozen_probe,lora")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--partition", default="dirichlet:1.0")
    parser.add_argument("--also-iid", action="store_true", help="each rung with iid too")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument(
        "--head-rounds",
        type=int,
        default=0,
        help="lora/full: head-only warm-up rounds first (counted in rounds, bytes and CPU)",
    )
    parser.add_argument(
        "--head-solvers",
        default="strategy,lbfgs",
        help="frozen_probe: strategy (FedAvg rounds) and/or lbfgs (the exact solve)",
    )
    parser.add_argument(
        "--robust",
        nargs="?",
        const="clean,fedavg,fedmedian,fedtrimmedavg,krum",
        default="",
        help="1 Byzantine client (frozen_probe) under these strategies; 'clean': no attack",
    )
    parser.add_argument(
        "--dp", nargs="?", const="8,1", default="", help="frozen_probe at these epsilons"
    )
    parser.add_argument(
        "--secagg",
        action="store_true",
        help="frozen_probe FedAvg without and with secure aggregation (SecAgg+), one run each",
    )
    parser.add_argument("--skip-central", action="store_true")
    parser.add_argument("--central-only", action="store_true", help="no federated run")
    parser.add_argument("--tag", default="", help="suffix of the result file's name")
    parser.add_argument(
        "--smoke", type=int, default=0, help="keep only N rows of each split (a quick check)"
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # a cold embedding cache: a head warm-up's clients pay for embedding their texts
    os.environ["FRUGALML_CACHE"] = tempfile.mkdtemp(prefix="frugalml-bench-cache-")
    given = DATASETS[args.data]()
    parts = split_off_validation(given.train, val_frac=0.15, seed=0)
    splits = Splits(parts.train, parts.val, given.test)
    if args.smoke:
        splits = Splits(*(_head(d, args.smoke) for d in (splits.train, splits.val, splits.test)))
    result: dict[str, Any] = {
        "data": args.data,
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        "clients": args.clients,
        "partition": args.partition,
        "local_epochs": args.local_epochs,
        "head_rounds": args.head_rounds,
        "machine": machine(),
        "full_fedavg_bytes_per_round": full_fedavg_bytes(splits, args.clients),
        "rungs": {},
    }
    work = Path(tempfile.mkdtemp(prefix="fed-bench-"))
    name = f"federated_{args.data}{args.tag}"
    for rung in filter(None, args.rungs.split(",")):
        row: dict[str, Any] = {}
        if not args.skip_central:
            row["central"] = central(rung, splits)
            print(rung, "central", row["central"], flush=True)
        if args.central_only:
            result["rungs"][rung] = row
            write_result(name, result)
            continue
        solvers = args.head_solvers.split(",") if rung == "frozen_probe" else ["strategy"]
        warm = {"head_rounds": args.head_rounds} if rung != "frozen_probe" else {}
        for solver in solvers:
            key = "federated" if solver == "strategy" else f"federated_{solver}"
            row[key] = federated(
                rung, splits, work / f"{rung}-{solver}", args, solver=solver, **warm
            )
            print(rung, key, row[key], flush=True)
            if "central" in row:
                gap = "gap_points" if solver == "strategy" else f"gap_points_{solver}"
                row[gap] = 100 * (row["central"]["test_accuracy"] - row[key]["test_accuracy"])
        if args.also_iid:
            row["federated_iid"] = federated(
                rung, splits, work / f"{rung}-iid", args, partition="iid"
            )
            print(rung, "federated iid", row["federated_iid"], flush=True)
        first = row.get("federated") or row[f"federated_{solvers[0]}"]
        row["bytes_vs_full_fedavg"] = (  # the costliest round: a head warm-up's are cheaper
            first["max_bytes_per_round"] / result["full_fedavg_bytes_per_round"]
        )
        result["rungs"][rung] = row
        write_result(name, result)
    if args.robust:
        result["robust"] = robustness(splits, work, args)
        write_result(name, result)
    if args.secagg:
        result["secagg"] = {
            kind: federated("frozen_probe", splits, work / f"secagg-{kind}", args, **more)
            for kind, more in (("plain", {}), ("secagg", {"secagg": SecureAggregation()}))
        }
        print("secagg", result["secagg"], flush=True)
        write_result(name, result)
    if args.dp:
        result["dp"] = {
            str(eps): federated(
                "frozen_probe",
                splits,
                work / f"dp-{eps}",
                args,
                privacy=Privacy(epsilon=eps, delta=1e-5, clip=1.0),
            )
            for eps in map(float, args.dp.split(","))
        }
        write_result(name, result)
    print(write_result(name, result))


def _head(data: Dataset, n: int) -> Dataset:
    """A spread-out sample of `n` rows (a smoke test, not a figure)."""
    return data.subset(np.random.default_rng(0).permutation(len(data))[:n])


def robustness(splits: Splits, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Client 0 of 5 sends its update reversed and amplified tenfold, each strategy in turn."""
    out: dict[str, Any] = {"attack": "scale", "byzantine": 1}
    names = args.robust.split(",")
    if "clean" in names:
        out["clean_fedavg"] = federated("frozen_probe", splits, work / "clean", args)
    for name in (n for n in names if n != "clean"):
        out[name] = federated(
            "frozen_probe", splits, work / f"byz-{name}", args, strategy=name, attacks={0: "scale"}
        )
        print("byzantine", name, out[name]["test_accuracy"], flush=True)
    return out


if __name__ == "__main__":
    main()
