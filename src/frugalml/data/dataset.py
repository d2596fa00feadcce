"""The in-memory labeled dataset every strategy trains on."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast, get_args, runtime_checkable

import numpy as np

# What a dataset's inputs are; each rung declares the kinds it takes. Text now; tabular rows
# and user-item interactions come with the applications that need them.
InputKind = Literal["text", "tabular", "interactions"]


@runtime_checkable
class Records(Protocol):
    """The inputs of a dataset that is not text (tabular rows, user-item interactions): the
    application that reads them owns their type; the ladder only counts and names them."""

    def __len__(self) -> int: ...

    def fingerprint(self) -> str:
        """sha256 naming the exact records, as `Dataset.fingerprint` names texts."""
        ...


@dataclass(frozen=True)
class Dataset:
    """Texts with integer labels; `labels[i]` names class i (the label map kept with the model).

    `kind` says what the inputs are (the ladder skips rungs that cannot take them) and `task`
    what is predicted from them, so that tabular and ranking tasks can share the ladder.
    A tabular dataset has no texts: its inputs are `records` (typed rows,
    `data/tabular.Records`) with one label each; code that serves any kind reads `inputs`.
    """

    texts: tuple[str, ...]
    y: np.ndarray
    labels: tuple[str, ...]
    name: str = "data"
    task: str = "text-classification"
    kind: InputKind = "text"
    records: Records | None = None  # the inputs when `kind` is not text

    def __post_init__(self) -> None:
        if self.kind not in get_args(InputKind):
            raise ValueError(f"kind must be one of {get_args(InputKind)}, not {self.kind!r}")
        if (self.records is None) != (self.kind == "text"):
            raise ValueError(f"a {self.kind} dataset holds records exactly when it is not text")
        if self.records is None and len(self.texts) != len(self.y):
            raise ValueError(f"{len(self.texts)} texts but {len(self.y)} labels")
        if self.kind == "tabular" and len(self.inputs) != len(self.y):
            raise ValueError(f"{len(self.inputs)} records but {len(self.y)} labels")

    @property
    def inputs(self) -> Sequence[Any]:
        """What a model of this kind predicts from: the texts, or the records (a sequence of
        rows for tabular data)."""
        return self.texts if self.records is None else cast(Sequence[Any], self.records)

    @classmethod
    def of_records(
        cls, records: Records, *, kind: InputKind, task: str, name: str = "data"
    ) -> Dataset:
        """A dataset of non-text inputs (e.g. interactions for a recommendation task): rungs
        that take `kind` read `records`; the ladder, bundle and reports see only its size,
        fingerprint, task and kind."""
        return cls((), np.zeros(0, dtype=np.int64), (), name, task, kind, records)

    @classmethod
    def from_lists(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        label_names: Sequence[str] | None = None,
        name: str = "data",
    ) -> Dataset:
        """Build from parallel lists of strings; label order is sorted unless given."""
        names = tuple(label_names) if label_names is not None else tuple(sorted(set(labels)))
        index = {label: i for i, label in enumerate(names)}
        unknown = sorted(set(labels) - index.keys())
        if unknown:
            raise ValueError(f"labels not in the label map: {unknown[:5]}")
        y = np.fromiter((index[label] for label in labels), dtype=np.int64, count=len(labels))
        return cls(tuple(texts), y, names, name)

    def __len__(self) -> int:
        return len(self.texts) if self.records is None else len(self.records)

    def subset(self, idx: np.ndarray, name: str | None = None) -> Dataset:
        if self.records is None:
            texts = tuple(self.texts[i] for i in idx)
            return Dataset(texts, self.y[idx], self.labels, name or self.name, self.task)
        take = getattr(self.records, "take", None)  # tabular rows split like texts
        if self.kind != "tabular" or take is None:
            raise ValueError(f"a {self.kind} dataset is split by the application that reads it")
        return Dataset(
            (), self.y[idx], self.labels, name or self.name, self.task, self.kind, take(idx)
        )

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=len(self.labels))

    def fingerprint(self) -> str:
        """sha256 over texts, labels and label map (or the records): names the exact data a
        model saw."""
        if self.records is not None and self.kind != "tabular":
            return self.records.fingerprint()
        digest = hashlib.sha256()
        digest.update("\x1f".join(self.labels).encode())
        if self.records is not None:  # tabular: the rows and their labels
            digest.update(self.records.fingerprint().encode())
            digest.update(self.y.astype(np.int64).tobytes())
            return digest.hexdigest()
        for text, label in zip(self.texts, self.y, strict=True):
            digest.update(text.encode())
            digest.update(b"\x1e%d\x1d" % label)
        return digest.hexdigest()
