"""Stratified train/validation/test splits that keep every class in every split."""

from __future__ import annotations

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

    scikit-learn's `train_test_split` refuses small classes and tiny test sets; splitting
    per class with a seeded generator does not.
    """
    if test_frac <= 0:
        train, val = _split_two(data, val_frac, seed)
        return Splits(train, val, data.subset(np.array([], dtype=np.int64), f"{data.name}:test"))
    rest, test = _split_two(data, test_frac, seed, name="test")
    train, val = _split_two(rest, val_frac / (1 - test_frac), seed + 1, base=data.name)
    return Splits(train, val, test)


def split_off_validation(data: Dataset, *, val_frac: float = 0.15, seed: int = 0) -> Splits:
    """For users who bring their own test set: train/validation from `data` only."""
    return stratified_split(data, val_frac=val_frac, test_frac=0.0, seed=seed)


def _split_two(
    data: Dataset,
    frac: float,
    seed: int,
    name: str = "val",
    base: str | None = None,
) -> tuple[Dataset, Dataset]:
    base = base or data.name  # so that train is 'name:train', not 'name:train:train'
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for cls in range(len(data.labels)):
        idx = np.flatnonzero(data.y == cls)
        if len(idx) == 0:
            continue
        rng.shuffle(idx)
        n_held = min(max(1, round(frac * len(idx))), len(idx) - 1)
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    keep_idx, held_idx = np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
    return (data.subset(keep_idx, f"{base}:train"), data.subset(held_idx, f"{base}:{name}"))
