"""Data-parallel training under torchrun: how the launcher starts ranks, and what a rank does
besides running the one training loop.

The launcher runs `torchrun` as a child in its own process group and waits for it, so the
launcher's cost meter counts every rank's CPU-seconds (torchrun waits for its ranks, and we
wait for torchrun); a restart's killed ranks are counted the same way. A rank joins the group
(gloo on CPU, NCCL for CUDA tensors), takes its shard of each global batch, trains through
`DistributedDataParallel`, and reports its cost card to the others as a few numbers (no
pickles cross the wire: the job itself is JSON bytes broadcast from rank 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.config import Scale
from frugalml.costs import CostCard
from frugalml.training.loop import Batch, Bucketed, bucketed_batches

# How long a node waits for the others at a rendezvous before giving up: node 0 may still be
# climbing cheaper rungs when another node starts waiting for the first torch rung.
JOIN_TIMEOUT_S = 3600


def torchrun_command(scale: Scale, entry: Sequence[str], *, rdzv_id: str) -> list[str]:
    """The `torchrun` command line for `scale`; `entry` is what each rank runs (`-m module
    args`). One node: a private rendezvous on a free local port. Several: c10d at the
    given endpoint, which every node names with the same `rdzv_id`."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={scale.nproc}",
        f"--max-restarts={scale.max_restarts}",
    ]
    if scale.max_nodes == 1 and scale.rdzv_endpoint is None:
        command.append("--standalone")
    elif ":" not in scale.nnodes:  # a fixed set of nodes: global ranks follow node ranks
        host, port = str(scale.rdzv_endpoint).rsplit(":", 1)
        command += [
            f"--nnodes={scale.nnodes}",
            f"--node-rank={scale.node_rank}",
            f"--master-addr={host}",
            f"--master-port={port}",
            f"--rdzv-id={rdzv_id}",
            # node 0 hosts the store; the others wait for it while node 0 climbs cheaper rungs
            f"--rdzv-conf=timeout={JOIN_TIMEOUT_S}",
        ]
    else:  # elastic: c10d, ranks in order of arrival; node 0 hosts the store
        command += [
            f"--nnodes={scale.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={scale.rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}",
            f"--rdzv-conf=join_timeout={JOIN_TIMEOUT_S},read_timeout={JOIN_TIMEOUT_S},"
            f"is_host={'true' if scale.node_rank == 0 else 'false'}",
        ]
    return [*command, *entry]


def rank_environment(scale: Scale) -> dict[str, str]:
    """The ranks' environment: threads divided among local ranks (each torch process would
    otherwise start one per core), gloo on loopback for a job on 127.0.0.1."""
    env = dict(os.environ)
    threads = scale.threads or max(1, usable_cpus() // scale.nproc)
    env["OMP_NUM_THREADS"] = str(threads)
    endpoint = scale.rdzv_endpoint or "127.0.0.1:0"
    if endpoint.startswith(("127.", "localhost")) and sys.platform == "linux":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def launch(command: Sequence[str], env: dict[str, str], log_path: Path) -> int:
    """Run `command` in a new process group, its output into `log_path`; its exit code.

    Waiting is what puts the group's CPU time into this process's children's times. If we
    are interrupted, the whole group is stopped (SIGTERM, which torchrun passes to its ranks)
    and waited for, so no rank outlives its launcher.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            list(command), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return child.wait()
        except BaseException:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()
            raise


# -- inside a rank ---------------------------------------------------------------------------
def init_process_group(timeout: Any = None) -> Any:
    """Join the group torchrun describes in the environment: collectives on CPU tensors go
    through gloo, on CUDA tensors through NCCL (each rank on its local GPU). `timeout`
    (a timedelta) bounds each collective [default: torch's]."""
    import torch
    import torch.distributed as dist

    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    store = _attempt_store(dist, timeout)
    if store is None:
        dist.init_process_group(backend, timeout=timeout)
    else:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return dist


def _attempt_store(dist: Any, timeout: Any) -> Any:
    """torchrun's store (its agent's, shared by every attempt), under a prefix per attempt.

    torch reuses the agent's store when it restarts a group, and gloo's keys carry no attempt
    number: a restarted rank that reads a peer's address before the peer has written its new
    one gets the killed attempt's address and fails at init ("Connection refused"), as a
    late rank on a loaded machine does. None where torchrun gives each attempt its own store.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from datetime import timedelta

    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timeout or timedelta(minutes=30),
    )
    return dist.PrefixStore(f"attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def wrap(model: Any) -> Any:
    """`model` in `DistributedDataParallel` (on its device: the local GPU, or CPU).

    Buffers are not broadcast before each forward pass (DDP's default): an encoder's buffers
    (position ids) never change, and the broadcast was one more collective per batch."""
    import torch

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


@dataclass(frozen=True, eq=False)
class Sharded:
    """This rank's part of every global batch: the one-process batches of `batch_size *
    world` examples (the same order, seeded the same), cut into `world` parts.

    Gradients averaged over ranks are then those of the global batch, so N ranks at batch
    b give what one process gives at N·b. A last global batch with fewer examples than ranks
    is dropped (some rank would get none); one with fewer than `batch_size * world` is cut
    into parts that differ by at most one example.
    """

    whole: Bucketed
    rank: int
    world: int

    def __len__(self) -> int:
        full, rest = divmod(len(self.whole.lengths), self.whole.batch_size)
        return full + (1 if rest >= self.world else 0)

    def __call__(self, epoch: int) -> Iterator[Batch]:
        w = self.whole
        for idx in bucketed_batches(w.lengths, w.batch_size, w.seed + epoch):
            if len(idx) >= self.world:
                yield w.collate(np.array_split(idx, self.world)[self.rank])


def shard(batches: Any, rank: int, world: int) -> Sharded:
    """`Sharded` batches for a job whose batches are `Bucketed` at the per-rank size."""
    if not isinstance(batches, Bucketed):
        raise TypeError(f"data-parallel training shards Bucketed batches, not {type(batches)}")
    whole = Bucketed(batches.lengths, batches.batch_size * world, batches.seed, batches.collate)
    return Sharded(whole, rank, world)


def leader_rank(holds_job: bool) -> int:
    """The rank that holds the job (exactly one does), known to every rank."""
    import torch
    import torch.distributed as dist

    flag = torch.tensor([dist.get_rank() if holds_job else -1], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def broadcast_bytes(data: bytes | None, src: int = 0) -> bytes:
    """Rank `src`'s `data` on every rank (the others pass None)."""
    import torch
    import torch.distributed as dist

    size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
    dist.broadcast(size, src=src)
    buffer = torch.zeros(int(size.item()), dtype=torch.uint8)
    if data is not None:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    dist.broadcast(buffer, src=src)
    return bytes(buffer.numpy().tobytes())


_CARD_FIELDS = ("wall_s", "cpu_s", "peak_rss_mb", "energy_kwh", "usd", "flops", "device_s")


def gather_cards(card: CostCard, node: int) -> list[tuple[int, CostCard]]:
    """Every rank's (node rank, cost card), on every rank: sent as numbers, the labels of
    rank 0's card reused (ranks of one job share prices and energy source)."""
    import torch
    import torch.distributed as dist

    values = [float(getattr(card, f) or 0.0) for f in _CARD_FIELDS]
    mine = torch.tensor([float(node), *values], dtype=torch.float64)
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    cards = []
    for row in everyone:
        node_rank, *numbers = row.tolist()
        fields: dict[str, Any] = dict(zip(_CARD_FIELDS, numbers, strict=True))
        fields["flops"] = fields["flops"] or None  # 0 sent for "not measured"
        fields["device_s"] = fields["device_s"] or None
        cards.append(
            (
                int(node_rank),
                CostCard(
                    energy_source=card.energy_source,
                    price_basis=card.price_basis,
                    **fields,
                ),
            )
        )
    return cards
