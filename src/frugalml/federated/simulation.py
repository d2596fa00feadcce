"""`frugalml federate simulate`: split one labelled file into parties and federate them with
Flower's simulation runtime (Ray), on this machine, into a run folder like `fit`'s."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from frugalml.data.dataset import Dataset
from frugalml.data.split import Splits, stratified_split
from frugalml.errors import ConfigError, MissingExtraError, installed
from frugalml.federated.partition import partition, write_client
from frugalml.federated.settings import FederationSettings, Privacy, SecureAggregation
from frugalml.ladder.run_dir import prepare_run_dir


def simulate(
    data: str | Path | Splits,
    *,
    out: str | Path,
    clients: int = 5,
    partition_by: str = "dirichlet:1.0",
    rung: str = "lora",
    rounds: int = 5,
    strategy: str = "fedavg",
    local_epochs: int = 1,
    options: dict[str, Any] | None = None,
    min_clients: int | None = None,
    privacy: Privacy | None = None,
    secagg: SecureAggregation | None = None,
    attacks: dict[int, str] | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    seed: int = 0,
    force: bool = False,
    workers: int | None = None,
    **more: Any,
) -> dict[str, Any]:
    """Split `data` (train/val/test as `fit` does, unless given as `Splits`; the train part
    among `clients` by `partition_by`), run `rounds` of Flower's `strategy`; returns the
    run's report."""
    from frugalml.federated.task import rung_config

    rung_config(rung, options or {})  # a bad rung or option fails before any work
    if isinstance(data, Splits):
        splits, column = data, []
    else:
        from frugalml.data import read_table, to_dataset

        dataset = to_dataset(read_table(data), text_col=text_col, label_col=label_col).dataset
        splits = stratified_split(dataset, seed=seed)
        column = _column(data, partition_by, splits.train, text_col)
    parts = partition(splits.train, partition_by, clients, seed=seed, column=column)
    if secagg is not None and secagg.max_weight is None:  # weights n / largest <= 1
        secagg = secagg.model_copy(update={"max_weight": max(len(rows) for rows in parts)})
    settings = FederationSettings(
        rung=rung,
        options=options or {},
        labels=splits.train.labels,
        rounds=rounds,
        local_epochs=local_epochs,
        strategy=strategy,
        clients=len(parts),
        min_clients=min_clients or len(parts),
        privacy=privacy,
        secagg=secagg,
        seed=seed,
        data_fingerprint=splits.train.fingerprint(),
        partition=partition_by,
        attacks=attacks or {},
        **more,
    )
    settings.check_solver()
    _require_flower()  # after the arguments are checked: those errors need no Ray
    run_dir = _fresh_run_dir(Path(out), force=force)
    (run_dir / "clients").mkdir()
    (run_dir / "central").mkdir()
    for i, rows in enumerate(parts):
        write_client(run_dir / "clients" / f"client-{i}.json", splits.train.subset(rows))
    write_client(run_dir / "central" / "val.json", splits.val)
    write_client(run_dir / "central" / "test.json", splits.test)
    run(settings, run_dir, workers=workers)
    return dict(json.loads((run_dir / "report.json").read_text(encoding="utf-8")))


def run(settings: FederationSettings, run_dir: Path, *, workers: int | None = None) -> None:
    """Flower's simulation runtime: `workers` Ray actors (default: the CPUs) serve the
    clients in turn, one thread each; the ServerApp runs here and writes `run_dir`."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # a Ray FutureWarning
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.simulation import run_simulation

    from frugalml.federated.client_app import make_client_app
    from frugalml.federated.server_app import make_server_app

    cpus = workers or min(settings.clients, os.cpu_count() or 1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(
        server_app=make_server_app(settings, run_dir),
        client_app=make_client_app(run_dir / "clients", dict(settings.attacks)),
        num_supernodes=settings.clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": True},
        },
    )
    if not (run_dir / "report.json").exists():
        from frugalml.federated.server_app import FederationError

        raise FederationError(
            "the federated run ended without writing its report",
            ["see the log above for the ServerApp's error"],
        )


def prepare_central(
    out: Path,
    *,
    val: Path | None,
    test: Path | None,
    labels: str | None,
    force: bool = False,
    resume: bool = False,
) -> tuple[Path, tuple[str, ...]]:
    """A deployed server's run folder holding its own validation and test sets (optional),
    and the class names: `labels` (comma-separated) or the validation file's. `resume`: the
    folder exists and keeps its sets; without `labels` or `val`, the names it was run with."""
    from frugalml.data import read_table, to_dataset

    if resume and labels is None and val is None:
        return out, _saved_labels(out)
    if labels is None and val is None:
        raise ConfigError("the server needs the class names", ["pass --labels or --val"])
    given = {
        name: to_dataset(read_table(path), min_per_class=1).dataset
        for name, path in (("val", val), ("test", test))
        if path is not None
    }
    names = tuple(x.strip() for x in labels.split(",")) if labels else given["val"].labels
    if resume:
        return out, names
    run_dir = _fresh_run_dir(out, force=force)
    (run_dir / "central").mkdir()
    for name, data in given.items():
        names_of = [data.labels[i] for i in data.y]
        unknown = sorted(set(names_of) - set(names))
        if unknown:
            raise ConfigError(f"--{name} has classes not in --labels: {', '.join(unknown[:5])}")
        write_client(
            run_dir / "central" / f"{name}.json",
            Dataset.from_lists(data.texts, names_of, label_names=names),
        )
    return run_dir, names


def _saved_labels(run_dir: Path) -> tuple[str, ...]:
    """The class names a stopped run saved with its last round."""
    from frugalml.federated.checkpoint import read_index

    return tuple(read_index(run_dir)["settings"]["labels"])


def _column(data: str | Path, scheme: str, train: Any, text_col: str | None) -> list[str]:
    """For `column:NAME`: the named column's value of each training row (found by its text)."""
    if not scheme.startswith("column:"):
        return []
    from frugalml.data import read_table, to_dataset

    name = scheme.split(":", 1)[1]
    table = read_table(data)
    if name not in table.frame.columns:
        columns = ", ".join(map(str, table.frame.columns))
        raise ConfigError(f"--partition {scheme}: no column '{name}'", [f"columns: {columns}"])
    texts = table.frame[to_dataset(table, text_col=text_col).text_col].astype(str)
    by_text = dict(zip(texts, table.frame[name].astype(str), strict=True))
    return [by_text[t] for t in train.texts]


MARKER = ".frugalml-federated"


def _fresh_run_dir(path: Path, *, force: bool) -> Path:
    """A new, empty run folder; `force` replaces only one a federated run made."""
    return prepare_run_dir(
        path, force=force, marker=MARKER, kind="federated run folder", writer="frugalml federate"
    )


def _require_flower() -> None:
    if not installed("flwr", "ray", "peft"):
        raise MissingExtraError("federated learning", "federated")
