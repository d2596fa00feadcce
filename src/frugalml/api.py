"""The Python API: `fit()` is what the CLI's `fit` command calls, with the same options."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalml import bundle as bundles
from frugalml.config import (
    DEFAULT_STRATEGIES,
    Budget,
    RunSettings,
    Scale,
    SpeedConfig,
    SplitConfig,
    build_settings,
    read_run_settings,
)
from frugalml.costs import Prices
from frugalml.data import Dataset, read_table, stratified_split, to_dataset
from frugalml.data.split import Splits, split_off_test, split_off_validation
from frugalml.errors import ConfigError, OutputExistsError
from frugalml.ladder import tracking
from frugalml.ladder.ownership import ownership_summary, parse_volume
from frugalml.ladder.report import write_reports
from frugalml.ladder.run import (
    Candidate,
    LadderResult,
    Progress,
    candidate_option,
    ladder_metric,
    publish,
    run_ladder,
)
from frugalml.ladder.run_dir import RUN_MARKER, prepare_run_dir, write_guarded
from frugalml.ladder.scale import release_followers
from frugalml.ship.compress import (
    STEPS,
    CompressResult,
    Step,
    chain_options,
    compress,
    compress_available,
)
from frugalml.strategies import get_strategy

RUN_SETTINGS = "run.json"  # a RunSettings, as JSON


@dataclass
class FitResult:
    """What `fit` produced: the ladder's candidates, the chosen bundle, and where it all lives."""

    run_dir: Path
    ladder: LadderResult
    bundle: bundles.Bundle
    report_json: Path
    report_md: Path
    report_html: Path
    notes: list[str] = field(default_factory=list)
    metric: str = "macro_f1"  # the metric the ladder chose by
    mlflow_run_id: str | None = None  # the parent run, when the fit was logged to MLflow


def fit(
    data: str | Path | Dataset,
    *,
    out: str | Path,
    text_col: str | None = None,
    label_col: str | None = None,
    test: str | Path | Dataset | None = None,
    val: str | Path | Dataset | None = None,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    metric: str = "macro_f1",
    target: float | None = None,
    strict: bool = True,
    budget: Budget | None = None,
    split: SplitConfig | None = None,
    drop_invalid: bool = False,
    delimiter: str | None = None,
    force: bool = False,
    prices: Prices | None = None,
    speed: SpeedConfig | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    mlflow: str | None = None,
    ship: str | None = None,
    max_drop: float = 1.0,
    scale: Scale | None = None,
    volume: float | str | None = None,
) -> FitResult:
    """Load and validate data, climb the ladder, publish the chosen bundle and the report.

    The options become one `RunSettings`, saved as RUN_DIR/run.json. With `resume`, `out` is a
    run folder a killed `fit` left: finished rungs are reused and an interrupted one continues
    from its checkpoint (use `resume_fit(out)` to reuse its settings too). With `mlflow` (a
    tracking URI), the finished run is logged there too. `metric` is any registered one the
    ladder can score (`frugalml.metrics.metric_names()`); a lower-is-better one (brier, log_loss)
    meets `target` at or below it. A rung meets `target` only when its validation score's
    whole 95% interval does (`strict=False`: the point estimate suffices): fewer stops on a
    lucky draw of a small validation set. `val` is validation data like what the model will
    see (then only a test set is split off `data`, or nothing when `test` is given too).
    `scale` trains torch rungs data-parallel under torchrun (processes, nodes, restarts).
    `volume` (predictions to serve, e.g. 1e6 or "2.4M/month") makes the choice and the
    shipping step minimise training + volume * serving cost; `ship` then defaults to "auto"
    (the accepted compression step cheapest to own), else to "int8".
    """
    volume = None if volume is None else parse_volume(volume)
    ship = ship or ("auto" if volume is not None else "int8")
    given = {"budget": budget, "split": split, "prices": prices, "speed": speed, "scale": scale}
    settings = build_settings(
        data=None if isinstance(data, Dataset) else str(data),
        test=None if test is None or isinstance(test, Dataset) else str(test),
        val=None if val is None or isinstance(val, Dataset) else str(val),
        text_col=text_col,
        label_col=label_col,
        strategies=tuple(strategies),
        metric=metric,
        target=target,
        strict=strict,
        drop_invalid=drop_invalid,
        delimiter=delimiter,
        options=options or {},
        ship=ship,
        max_drop=max_drop,
        volume=volume,
        **{name: value for name, value in given.items() if value is not None},
    )
    return _fit(
        settings,
        data,
        test,
        val,
        out=Path(out),
        force=force,
        resume=resume,
        progress=progress,
        mlflow=mlflow,
    )


def _fit(
    settings: RunSettings,
    data: str | Path | Dataset,
    test: str | Path | Dataset | None,
    val: str | Path | Dataset | None,
    *,
    out: Path,
    force: bool,
    resume: bool,
    progress: Progress | None,
    mlflow: str | None,
) -> FitResult:
    """`fit` once its options are one validated `RunSettings` (`resume_fit` starts here too)."""
    check_out(out, [s for s in (data, test, val) if not isinstance(s, Dataset | None)], resume)
    if mlflow is not None:
        tracking.check(mlflow)  # a missing extra or a bad URI fails now, not after the ladder
    metric = ladder_metric(settings.metric).name  # unknown names fail now, with the closest one
    settings = settings.model_copy(update={"metric": metric})
    if settings.ship not in ("none", "auto", *STEPS):
        raise ConfigError(
            f"--ship must be one of none, auto, {', '.join(STEPS)}; got '{settings.ship}'"
        )
    if settings.ship == "auto" and settings.volume is None:
        raise ConfigError(
            "--ship auto chooses the format cheapest to own, which depends on how many "
            "predictions it will serve",
            ["give --volume N (e.g. --volume 1e6), or name a step: --ship int8"],
        )
    for name in settings.strategies:
        get_strategy(name)  # unknown names fail before any work, with a suggestion
    notes: list[str] = []
    splits = _splits(data, test, settings, notes, val=val)
    settings = settings.model_copy(update={"fingerprint": splits.train.fingerprint()})
    run_dir = _open_run_dir(out, settings, force=force, resume=resume)
    try:
        ladder = run_ladder(
            splits,
            list(settings.strategies),
            run_dir,
            budget=settings.budget,
            metric=settings.metric,
            target=settings.target,
            prices=settings.prices,
            speed=settings.speed,
            options=settings.options,
            progress=progress,
            resume=resume,
            strict=settings.strict,
            scale=settings.scale,
            volume=settings.volume,
        )
    finally:
        release_followers(settings.scale)  # other nodes stop waiting for torch rungs
    bundle_dir, compression = _ship(ladder.chosen, run_dir, splits, settings, notes, progress)
    ownership = ownership_report(ladder, compression)
    header = {
        "data": str(data if not isinstance(data, Dataset) else data.name),
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        "test": settings.test,
        "val": settings.val,
        "n_classes": len(splits.train.labels),
        "seed": settings.split.seed,
        "target": settings.target,
        "strict": settings.strict,
        "strategies": list(settings.strategies),
        "bundle": str(bundle_dir),
        "compression": compression,
        "ownership": ownership,
        "notes": notes,
    }
    json_path, md_path, html_path = write_reports(
        run_dir, ladder, metric=settings.metric, header=header
    )
    result = FitResult(
        run_dir,
        ladder,
        bundles.load(bundle_dir),
        json_path,
        md_path,
        html_path,
        notes,
        settings.metric,
    )
    if mlflow is not None:
        result.mlflow_run_id = tracking.log_run(run_dir, mlflow)
    return result


def _ship(
    chosen: Candidate,
    run_dir: Path,
    splits: Splits,
    settings: RunSettings,
    notes: list[str],
    progress: Progress | None,
) -> tuple[Path, dict[str, Any] | None]:
    """The chosen candidate becomes RUN_DIR/bundle: compressed (accuracy-gated) when
    `settings.ship` asks for it, else as it is. A TF-IDF model's chain ends at ONNX (nothing to
    quantize), which serves it without scikit-learn."""
    ship = settings.ship
    if ship == "none":
        return publish(chosen, run_dir), None
    if not hasattr(get_strategy(chosen.strategy).predictor, "export_onnx"):
        notes.append(
            f"shipped uncompressed: a '{chosen.strategy}' model cannot be exported to ONNX "
            "(its predictor has no `export_onnx`), so --ship has nothing to compress"
        )
        return publish(chosen, run_dir), None
    if not compress_available(torch="torch" in get_strategy(chosen.strategy).needs):
        notes.append(f"shipped uncompressed: --ship {ship} needs the 'compress' extra")
        return publish(chosen, run_dir), None
    result = compress(
        chosen.bundle,
        splits.train,
        splits.val,
        run_dir / "bundle",
        to="distilled" if ship == "auto" else ship,
        max_drop=settings.max_drop,
        speed=settings.speed,
        prices=settings.prices,
        progress=progress,
        volume=settings.volume if ship == "auto" else None,
    )
    return result.bundle, result.to_dict()


def ownership_report(ladder: LadderResult, compression: dict[str, Any] | None) -> dict[str, Any]:
    """Cost of ownership for the report: every candidate as it was measured and every
    measured format of the chosen one (training + compression, then serving per prediction),
    at the table's volumes and the run's, with the break-even volumes."""
    prices = ladder.prices
    options = [candidate_option(c, prices) for c in ladder.candidates]
    chosen = ladder.chosen
    shipped, formats = chosen.strategy, [chosen.strategy]
    if compression is not None:
        steps = [Step.from_dict(s) for s in compression["steps"]]
        chain = chain_options(steps, chosen.strategy, chosen.cost.usd, chosen.cost.cpu_s, prices)
        exported = [o for s, o in chain if s.name != "source" and s.accepted]
        options += exported
        formats = [o.name for o in exported] or formats
        shipped = next(o.name for s, o in chain if s.name == compression["shipped"])
    # what could have shipped: the chosen rung's formats, and other rungs meeting the bar
    target, metric = ladder.target, ladder.metric
    meeting = [
        c.strategy
        for c in ladder.candidates
        if c is not chosen
        and target is not None
        and c.val.meets(metric, target, strict=ladder.strict)
    ]
    return ownership_summary(options, ladder.volume, shipped, [*formats, *meeting])


def compress_bundle(
    bundle: str | Path,
    *,
    out: str | Path,
    data: str | Path | Dataset | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    to: str = "int8",
    max_drop: float = 1.0,
    progress: Progress | None = None,
    volume: float | str | None = None,
    scale: Scale | None = None,
) -> CompressResult:
    """Compress a bundle, gated on validation data: `data` split as `fit` splits it, or, by
    default, the data of the run folder the bundle belongs to. `to="auto"` runs the whole
    chain and ships the accepted step cheapest to own at `volume` predictions. `scale`:
    distill data-parallel under torchrun (`Scale(nproc=N)`)."""
    predictions = None if volume is None else parse_volume(volume)
    if to == "auto" and predictions is None:
        raise ConfigError(
            "--to auto chooses the format cheapest to own, which depends on how many "
            "predictions it will serve",
            ["give --volume N (e.g. --volume 1e6), or name a step: --to int8"],
        )
    folder = Path(bundle)
    if (folder / "app.json").is_file():  # an application folder (serve/extensions.APP_FILE)
        raise ConfigError(
            f"{folder} is an application folder, not a bundle: its model was shipped, and its "
            "thresholds chosen on that model's outputs, when it was built",
            ["rebuild it with the step you want, e.g. `frugalml desk build ... --ship int8`"],
        )
    manifest = bundles.read_manifest(folder)
    if data is None:
        run_dir = next(
            (p for p in (folder.parent, folder.parent.parent) if (p / RUN_SETTINGS).exists()), None
        )
        if run_dir is None:
            raise ConfigError(
                f"{folder} is not inside a frugalml run folder, so its validation data is unknown",
                ["pass --data FILE (labeled data; its validation split gates each step)"],
            )
        settings = read_run_settings(run_dir / RUN_SETTINGS)
        if settings.data is None:
            raise ConfigError(f"{run_dir} was fitted on in-memory data; pass --data FILE")
        splits = _splits(settings.data, settings.test, settings, [], val=settings.val)
        if splits.train.fingerprint() != manifest.data_fingerprint:
            raise ConfigError(
                f"the data of {run_dir} changed since the bundle was trained",
                ["pass --data FILE with labeled data to gate on"],
            )
    else:
        settings = build_settings(text_col=text_col, label_col=label_col)
        splits = _splits(data, None, settings, [])
    if manifest.labels != splits.train.labels:
        raise ConfigError(
            f"the data's labels do not match the bundle's ({len(splits.train.labels)} vs "
            f"{len(manifest.labels)} classes)",
            ["pass the labeled data the model was trained on, or data with the same labels"],
        )
    return compress(
        folder,
        splits.train,
        splits.val,
        Path(out),
        to="distilled" if to == "auto" else to,
        max_drop=max_drop,
        speed=settings.speed,
        prices=settings.prices,
        progress=progress,
        volume=predictions if to == "auto" else None,
        scale=scale,
    )


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
    settings: RunSettings,
    notes: list[str],
    *,
    val: str | Path | Dataset | None = None,
) -> Splits:
    """Train, validation and test splits as `settings` says (columns, split, invalid rows):
    what the user brings (`test`, `val`) is used as it is, the rest is split off `data`."""
    if isinstance(data, Dataset) and data.records is not None:
        return _record_splits(data, test, val)
    split = settings.split
    kwargs: dict[str, Any] = {
        "text_col": settings.text_col,
        "label_col": settings.label_col,
        "drop_invalid": settings.drop_invalid,
        "delimiter": settings.delimiter,
        "notes": notes,
    }
    if test is None and val is None:
        dataset = load_dataset(data, **kwargs)
        return stratified_split(
            dataset, val_frac=split.val_frac, test_frac=split.test_frac, seed=split.seed
        )
    dataset = load_dataset(data, min_per_class=2, **kwargs)
    held_test = None if test is None else _held_out(test, "test", dataset, kwargs)
    if val is None:
        assert held_test is not None
        parts = split_off_validation(dataset, val_frac=split.val_frac, seed=split.seed)
        return Splits(parts.train, parts.val, held_test)
    held_val = _held_out(val, "validation", dataset, kwargs)
    if held_test is None:
        train, carved = split_off_test(dataset, test_frac=split.test_frac, seed=split.seed)
        return Splits(train, held_val, carved)
    return Splits(dataset, held_val, held_test)


def _record_splits(data: Dataset, test: object, val: object) -> Splits:
    """Records (interactions, rows) are split by the application that reads them, which
    knows what a fair split is (by time, by user): `fit` takes its three parts as they are."""
    if not (isinstance(val, Dataset) and isinstance(test, Dataset)):
        raise ConfigError(
            f"a {data.kind} dataset needs its validation and test splits given as datasets",
            [f"split it with the application that reads {data.kind}, then pass val= and test="],
        )
    for part in (val, test):
        if (part.kind, part.task) != (data.kind, data.task):
            raise ConfigError(
                f"the {part.name} split is {part.kind} for {part.task}; the training data is "
                f"{data.kind} for {data.task}"
            )
    return Splits(data, val, test)


def _held_out(
    source: str | Path | Dataset, what: str, train: Dataset, kwargs: dict[str, Any]
) -> Dataset:
    """A test or validation set the user brought, with the training data's label indices."""
    held_out = load_dataset(source, min_per_class=1, **kwargs)
    unknown = sorted(set(held_out.labels) - set(train.labels))
    if unknown:
        raise ConfigError(
            f"the {what} set has classes the training data lacks: {unknown[:5]}",
            [f"remove them from the {what} set or add training examples"],
        )
    if held_out.kind != "text":  # records keep their own label map; it must be the same
        if held_out.labels != train.labels:
            raise ConfigError(
                f"the {what} set's labels {held_out.labels} are not the training data's "
                f"{train.labels}",
                ["build both from one table, or with the same target and positive label"],
            )
        return held_out
    return Dataset.from_lists(
        held_out.texts,
        [held_out.labels[i] for i in held_out.y],
        label_names=train.labels,
        name=held_out.name,
    )


def resume_fit(
    run_dir: str | Path, *, progress: Progress | None = None, mlflow: str | None = None
) -> FitResult:
    """Finish a run a crash or kill interrupted, with the settings it was started with."""
    folder = Path(run_dir)
    settings_path = folder / RUN_SETTINGS
    if not settings_path.exists():
        raise ConfigError(
            f"{folder} is not a frugalml run folder that can be resumed (no {RUN_SETTINGS})",
            ["pass the --out folder of an earlier fit"],
        )
    settings = read_run_settings(settings_path)
    if settings.data is None:
        raise ConfigError(
            f"{folder} was fitted on an in-memory Dataset; call "
            "frugalml.fit(data, out=..., resume=True) with the same data"
        )
    return _fit(
        settings,
        settings.data,
        settings.test,
        settings.val,
        out=folder,
        force=False,
        resume=True,
        progress=progress,
        mlflow=mlflow,
    )


def check_out(out: Path, inputs: Sequence[str | Path], resume: bool) -> None:
    """Refuse a run folder that holds an input (replacing it would delete the data) and, for a
    new run, an `out` that is a symbolic link (dangling, or to a folder `--force` would empty)."""
    for source in inputs:
        if os.path.lexists(source) and _holds(out, Path(source)):
            raise OutputExistsError(
                f"{out} contains the input {source}",
                [
                    "choose an --out outside the data's folder: frugalml never deletes "
                    "or overwrites its input"
                ],
            )
    if not resume and out.is_symlink():
        raise OutputExistsError(
            f"{out} is a symbolic link (to {out.readlink()})",
            ["pass a real folder as --out: frugalml does not write a run through a link"],
        )


def _holds(folder: Path, item: Path) -> bool:
    """Whether `item` is `folder` or lies inside it, as written or with links resolved."""
    folders = {Path(os.path.normpath(folder.absolute())), folder.resolve()}
    items = {Path(os.path.normpath(item.absolute())), item.resolve()}
    return any(i == f or f in i.parents for f in folders for i in items)


def _open_run_dir(path: Path, settings: RunSettings, *, force: bool, resume: bool) -> Path:
    """A fresh run folder with its settings, or, to resume, the same folder and data."""
    if not resume:
        run_dir = prepare_run_dir(path, force=force)
        write_guarded(path, "write the run folder", lambda: settings.write(run_dir / RUN_SETTINGS))
        return run_dir
    if not (path / RUN_MARKER).exists() or not (path / RUN_SETTINGS).exists():
        raise ConfigError(f"{path} is not a frugalml run folder that can be resumed")
    before = read_run_settings(path / RUN_SETTINGS)
    if before.fingerprint != settings.fingerprint:
        raise ConfigError(
            f"cannot resume {path}: the training data changed since it started",
            ["start a new run with another --out"],
        )
    shutil.rmtree(path / "bundle", ignore_errors=True)  # published again at the end
    return path
