"""Stratified train/validation/test splits that keep every class in every split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from frugalml.data.dataset import Dataset


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


def stratified_split(
    data: Dataset,
    *,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 0,
) -> Splits:
    """Split per class so that even a 3-example class lands once in each split.

    Copies of a text (equal after normalizing case and spacing) land in one split: a text
    seen in training and scored again in test makes a memory test of the quality figures.
    scikit-learn's `train_test_split` refuses small classes and tiny test sets; splitting
    per class with a seeded generator does not.
    """
    groups = _groups(data)
    if test_frac <= 0:
        train, val = _split_two(data, groups, val_frac, seed)
        return Splits(train, val, data.subset(np.array([], dtype=np.int64), f"{data.name}:test"))
    (rest, rest_groups), (test, _) = _split_two_rows(data, groups, test_frac, seed)
    train, val = _split_two(
        data.subset(rest, data.name), rest_groups, val_frac / (1 - test_frac), seed + 1
    )
    return Splits(train, val, data.subset(test, f"{data.name}:test"))


def split_off_validation(data: Dataset, *, val_frac: float = 0.15, seed: int = 0) -> Splits:
    """For users who bring their own test set: train/validation from `data` only."""
    return stratified_split(data, val_frac=val_frac, test_frac=0.0, seed=seed)


def split_off_test(
    data: Dataset, *, test_frac: float = 0.15, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """For users who bring their own validation set: train and test from `data` only (the
    test set `stratified_split` would carve, copies of a text on one side)."""
    if test_frac <= 0:
        return data, data.subset(np.array([], dtype=np.int64), f"{data.name}:test")
    (keep, _), (held, _) = _split_two_rows(data, _groups(data), test_frac, seed)
    return data.subset(keep, f"{data.name}:train"), data.subset(held, f"{data.name}:test")


def _split_two(
    data: Dataset, groups: np.ndarray, frac: float, seed: int
) -> tuple[Dataset, Dataset]:
    (keep, _), (held, _) = _split_two_rows(data, groups, frac, seed)
    return data.subset(keep, f"{data.name}:train"), data.subset(held, f"{data.name}:val")


_Part = tuple[np.ndarray, np.ndarray]  # rows (ascending) and their duplicate groups


def _split_two_rows(
    data: Dataset, groups: np.ndarray, frac: float, seed: int
) -> tuple[_Part, _Part]:
    """Hold out about `frac` of each class, whole groups of copies at a time.

    A group goes by the class of its first row. Without copies every group is one row and
    this is the per-row shuffle it replaces, so splits of duplicate-free data are unchanged.
    """
    rng = np.random.default_rng(seed)
    ids, first, sizes = np.unique(groups, return_index=True, return_counts=True)
    group_class = data.y[first]
    held_group = np.zeros(len(ids), dtype=bool)
    by_class = np.argsort(group_class, kind="stable")  # groups of a class, by first appearance
    bounds = np.searchsorted(group_class[by_class], np.arange(len(data.labels) + 1))
    for cls in range(len(data.labels)):
        members = by_class[bounds[cls] : bounds[cls + 1]]
        if len(members) == 0:
            continue
        rng.shuffle(members)
        n = int(sizes[members].sum())
        want = min(max(1, round(frac * n)), n - 1)
        k = int(np.searchsorted(np.cumsum(sizes[members]), want)) + 1  # fewest groups >= want
        held_group[members[: min(k, len(members) - 1)]] = True
    held_row = held_group[np.searchsorted(ids, groups)]
    keep, held = np.flatnonzero(~held_row), np.flatnonzero(held_row)
    return (keep, groups[keep]), (held, groups[held])


def normalized(text: str) -> str:
    """Case and spacing do not make another text."""
    low = text.lower()
    # most texts are already normal: spot them without splitting into words (twice as fast)
    if low.isascii() and low.isprintable() and "  " not in low and low[:1] != " " != low[-1:]:
        return low
    return " ".join(low.split())


def _groups(data: Dataset) -> np.ndarray:
    """Duplicate groups of texts, or of whole records for tabular data."""
    if data.records is None:
        return duplicate_groups(data.texts)
    import pandas as pd

    from frugalml.data.tabular import rows_of

    return pd.factorize(rows_of(data).row_hashes())[0].astype(np.int64)


def duplicate_groups(texts: Sequence[str]) -> np.ndarray:
    """Group id of each text, numbered 0, 1, ... in order of first appearance; texts equal
    after `normalized` share one. Only a 64-bit hash of each is kept (8 bytes a row): two
    different texts collide with odds near 1e-8 at a million rows, which merely keeps them
    in one split."""
    import pandas as pd  # here: splitting a Dataset is common, grouping duplicates is not

    hashes = np.fromiter((hash(normalized(t)) for t in texts), dtype=np.int64, count=len(texts))
    return pd.factorize(hashes)[0].astype(np.int64)  # codes come in order of first appearance
