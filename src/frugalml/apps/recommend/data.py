"""Interactions in: read `user,item[,rating][,time]` and an item table, validate, split.

An `Interactions` is the records of a frugalml `Dataset` of kind "interactions": the events
of one split, the catalogue every split shares (items with their text), and, for validation
and test, what was known of the users before (`seen`), which a recommender folds in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from frugalml import Dataset
from frugalml.errors import ConfigError, DataError, plural

TASK = "recommendation"


@dataclass(frozen=True, eq=False)
class Catalogue:
    """Every item a recommender may rank: its id and the text it is known by."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.ids)}


@dataclass(frozen=True, eq=False)
class Interactions:
    """User-item events (implicit feedback: each one a positive), in time order per user."""

    users: np.ndarray  # int64 index into user_ids
    items: np.ndarray  # int64 index into the catalogue
    times: np.ndarray  # int64 (the input order when the data has no times)
    user_ids: tuple[str, ...]
    catalogue: Catalogue
    seen: Interactions | None = None  # what was known of the users before these events
    cold: np.ndarray | None = None  # bool per item: held out of training entirely

    def __len__(self) -> int:
        return len(self.users)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for array in (self.users, self.items, self.times):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        digest.update("\x1f".join(self.user_ids).encode())
        digest.update("\x1f".join(self.catalogue.ids).encode())
        digest.update("\x1f".join(self.catalogue.texts).encode())
        return digest.hexdigest()

    def select(self, mask: np.ndarray) -> Interactions:
        return replace(self, users=self.users[mask], items=self.items[mask], times=self.times[mask])

    def plus(self, other: Interactions) -> Interactions:
        """These events and `other`'s (same users and catalogue), in time order per user."""
        merged = replace(
            self,
            users=np.r_[self.users, other.users],
            items=np.r_[self.items, other.items],
            times=np.r_[self.times, other.times],
        )
        return merged.select(np.lexsort((merged.times, merged.users)))

    def dataset(self, name: str) -> Dataset:
        return Dataset.of_records(self, kind="interactions", task=TASK, name=name)


def interactions_of(data: Dataset) -> Interactions:
    """The interactions a recommendation rung was given, or an error saying what it got."""
    if not isinstance(data.records, Interactions):
        raise ConfigError(
            f"a recommendation rung takes interactions; '{data.name}' is {data.kind} data",
            ["read the data with frugalml.apps.recommend.read_interactions"],
        )
    return data.records


# -- reading ---------------------------------------------------------------------------
def read_interactions(
    events: Any,
    items: Any,
    *,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = None,
    time_col: str | None = None,
    text_cols: Sequence[str] = ("title",),
    item_key: str | None = None,
    threshold: float | None = None,
    drop_invalid: bool = False,
    notes: list[str] | None = None,
) -> Interactions:
    """Events (a file or a pandas DataFrame) and the item table, validated.

    With `threshold`, only events rated at or above it are positives (implicit feedback);
    otherwise every event is. Every problem is reported at once: missing columns, unknown
    items, repeated (user, item) pairs, users with one interaction; `drop_invalid` drops the
    rows at fault instead (noted in `notes`).
    """
    frame, table = _frame(events, "events"), _frame(items, "items")
    item_key = item_key or item_col
    problems = _missing_columns(frame, [user_col, item_col, rating_col, time_col], "events")
    problems += _missing_columns(table, [item_key, *text_cols], "the item table")
    if problems:
        raise DataError(f"the interactions have {plural(len(problems), 'problem')}:", problems)
    table = table.drop_duplicates(item_key, keep="first")
    catalogue = Catalogue(
        tuple(table[item_key].astype(str)),
        tuple(_item_text(table, text_cols)),
    )
    frame = frame.assign(
        _user=frame[user_col].astype(str),
        _item=frame[item_col].astype(str),
        _line=np.arange(len(frame)) + 2,  # the file's line: a header, then 1-based rows
    )
    if rating_col is not None and threshold is not None:
        kept = frame[rating_col] >= threshold
        if notes is not None:
            notes.append(f"{int((~kept).sum())} events rated below {threshold:g} left out")
        frame = frame[kept]
    frame, problems = _validated(frame, catalogue, drop_invalid, notes)
    if problems:
        raise DataError(
            f"the interactions have {plural(len(problems), 'problem')}:",
            [*problems, "fix them, or pass drop_invalid=True (--drop-invalid) to drop them"],
        )
    times = frame[time_col].to_numpy(np.int64) if time_col else frame["_line"].to_numpy(np.int64)
    users, user_ids = _codes(frame["_user"])
    index = catalogue.index()
    items = frame["_item"].map(index).to_numpy(np.int64)
    order = np.lexsort((times, users))
    return Interactions(users[order], items[order], times[order], user_ids, catalogue)


def _frame(source: Any, what: str) -> Any:
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"the {what} file {path} does not exist")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _missing_columns(frame: Any, columns: Sequence[str | None], what: str) -> list[str]:
    have = list(frame.columns)
    return [
        f"{what}: no column {c!r} (columns: {', '.join(map(str, have))})"
        for c in columns
        if c is not None and c not in have
    ]


def _item_text(table: Any, text_cols: Sequence[str]) -> list[str]:
    """Title, description, tags... joined: what content rungs embed."""
    parts = [table[c].fillna("").astype(str).str.replace("|", ", ") for c in text_cols]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + ". " + part
    return [text.strip(" .") for text in joined]


def _validated(
    frame: Any, catalogue: Catalogue, drop: bool, notes: list[str] | None
) -> tuple[Any, list[str]]:
    """Rows after dropping (with `drop`) what is wrong, and the problems otherwise."""
    checks = []
    known = frame["_item"].isin(set(catalogue.ids))
    checks.append((~known, "unknown item", "not in the item table"))
    repeated = frame.duplicated(["_user", "_item"], keep="last")
    checks.append((repeated & known, "repeated (user, item) pair", "an earlier copy of a pair"))
    problems, bad = [], np.zeros(len(frame), dtype=bool)
    for mask, what, why in checks:
        rows = frame[mask.to_numpy()]
        if len(rows):
            bad |= mask.to_numpy()
            example = rows.iloc[0]
            problems.append(
                f"{plural(len(rows), what)} ({why}; first at line {example['_line']}: user "
                f"{example['_user']!r}, item {example['_item']!r})"
            )
    counts = frame[~bad].groupby("_user")["_item"].transform("size")
    single = np.zeros(len(frame), dtype=bool)
    single[np.flatnonzero(~bad)[(counts == 1).to_numpy()]] = True
    if single.any():
        problems.append(
            f"{plural(int(single.sum()), 'user')} with one interaction (first at line "
            f"{frame['_line'].to_numpy()[single][0]}): nothing is left to learn their taste "
            "from once it is held out"
        )
        bad |= single
    if drop and problems:
        if notes is not None:
            notes.extend(f"dropped: {p}" for p in problems)
        return frame[~bad], []
    return frame, problems


def _codes(values: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    import pandas as pd

    codes, uniques = pd.factorize(values, sort=True)
    return np.asarray(codes, dtype=np.int64), tuple(str(u) for u in uniques)


# -- splitting -------------------------------------------------------------------------
SplitKind = Literal["leave_last_out", "random", "time"]


@dataclass(frozen=True)
class RecSplits:
    """Train, validation and test Datasets for `frugalml.fit`, and the cold-start test: the
    events of items held out of training entirely, scored apart."""

    train: Dataset
    val: Dataset
    test: Dataset
    cold: Dataset | None


def split(
    data: Interactions,
    *,
    how: SplitKind = "leave_last_out",
    test_frac: float = 0.25,
    val_frac: float = 0.1,
    cold_frac: float = 0.0,
    seed: int = 0,
) -> RecSplits:
    """Split events the way a recommender meets them.

    `leave_last_out` (default): each user's last event is test, the one before validation.
    `random`: a random `test_frac` of each user's events is test, `val_frac` validation.
    `time`: one global cut; the last `test_frac` of time is test, the `val_frac` before it
    validation. With `cold_frac`, that share of items (with their text) is held out of
    training: their events form the cold-start test, and no other split holds them.
    """
    if not 0 <= cold_frac < 1 or not 0 < test_frac < 1 or not 0 <= val_frac < 1 - test_frac:
        raise ConfigError(
            "split fractions must satisfy 0 ≤ cold_frac < 1, 0 < test_frac < 1 and "
            f"0 ≤ val_frac < 1 - test_frac; got cold {cold_frac}, test {test_frac}, "
            f"val {val_frac}"
        )
    rng = np.random.default_rng(seed)
    cold = np.zeros(len(data.catalogue), dtype=bool)
    if cold_frac:
        present = np.unique(data.items)
        cold[rng.choice(present, round(cold_frac * len(present)), replace=False)] = True
    warm = data.select(~cold[data.items])
    part = _assign(warm, how, test_frac, val_frac, rng)
    train = replace(warm.select(part == 0), cold=cold)
    val = replace(warm.select(part == 1), seen=train, cold=cold)
    test = replace(warm.select(part == 2), seen=train.plus(val), cold=cold)
    cold_set = None
    if cold.any():
        cold_events = data.select(cold[data.items])
        cold_set = replace(cold_events, seen=test.seen, cold=cold).dataset("cold")
    return RecSplits(train.dataset("train"), val.dataset("validation"), test.dataset("test"),
                     cold_set)  # fmt: skip


def _assign(
    data: Interactions, how: SplitKind, test_frac: float, val_frac: float, rng: Any
) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (test) per event; events are in time order per user."""
    part = np.zeros(len(data), dtype=np.int8)
    if how == "time":
        cut_test, cut_val = np.quantile(data.times, [1 - test_frac, 1 - test_frac - val_frac])
        part[data.times > cut_val] = 1
        part[data.times > cut_test] = 2
        return part
    starts = np.flatnonzero(np.r_[True, data.users[1:] != data.users[:-1]])
    ends = np.r_[starts[1:], len(data)]
    for start, end in zip(starts, ends, strict=True):
        n = end - start
        if how == "leave_last_out":
            part[end - 1] = 2
            if n >= 3 and val_frac > 0:
                part[end - 2] = 1
        elif how == "random":
            order = start + rng.permutation(n)
            n_test = max(1, round(test_frac * n))
            n_val = round(val_frac * n) if n - n_test >= 2 else 0
            part[order[:n_test]] = 2
            part[order[n_test : n_test + n_val]] = 1
        else:
            raise ConfigError(f"split must be leave_last_out, random or time; got {how!r}")
    return part
