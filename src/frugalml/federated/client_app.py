"""The Flower `ClientApp`: a party trains the global trainable state on its own data for a
round and sends back only that state, with its example count and what the round cost it.

The data never leaves: a simulated client reads its partition (`client-<id>.json` in the
folder the simulation wrote), a deployed one the file named by its SuperNode's node config
(`--node-config 'data="bank.csv"'`). Which rung, settings and labels come from the server.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.federated.head_solve import confusion, loss_grad
from frugalml.federated.partition import local_split, read_client
from frugalml.federated.secure import secure_mod
from frugalml.federated.settings import global_round
from frugalml.federated.task import FineTuneJob, HeadJob, Job, State, build_job

_JOBS: OrderedDict[tuple[Any, ...], tuple[Job, int]] = OrderedDict()
_KEEP = 2  # jobs kept per process: a simulation worker serves several clients in turn
# Fault injection for tests, as a bank losing power: `die:R` makes a deployed client kill its
# whole process group (its `frugalml federate client`, SuperNode and ClientApp) when round R's
# message reaches it, so the round it dies in is known, whatever the machine's speed. A slow
# bank: `hold:R:PATH` makes it answer round R only once PATH exists (a test lets another
# client join late while round R is surely under way).
FAULT_VAR = "FRUGALML_FEDERATED_FAULT"


def make_client_app(
    partitions: Path | None = None, attacks: dict[int, str] | None = None, threads: int = 1
) -> ClientApp:
    """A ClientApp reading simulated partitions from `partitions` (None: the node config's
    `data` file); `attacks` makes some clients Byzantine (simulation only, for experiments)."""
    app = ClientApp(mods=[secure_mod])  # a server's --secagg rounds go through SecAgg+

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(threads)
        return local_round(msg, context, partitions, attacks or {})

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        torch.set_num_threads(threads)
        return head_query(msg, context, partitions)

    return app


def local_round(
    msg: Message, context: Context, partitions: Path | None, attacks: dict[int, str]
) -> Message:
    config: ConfigRecord = msg.content["config"]  # type: ignore[assignment]
    # a simulated party's index; a deployed one's SuperNode id, folded into a metric's int64
    party = int(context.node_config.get("partition-id", context.node_id % 2**31))
    attack = attacks.get(party) or str(context.node_config.get("attack", ""))
    rnd = global_round(config)
    _inject_fault(os.environ.get(FAULT_VAR, ""), rnd)
    arrays: ArrayRecord = msg.content["arrays"]  # type: ignore[assignment]
    start = arrays.to_torch_state_dict()
    seed = (int(config["seed"]) + 1000 * rnd + party) % 2**32  # type: ignore[arg-type]
    with CostMeter() as meter:
        job, n = _job(_data_path(context, partitions, party), config, attack)
        score, state = _train(job, start, config, meter, seed)
    if attack == "scale":  # model poisoning: the update reversed and amplified tenfold
        state = {k: start[k] - 10.0 * (v - start[k]) for k, v in state.items()}
    metrics = _metrics(meter, party, n, **{"local-val-f1": score})
    content = RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


def _inject_fault(fault: str, rnd: int) -> None:
    """Tests' faults (see FAULT_VAR), in the round they name."""
    if fault == f"die:{rnd}":
        os.killpg(os.getpgid(0), signal.SIGKILL)
    if fault.startswith(f"hold:{rnd}:"):
        release = Path(fault.split(":", 2)[2])
        pause = threading.Event()
        while not release.exists():
            pause.wait(0.25)


def _train(
    job: Job, start: State, config: ConfigRecord, meter: CostMeter, seed: int
) -> tuple[float, State]:
    """One local round from the global `start`: the whole trainable state, or in a head
    warm-up round (`--head-rounds`) the head alone."""
    epochs = int(config["local-epochs"])  # type: ignore[arg-type]
    mu = float(config.get("proximal-mu", 0.0))  # type: ignore[arg-type]
    if config.get("stage") != "head":
        job.load(start)
        return job.train_round(epochs, seed, meter, mu), job.state()
    if not isinstance(job, FineTuneJob):
        raise TypeError("a head warm-up needs a fine-tuning rung")  # settings refuse it
    job.load_head(start)
    return job.train_head_round(epochs, seed, meter, mu), job.head_state()


def head_query(msg: Message, context: Context, partitions: Path | None) -> Message:
    """The exact head solve's round (`--solver lbfgs`): the loss and gradient summed over
    this party's rows at the server's head, or its confusion matrix on its validation split."""
    config: ConfigRecord = msg.content["config"]  # type: ignore[assignment]
    party = int(context.node_config.get("partition-id", context.node_id % 2**31))
    arrays: ArrayRecord = msg.content["arrays"]  # type: ignore[assignment]
    theta = arrays.to_numpy_ndarrays()[0]
    with CostMeter() as meter:
        job, _ = _job(_data_path(context, partitions, party), config, "")
        if not isinstance(job, HeadJob):
            raise TypeError("the exact solve needs the frozen_probe rung")  # the server checks
        x, y = job.rows(str(config["rows"]))
        k = len(job.labels)
        if config["op"] == "loss-grad":
            loss, out = loss_grad(x, y, theta, k)
        else:
            loss, out = 0.0, confusion(x, y, theta, k)
    metrics = _metrics(meter, party, len(y), loss=loss)
    content = RecordDict(
        {"arrays": ArrayRecord(numpy_ndarrays=[out]), "metrics": MetricRecord(metrics)}
    )
    return Message(content=content, reply_to=msg)


def _metrics(
    meter: CostMeter, party: int, n: int, **more: float
) -> dict[str, int | float | list[int] | list[float]]:
    """What a reply reports besides its arrays: its weight, its party and what it cost."""
    card = meter.card
    return {
        "num-examples": n,
        "unit-weight": 1,  # DP: Flower's accounted aggregation needs equal client weights
        "client": party,
        "cpu-s": card.cpu_s,
        "wall-s": card.wall_s,
        "peak-rss-mb": card.peak_rss_mb,
        "energy-kwh": card.energy_kwh,
        "usd": card.usd,
        "flops": card.flops or 0.0,
        **more,
    }


def _data_path(context: Context, partitions: Path | None, party: int) -> Path:
    if partitions is not None:
        return partitions / f"client-{party}.json"
    return Path(str(context.node_config["data"]))


def _job(path: Path, config: ConfigRecord, attack: str) -> tuple[Job, int]:
    """The job for this client's data, built on its first round and kept for the next."""
    labels = tuple(str(x) for x in config["labels"])  # type: ignore[union-attr]
    options = json.loads(str(config["options"]))
    key = (str(path), str(config["rung"]), json.dumps(options, sort_keys=True), labels, attack)
    if key in _JOBS:
        _JOBS.move_to_end(key)
        return _JOBS[key]
    data = _read(path, labels)
    if attack == "flip":  # data poisoning: every label replaced by another class
        data = Dataset(data.texts, len(labels) - 1 - data.y, data.labels, data.name)
    train, val = local_split(data, seed=0)
    built = (build_job(str(config["rung"]), options, train, val), len(train))
    _JOBS[key] = built
    while len(_JOBS) > _KEEP:
        _JOBS.popitem(last=False)
    return built


def _read(path: Path, labels: tuple[str, ...]) -> Dataset:
    """A party's data: a simulation's JSON partition, or any file `load_dataset` reads."""
    if path.suffix == ".json":
        return read_client(path, labels)
    from frugalml.data import read_table, to_dataset

    data = to_dataset(read_table(path), min_per_class=1).dataset
    names = [data.labels[i] for i in data.y]
    return Dataset.from_lists(data.texts, names, label_names=labels, name=path.stem)


app = make_client_app()  # for `flwr run` / SuperNodes: data from the node config's `data`
