"""Torch rungs trained data-parallel under torchrun; the ladder's own process launches them.

`fit_rung` is what the ladder calls for every rung: a rung with a `fine_tuning()` job (full,
lora, top_layers) trains on `Scale.nproc` ranks per node when the run asks for more than one
process, any other rung runs `fit` once, here. The job goes to the ranks as JSON (strategy,
settings, data); rank 0 alone evaluates, checkpoints, logs and saves the trained predictor,
which this process loads back. The rung's cost card is this process's meter, which counts
every local rank's CPU once torchrun is waited for (killed attempts included), plus what
it cannot see: the ranks' summed peak memory and other nodes' CPU.

Run as `python -m frugalml.ladder.scale JOB_DIR` by torchrun (each rank), or with
`--follow STATUS_DIR` on a node other than 0, where ranks receive each job from rank 0.

Under `torchrun -m frugalml fit ...` the group exists before the ladder does: rank 0 climbs,
and for each torch rung sends the job to the other ranks (waiting in `serve_rank0`) and trains
its own shard in its own process; the others' cards are added to its meter.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.config import Budget, Scale
from frugalml.costs import CostCard, CostMeter, Prices
from frugalml.data.dataset import Dataset
from frugalml.errors import FrugalError
from frugalml.strategies import Predictor, Strategy, get_strategy

log = logging.getLogger("frugalml")
JOB, RESULT, PREDICTOR, LOG = "job.json", "result.json", "predictor", "torchrun.log"
# A test's fault, first attempt only: "kill:RANK:EPOCH:BATCH" makes that rank SIGKILL itself
# there; "hold:EPOCH:BATCH" makes every rank of the node given it write `ddp/held-RANK` there
# and wait to be killed (a node that dies mid-epoch, at a point a test can see).
FAULT_ENV = "FRUGALML_FAULT"
MAX_JOIN_TRIES = 100  # a node other than 0 retries a round whose ranks never got a job


class DistributedTrainingError(FrugalError, RuntimeError):
    """The ranks did not finish (a crash, or more failures than --max-restarts)."""


def fit_rung(
    name: str,
    strategy: Strategy,
    train: Dataset,
    val: Dataset,
    *,
    budget: Budget,
    meter: CostMeter,
    workdir: Path,
    scale: Scale,
    prices: Prices,
) -> Predictor:
    """`strategy.fit`, data-parallel under torchrun when `scale` asks for it and the rung
    has a torch `fine_tuning` job."""
    torch_rung = hasattr(strategy, "fine_tuning")
    group = torchrun_group()
    if group is not None and torch_rung:
        return _fit_in_group(name, strategy, train, val, budget, meter, workdir, prices)
    if not scale.parallel or not torch_rung:
        return strategy.fit(train, val, budget=budget, meter=meter, workdir=workdir)
    job = _job(name, strategy, train, val, budget, workdir, prices)
    result = run_parallel(job, scale, meter, name)
    folder = Path(job["workdir"]) / "ddp"
    predictor = get_strategy(name).predictor.load(folder / PREDICTOR, result["spec"], train.labels)
    if hasattr(predictor, "stopped"):
        predictor.stopped = result["stopped"]
    return predictor


def run_parallel(job: dict[str, Any], scale: Scale, meter: CostMeter, what: str) -> dict[str, Any]:
    """Train `job` (made by `_job` or `parallel_job`) on `scale`'s ranks under torchrun, in
    `job["workdir"]/ddp`; put on `meter` what its own readings cannot see (the ranks' peak
    memory, other nodes' CPU, FLOPs, how many processes and nodes ran). Rank 0's result:
    the saved predictor's `spec` (in `ddp/predictor`), `stopped`, `history`, `restarts`."""
    from frugalml.training import ddp

    folder = Path(job["workdir"]) / "ddp"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULT).unlink(missing_ok=True)
    shutil.rmtree(folder / "attempts", ignore_errors=True)  # an earlier run's
    (folder / JOB).write_text(json.dumps(job), encoding="utf-8")
    command = ddp.torchrun_command(
        scale, ["-m", "frugalml.ladder.scale", str(folder)], rdzv_id=_round_id(scale)
    )
    log.info(f"{what}: training on {scale.nproc} process(es) per node; log in {folder / LOG}")
    code = ddp.launch(command, ddp.rank_environment(scale), folder / LOG)
    if code != 0 or not (folder / RESULT).exists():
        raise DistributedTrainingError(
            f"data-parallel training of '{what}' failed (torchrun exited with {code})",
            [f"the ranks' output is in {folder / LOG}", _tail(folder / LOG)],
        )
    result: dict[str, Any] = json.loads((folder / RESULT).read_text(encoding="utf-8"))
    result["peak_processes"] = _peak_processes(folder / "attempts")
    _account(result, meter, scale)
    return result


def parallel_job(
    builder: str, args: dict[str, Any], *, workdir: Path, prices: Prices
) -> dict[str, Any]:
    """A job for `run_parallel` that is not a ladder rung: each rank calls the function
    `builder` ("module:function") with `args` (JSON) and `meter=`, and trains the
    `finetune.FineTune`-shaped job it returns (e.g. distillation in `compress`)."""
    return {
        "builder": builder,
        "args": args,
        "deadline": None,
        "prices": prices.to_dict(),
        "workdir": str(workdir.resolve()),
    }


def _job(
    name: str,
    strategy: Strategy,
    train: Dataset,
    val: Dataset,
    budget: Budget,
    workdir: Path,
    prices: Prices,
) -> dict[str, Any]:
    """What every rank needs to train the rung, as JSON."""
    return {
        "strategy": name,
        "module": type(strategy).__module__,
        "config": strategy.config.model_dump(mode="json"),
        "train": dataset_to_json(train),
        "val": dataset_to_json(val),
        "deadline": None if budget.max_wall_s is None else time.time() + budget.max_wall_s,
        "prices": prices.to_dict(),
        "workdir": str(workdir.resolve()),
    }


# -- under `torchrun -m frugalml fit` ---------------------------------------------------------
def torchrun_group() -> Any:
    """`torch.distributed` when this process is a rank of a group of more than one (as under
    `torchrun -m frugalml fit`), else None. Torch is not imported for this."""
    if "torch.distributed" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_initialized() and dist.get_world_size() > 1 else None


def join_torchrun() -> int:
    """Join the group torchrun started this process in; this rank. Collectives may wait as
    long as a node waits at a rendezvous: rank 0 climbs cheaper rungs meanwhile."""
    from datetime import timedelta

    from frugalml.training import ddp

    dist = ddp.init_process_group(timeout=timedelta(seconds=ddp.JOIN_TIMEOUT_S))
    return int(dist.get_rank())


def serve_rank0() -> int:
    """A rank other than 0: train each torch rung rank 0 sends, until its ladder is done.
    Returns how many rungs it trained."""
    from frugalml.training import ddp

    dist = torchrun_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    logging.basicConfig(level=logging.INFO, format=f"rank {rank}: %(message)s")
    rungs = 0
    while not (job := json.loads(ddp.broadcast_bytes(None, src=0))).get("stop"):
        _train(job, rank, world, ddp, keep=False)
        dist.barrier()  # rank 0 has saved the outcome
        rungs += 1
    dist.destroy_process_group()
    return rungs


def _fit_in_group(
    name: str,
    strategy: Strategy,
    train: Dataset,
    val: Dataset,
    budget: Budget,
    meter: CostMeter,
    workdir: Path,
    prices: Prices,
) -> Predictor:
    """Rank 0 of a torchrun group: send the job, train its own shard here, keep the outcome."""
    from frugalml.training import ddp

    dist = torchrun_group()
    job = _job(name, strategy, train, val, budget, workdir, prices)
    ddp.broadcast_bytes(json.dumps(job).encode("utf-8"), src=0)
    trained, state, cards, restarts = _train(job, 0, dist.get_world_size(), ddp, keep=True)
    predictor: Predictor = trained
    folder = workdir.resolve() / "ddp"
    folder.mkdir(parents=True, exist_ok=True)
    _save_outcome(folder, predictor, state, cards, restarts)
    dist.barrier()
    # This process trained rank 0's shard: its CPU and memory are on `meter` already.
    here, others = cards[0][0], cards[1:]
    meter.add_parallel(
        CostCard(
            wall_s=0.0,
            cpu_s=sum(c.cpu_s for _, c in others),
            peak_rss_mb=sum(c.peak_rss_mb for _, c in others),
            energy_kwh=sum(c.energy_kwh for _, c in others),
            energy_source="",
            usd=_per_node_usd(cards, here),
            price_basis="",
            processes=len(cards),
            extra={
                "nodes": float(len({node for node, _ in cards})),
                "restarts": float(restarts),
                "ranks_cpu_s": sum(c.cpu_s for _, c in cards),
            },
        )
    )
    meter.add_flops(sum(c.flops or 0.0 for _, c in others))
    if hasattr(predictor, "stopped"):
        predictor.stopped = state.stopped if state.stopped == "deadline" else ""
    return predictor


_ROUNDS = count()  # rendezvous ids: node 0 and the nodes following it count rounds alike


def _round_id(scale: Scale) -> str:
    return f"frugalml-{next(_ROUNDS)}" if scale.max_nodes > 1 else "frugalml"


def _account(result: dict[str, Any], meter: CostMeter, scale: Scale) -> None:
    """Put on `meter` what its own readings of the waited-for ranks cannot see."""
    cards = [(int(node), CostCard.from_dict(card)) for node, card in result["cards"]]
    here = [c for node, c in cards if node == scale.node_rank]
    away = [c for node, c in cards if node != scale.node_rank]
    meter.add_flops(sum(c.flops or 0.0 for _, c in cards))
    nodes = len({node for node, _ in cards})
    meter.add_parallel(
        CostCard(
            wall_s=0.0,
            cpu_s=sum(c.cpu_s for c in away),
            peak_rss_mb=sum(c.peak_rss_mb for c in here) + sum(c.peak_rss_mb for c in away),
            energy_kwh=sum(c.energy_kwh for c in away),
            energy_source="",
            usd=_per_node_usd(cards, scale.node_rank),
            price_basis="",
            processes=len(cards),
            extra={
                "nodes": float(nodes),
                "restarts": float(result["restarts"]),
                "ranks_cpu_s": sum(c.cpu_s for _, c in cards),  # the attempt that finished
                # an elastic node may have left (or joined) since an earlier attempt
                "peak_processes": float(max(result["peak_processes"], len(cards))),
            },
        )
    )


def _peak_processes(attempts: Path) -> int:
    """The most ranks any attempt ran with, from the records this node's ranks kept."""
    worlds = [
        json.loads(p.read_text(encoding="utf-8")).get("world", 1) for p in attempts.glob("*.json")
    ]
    return max(worlds, default=1)


def _per_node_usd(cards: list[tuple[int, CostCard]], here: int) -> float:
    """Other nodes' machines, each priced for its longest rank (ours is on our own card)."""
    longest: dict[int, float] = {}
    for node, card in cards:
        if node != here:
            longest[node] = max(longest.get(node, 0.0), card.usd)
    return sum(longest.values())


def release_followers(scale: Scale) -> None:
    """Tell the other nodes (waiting in `follow`) that node 0's ladder is done."""
    global _ROUNDS
    if torchrun_group() is not None:  # under `torchrun -m frugalml fit`: ranks in serve_rank0
        from frugalml.training import ddp

        ddp.broadcast_bytes(json.dumps({"stop": True}).encode("utf-8"), src=0)
        return
    if scale.max_nodes == 1 or scale.node_rank != 0:
        return
    from frugalml.training import ddp

    with tempfile.TemporaryDirectory(prefix="frugalml-stop-") as tmp:
        folder = Path(tmp)
        (folder / JOB).write_text(json.dumps({"stop": True}), encoding="utf-8")
        command = ddp.torchrun_command(
            scale.model_copy(update={"max_restarts": 0}),
            ["-m", "frugalml.ladder.scale", str(folder)],
            rdzv_id=_round_id(scale),
        )
        ddp.launch(command, ddp.rank_environment(scale), folder / LOG)
    _ROUNDS = count()  # the next fit of this process starts at round 0, as its followers do


def follow(scale: Scale, log_dir: Path) -> int:
    """On a node other than 0: join node 0's torch rungs one after another, until node 0
    says its ladder is done. Returns how many rungs this node trained."""
    from frugalml.training import ddp

    rounds = 0
    for _ in range(MAX_JOIN_TRIES):
        status = log_dir / f"round-{rounds}"
        status.mkdir(parents=True, exist_ok=True)
        command = ddp.torchrun_command(
            scale,
            ["-m", "frugalml.ladder.scale", "--follow", str(status)],
            rdzv_id=f"frugalml-{rounds}",
        )
        code = ddp.launch(command, ddp.rank_environment(scale), status / LOG)
        if (status / "stopped").exists():
            return rounds
        if code != 0 and not (status / "joined").exists():
            continue  # node 0's store was not up yet, or went down as we joined: try again
        if code != 0:
            raise DistributedTrainingError(
                f"node {scale.node_rank} failed in round {rounds} (torchrun exited with {code})",
                [f"its ranks' output is in {status / LOG}", _tail(status / LOG)],
            )
        rounds += 1
    raise DistributedTrainingError(
        f"node {scale.node_rank} could not join node 0 at {scale.rdzv_endpoint}",
        [f"tried {MAX_JOIN_TRIES} times; is node 0 running `frugalml fit` with --nnodes?"],
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "last lines:\n" + "\n".join(text.splitlines()[-lines:])


def dataset_to_json(data: Dataset) -> dict[str, Any]:
    return {
        "texts": list(data.texts),
        "y": data.y.tolist(),
        "labels": list(data.labels),
        "name": data.name,
        "task": data.task,
        "kind": data.kind,
    }


def dataset_from_json(raw: dict[str, Any]) -> Dataset:
    return Dataset(
        tuple(raw["texts"]),
        np.asarray(raw["y"], dtype=np.int64),
        tuple(raw["labels"]),
        raw["name"],
        raw["task"],
        raw["kind"],
    )


# -- one rank ---------------------------------------------------------------------------------
def main(argv: list[str]) -> None:
    """One rank: receive the job from node 0, train its shard; node 0's first rank saves
    the outcome."""
    from frugalml.training import ddp

    dist = ddp.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    logging.basicConfig(level=logging.INFO, format=f"rank {rank}: %(message)s")
    following = argv[0] == "--follow"
    # The rank launched with the job (node 0's first) sends it: under c10d it may not be 0.
    leader = int(ddp.leader_rank(not following and int(os.environ.get("LOCAL_RANK", "0")) == 0))
    raw = (Path(argv[0]) / JOB).read_bytes() if rank == leader else None
    job = json.loads(ddp.broadcast_bytes(raw, src=leader))
    if following and os.environ.get("LOCAL_RANK") == "0":
        (Path(argv[1]) / "joined").write_text("received a job from node 0\n")
    if job.get("stop"):
        if following and os.environ.get("LOCAL_RANK") == "0":
            (Path(argv[1]) / "stopped").write_text("node 0's ladder is done\n")
        dist.destroy_process_group()
        return
    outcome = _train(job, rank, world, ddp, keep=rank == leader)
    if rank == leader:  # every rank ends with the same weights; node 0 keeps the outcome
        _save_outcome(Path(job["workdir"]) / "ddp", *outcome)
    dist.barrier()
    dist.destroy_process_group()


def _train(job: dict[str, Any], rank: int, world: int, ddp: Any, *, keep: bool) -> Any:
    """Train this rank's shard of `job`: (the predictor, made only where it is `keep`t,
    else None), the loop's state, every rank's (node, cost card), the restart count."""
    workdir = Path(job["workdir"])
    left = None if job["deadline"] is None else max(1e-3, job["deadline"] - time.time())
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    with CostMeter(Prices.from_dict(job["prices"])) as meter:
        fine_tuning = _fine_tuning(job, meter)
        _started(workdir / "ddp", restart, rank)
        batches = ddp.shard(fine_tuning.batches, rank, world)
        batches = _faulty(batches, rank, restart, workdir / "ddp")
        parallel = replace(fine_tuning, model=ddp.wrap(fine_tuning.model), batches=batches)
        state = parallel.train(budget=Budget(max_wall_s=left), meter=meter, workdir=workdir)
    node = int(os.environ.get("GROUP_RANK", "0"))
    cards = ddp.gather_cards(meter.card, node)
    # Only the rank that keeps it finishes (SetFit's finish fits a head: work to waste).
    return fine_tuning.finish(state) if keep else None, state, cards, restart


def _fine_tuning(job: dict[str, Any], meter: CostMeter) -> Any:
    """The job's `FineTune`-shaped training, built on this rank: a rung's `fine_tuning`, or
    what a `parallel_job`'s builder returns."""
    import importlib
    import inspect

    if "builder" in job:
        module, _, function = job["builder"].partition(":")
        return getattr(importlib.import_module(module), function)(job["args"], meter=meter)
    importlib.import_module(job["module"])  # registers a rung defined outside frugalml
    strategy: Any = get_strategy(job["strategy"]).build(**job["config"])
    train, val = dataset_from_json(job["train"]), dataset_from_json(job["val"])
    if "meter" in inspect.signature(strategy.fine_tuning).parameters:
        return strategy.fine_tuning(train, val, meter=meter)
    return strategy.fine_tuning(train, val)


def _save_outcome(
    folder: Path,
    predictor: Predictor,
    state: Any,
    cards: list[tuple[int, CostCard]],
    restarts: int,
) -> None:
    spec = predictor.save(folder / PREDICTOR)
    result = {
        "spec": spec,
        "stopped": state.stopped if state.stopped == "deadline" else "",
        "history": state.history,
        "restarts": restarts,
        "cards": [(node, card.to_dict()) for node, card in cards],
    }
    tmp = folder / f"{RESULT}.tmp"
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(folder / RESULT)


def _started(folder: Path, restart: int, rank: int) -> None:
    """Each attempt's ranks note the CPU they spent before training: a killed attempt's
    record shows work that the finished attempt's cards do not hold."""
    times = os.times()
    world = int(os.environ.get("WORLD_SIZE", "1"))  # it changes as elastic nodes come and go
    record = {"restart": restart, "rank": rank, "world": world, "cpu_s": times.user + times.system}
    path = folder / "attempts" / f"{restart}-{rank}.json"
    try:  # a node without the shared run folder keeps no record
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record), encoding="utf-8")
    except OSError:
        pass


@dataclass(frozen=True, eq=False)
class _Faulty:
    """Batches that SIGKILL this rank at (epoch, batch), or hold it there until it is killed
    after writing `held` (a file): how tests kill a worker, or a node, mid-epoch."""

    batches: Any
    epoch: int
    batch: int
    held: Path | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __call__(self, epoch: int) -> Iterator[Any]:
        for i, batch in enumerate(self.batches(epoch)):
            if (epoch, i) == (self.epoch, self.batch):
                self._fail()
            yield batch

    def _fail(self) -> None:
        if self.held is None:
            os.kill(os.getpid(), signal.SIGKILL)
            return
        world = os.environ.get("WORLD_SIZE", "1")
        tmp = self.held.with_name(f".{self.held.name}")  # renamed: seen only when whole
        tmp.write_text(f"world {world}: waiting to be killed\n", encoding="utf-8")
        tmp.replace(self.held)
        while True:  # the test kills this node once it sees `held`
            signal.pause()


def _faulty(batches: Any, rank: int, restart: int, folder: Path) -> Any:
    fault = os.environ.get(FAULT_ENV, "")
    if restart or not fault.startswith(("kill:", "hold:")):
        return batches
    kind, *numbers = fault.split(":")
    if kind == "hold":
        epoch, batch = (int(x) for x in numbers)
        return _Faulty(batches, epoch, batch, folder / f"held-{rank}")
    target, epoch, batch = (int(x) for x in numbers)
    return _Faulty(batches, epoch, batch) if target == rank else batches


if __name__ == "__main__":
    main(sys.argv[1:])
