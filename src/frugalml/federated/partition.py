"""Split one labelled dataset into parties, for experiments: IID, Dirichlet label skew, or by
a column (a branch, a bank). Real federations never do this: each party brings its own file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from frugalml.data.dataset import Dataset
from frugalml.errors import ConfigError

SCHEMES = "iid, dirichlet:ALPHA (e.g. dirichlet:1.0) or column:NAME"


def partition(
    data: Dataset, scheme: str, n_clients: int, *, seed: int = 0, column: Sequence[str] = ()
) -> list[np.ndarray]:
    """Row indices of each client. `column` holds the named column's values, row by row,
    for `column:NAME` (then the clients are its distinct values, `n_clients` unused)."""
    kind, _, arg = scheme.partition(":")
    rng = np.random.default_rng(seed)
    if kind == "iid":
        parts = np.array_split(rng.permutation(len(data)), n_clients)
    elif kind == "dirichlet":
        parts = _dirichlet(data.y, n_clients, _alpha(arg), rng)
    elif kind == "column":
        values = np.asarray(column, dtype=object)
        parts = [np.flatnonzero(values == v) for v in sorted(set(column))]
    else:
        raise ConfigError(f"--partition must be {SCHEMES}; got '{scheme}'")
    parts = [np.sort(p) for p in parts]
    small = [i for i, p in enumerate(parts) if len(p) < 4]
    if small:
        raise ConfigError(
            f"--partition {scheme} leaves {len(small)} of {len(parts)} clients with fewer than "
            "4 examples",
            ["use fewer --clients, a larger Dirichlet alpha, or more data"],
        )
    return parts


def _alpha(arg: str) -> float:
    try:
        alpha = float(arg)
    except ValueError:
        alpha = -1.0
    if not alpha > 0:
        raise ConfigError(f"dirichlet:ALPHA needs a positive number; got '{arg}'")
    return alpha


def _dirichlet(
    y: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Each class's rows are shared out in Dirichlet(alpha) proportions (the usual label-skew
    benchmark: small alpha, each client holds few classes)."""
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        shares = rng.dirichlet(np.full(n_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for client, chunk in enumerate(np.split(rows, cuts)):
            parts[client].extend(chunk.tolist())
    return [np.asarray(p, dtype=np.int64) for p in parts]


def write_client(path: Path, data: Dataset) -> Path:
    """One party's data as JSON (texts and label names): what a simulated client reads."""
    labels = [data.labels[i] for i in data.y]
    path.write_text(json.dumps({"texts": list(data.texts), "labels": labels}), encoding="utf-8")
    return path


def read_client(path: Path, labels: Sequence[str]) -> Dataset:
    """A party's data with the federation's label order (a party may lack some classes)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return Dataset.from_lists(raw["texts"], raw["labels"], label_names=labels, name=path.stem)


def local_split(data: Dataset, *, val_frac: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A party's own train and validation rows (random: a party may hold one example of a class)."""
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, round(len(data) * val_frac))
    return data.subset(np.sort(order[n_val:])), data.subset(np.sort(order[:n_val]))
