"""The Python API: `fit()` is what the CLI's `fit` command calls, with the same options."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalml import bundle as bundles
from frugalml.config import Budget, SpeedConfig, SplitConfig
from frugalml.costs import Prices
from frugalml.data import Dataset, read_table, stratified_split, to_dataset
from frugalml.data.split import Splits, split_off_validation
from frugalml.errors import ConfigError, OutputExistsError
from frugalml.report import write_reports
from frugalml.search import METRICS, LadderResult, Progress, publish, run_ladder
from frugalml.strategies import get_strategy, strategy_names

RUN_MARKER = ".frugalml-run"
DEFAULT_STRATEGIES = ("tfidf", "frozen_probe")


@dataclass
class FitResult:
    """What `fit` produced: the ladder's candidates, the chosen bundle, and where it all lives."""

    run_dir: Path
    ladder: LadderResult
    bundle: bundles.Bundle
    report_json: Path
    report_md: Path
    notes: list[str] = field(default_factory=list)


def fit(
    data: str | Path | Dataset,
    *,
    out: str | Path,
    text_col: str | None = None,
    label_col: str | None = None,
    test: str | Path | Dataset | None = None,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    metric: str = "macro_f1",
    target: float | None = None,
    budget: Budget | None = None,
    split: SplitConfig | None = None,
    drop_invalid: bool = False,
    delimiter: str | None = None,
    force: bool = False,
    prices: Prices | None = None,
    speed: SpeedConfig | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Load and validate data, climb the ladder, publish the chosen bundle and the report."""
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}; got '{metric}'")
    for name in strategies:
        get_strategy(name)  # unknown names fail before any work, with a suggestion
    split = split or SplitConfig()
    notes: list[str] = []
    splits = _splits(data, test, text_col, label_col, split, drop_invalid, delimiter, notes)
    run_dir = prepare_run_dir(Path(out), force=force)
    ladder = run_ladder(
        splits,
        list(strategies),
        run_dir,
        budget=budget,
        metric=metric,
        target=target,
        prices=prices,
        speed=speed,
        options=options,
        progress=progress,
    )
    bundle_dir = publish(ladder.chosen, run_dir)
    header = {
        "data": str(data if not isinstance(data, Dataset) else data.name),
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        "n_classes": len(splits.train.labels),
        "seed": split.seed,
        "target": target,
        "strategies": list(strategies),
        "bundle": str(bundle_dir),
        "notes": notes,
    }
    json_path, md_path = write_reports(run_dir, ladder, metric=metric, header=header)
    return FitResult(run_dir, ladder, bundles.load(bundle_dir), json_path, md_path, notes)


def load_dataset(
    source: str | Path | Dataset,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    drop_invalid: bool = False,
    delimiter: str | None = None,
    min_per_class: int = 3,
    notes: list[str] | None = None,
) -> Dataset:
    """Read and validate a source (or pass a Dataset through); notes collect warnings."""
    if isinstance(source, Dataset):
        return source
    table = read_table(source, delimiter=delimiter)
    validated = to_dataset(
        table,
        text_col=text_col,
        label_col=label_col,
        drop_invalid=drop_invalid,
        min_per_class=min_per_class,
    )
    if notes is not None:
        notes.extend(table.notes + validated.notes)
    return validated.dataset


def _splits(
    data: str | Path | Dataset,
    test: str | Path | Dataset | None,
    text_col: str | None,
    label_col: str | None,
    split: SplitConfig,
    drop_invalid: bool,
    delimiter: str | None,
    notes: list[str],
) -> Splits:
    kwargs: dict[str, Any] = {
        "text_col": text_col,
        "label_col": label_col,
        "drop_invalid": drop_invalid,
        "delimiter": delimiter,
        "notes": notes,
    }
    if test is None:
        dataset = load_dataset(data, **kwargs)
        return stratified_split(
            dataset, val_frac=split.val_frac, test_frac=split.test_frac, seed=split.seed
        )
    dataset = load_dataset(data, min_per_class=2, **kwargs)
    held_out = load_dataset(test, min_per_class=1, **kwargs)
    unknown = sorted(set(held_out.labels) - set(dataset.labels))
    if unknown:
        raise ConfigError(
            f"the test set has classes the training data lacks: {unknown[:5]}",
            ["remove them from the test set or add training examples"],
        )
    mapped = Dataset.from_lists(
        held_out.texts,
        [held_out.labels[i] for i in held_out.y],
        label_names=dataset.labels,
        name=held_out.name,
    )
    parts = split_off_validation(dataset, val_frac=split.val_frac, seed=split.seed)
    return Splits(parts.train, parts.val, mapped)


def prepare_run_dir(path: Path, *, force: bool) -> Path:
    """Create a fresh run folder; with `force`, replace only a folder frugalml itself made."""
    if path.exists() and (path.is_file() or any(path.iterdir())):
        if not force:
            raise OutputExistsError(
                f"{path} already exists and is not empty",
                ["choose another --out, or pass --force to replace it"],
            )
        if not (path / RUN_MARKER).exists():
            raise OutputExistsError(
                f"{path} is not a frugalml run folder, so --force will not delete it",
                ["choose another --out; frugalml only replaces folders it created"],
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / RUN_MARKER).write_text("This folder was written by frugalml fit.\n")
    return path


def available_strategies() -> list[str]:
    return strategy_names()
