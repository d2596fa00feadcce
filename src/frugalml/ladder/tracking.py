"""Logging a finished fit to MLflow: a parent run for the ladder, a nested child run per rung.

Everything is read back from the run folder (run.json, report.json, curves, bundle), so MLflow
holds the report's own numbers, and a run folder can be logged again later with `log_run`.
Only an `MlflowClient` bound to the given URI is used: no global tracking URI, active run or
environment variable is set, so nothing leaks into the caller's own MLflow use.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from frugalml.config import RunSettings, read_run_settings
from frugalml.errors import ConfigError, FrugalError, MissingExtraError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

# `--mlflow` alone: a SQLite store in the current folder, artifacts in a folder beside it.
# A per-run database would scatter runs; one store per project folder lets runs be compared.
DEFAULT_URI = "sqlite:///mlruns.db"
ARTIFACTS = "mlartifacts"
EXPERIMENT = "frugalml"
REPORTS = ("report.json", "report.md", "report.html", "frontier.png", "run.json")
_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
_MAX_PARAM = 6000  # MLflow's limit on the length of a parameter value
_BATCH = 100  # MLflow's limit on parameters (and tags) per log_batch call
_CHECK_HINT = "nothing was trained yet; check the URI, and that the MLflow server is running"


def default_uri() -> str:
    """MLflow's own convention first ($MLFLOW_TRACKING_URI), else SQLite in the current folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def check(uri: str) -> None:
    """Fail before any training when logging to `uri` cannot work: a missing extra, or a store
    MLflow refuses (a plain folder, unless MLFLOW_ALLOW_FILE_STORE=true) or cannot reach."""
    _require_extra(uri)
    with _quiet_mlflow(), _user_errors(f"cannot log to MLflow at {uri}", _CHECK_HINT):
        _client(uri).search_experiments(max_results=1)


def log_run(run_dir: str | Path, uri: str, *, experiment: str | None = None) -> str:
    """Log a finished run folder to the MLflow store at `uri`; return the parent run's id.

    The experiment is `experiment`, else $MLFLOW_EXPERIMENT_NAME, else 'frugalml'.
    """
    folder = Path(run_dir)
    report = _read_json(folder / "report.json")
    _read_json(folder / "run.json")  # a finished run has both; the message says which is missing
    settings = read_run_settings(folder / "run.json")
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    _require_extra(uri)
    hint = (
        "the run folder is complete; log it again with "
        f"frugalml.ladder.tracking.log_run({str(folder)!r}, URI)"
    )
    with _quiet_mlflow(), _user_errors(f"logging {folder} to MLflow at {uri} failed", hint):
        client = _client(uri)
        return _log_ladder(client, _experiment_id(client, uri, name), folder, report, settings)


def _require_extra(uri: str) -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise MissingExtraError("Logging to MLflow", "mlflow") from None
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme in _DATABASES:
        try:
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError:
            raise MissingExtraError(f"An MLflow {scheme} store", "mlflow") from None
    if scheme == "sqlite" and not _sqlite_path(uri).parent.is_dir():
        raise ConfigError(
            f"the MLflow store {uri} cannot be created: "
            f"folder {_sqlite_path(uri).parent} does not exist",
            ["create the folder, or give another --mlflow-uri"],
        )


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _log_ladder(
    client: MlflowClient,
    experiment_id: str,
    folder: Path,
    report: dict[str, Any],
    settings: RunSettings,
) -> str:
    """The parent run: settings as parameters, the chosen rung's metrics, reports and bundle."""
    candidates = report["candidates"]
    chosen = next(c for c in candidates if c["strategy"] == report["chosen"])
    run = client.create_run(
        experiment_id, run_name=folder.resolve().name, tags=_ladder_tags(folder, report)
    )
    parent = str(run.info.run_id)
    try:
        for candidate in candidates:
            _log_rung(client, experiment_id, parent, folder, candidate, report["chosen"])
        metrics = {**_rung_metrics(chosen), **_ladder_totals(candidates)}
        _log_batch(client, parent, _ladder_params(settings, report), metrics)
        for file in REPORTS:
            if (folder / file).exists():
                client.log_artifact(parent, str(folder / file))
        client.log_artifacts(parent, str(folder / "bundle"), artifact_path="bundle")
    except BaseException:
        client.set_terminated(parent, status="FAILED")
        raise
    client.set_terminated(parent)
    return parent


def _log_rung(
    client: MlflowClient,
    experiment_id: str,
    parent: str,
    folder: Path,
    candidate: dict[str, Any],
    chosen: str,
) -> None:
    """A child run: the rung's quality, cost card, speed, forecast and training curve."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    name = candidate["strategy"]
    cost = candidate["cost"]
    tags = {
        MLFLOW_PARENT_RUN_ID: parent,
        "frugalml.strategy": name,
        "frugalml.chosen": str(name == chosen).lower(),
        "frugalml.energy_source": cost["energy_source"],
        "frugalml.price_basis": cost["price_basis"],
        "frugalml.stopped": candidate.get("stopped") or "",
        "frugalml.forecast_basis": (candidate.get("forecast") or {}).get("basis", ""),
    }
    run = client.create_run(
        experiment_id, run_name=name, tags={k: v for k, v in tags.items() if v}
    ).info.run_id
    params = _flatten(candidate["config"])
    curve = _curve(folder / "curves" / name / "scalars.jsonl")
    _log_batch(client, run, params, _rung_metrics(candidate), curve)
    manifest = folder / "candidates" / name / "manifest.json"
    if manifest.exists():
        client.log_artifact(run, str(manifest))
    client.set_terminated(run)


def _rung_metrics(candidate: dict[str, Any]) -> dict[str, float]:
    """Names group in MLflow's UI by prefix: val/, test/, cost/, speed/, forecast/."""
    metrics: dict[str, float] = {}
    for split in ("val", "test"):
        quality = candidate.get(split)
        if not quality:
            continue
        metrics[f"{split}/n"] = quality["n"]
        for name in [key for key in quality if f"{key}_ci" in quality]:  # every metric scored
            low, high = quality[f"{name}_ci"]
            metrics[f"{split}/{name}"] = quality[name]
            metrics[f"{split}/{name}_ci_low"], metrics[f"{split}/{name}_ci_high"] = low, high
    if candidate["val_ece"] is not None:
        metrics["val/ece"] = candidate["val_ece"]
    cost = candidate["cost"]
    metrics.update(_numbers("cost", {**cost, **(cost.get("extra") or {})}))
    metrics.update(_numbers("speed", candidate["speed"]))
    metrics.update(_numbers("forecast", candidate.get("forecast") or {}))
    if candidate.get("forecast_ratio") is not None:
        metrics["forecast/ratio"] = candidate["forecast_ratio"]  # actual / forecast wall time
    return metrics


def _ladder_totals(candidates: list[dict[str, Any]]) -> dict[str, float]:
    """What training every rung cost together: the price of the search, not of the model."""
    keys = ("wall_s", "cpu_s", "energy_kwh", "usd")
    return {f"ladder/{k}": sum(float(c["cost"][k]) for c in candidates) for k in keys}


def _ladder_params(settings: RunSettings, report: dict[str, Any]) -> dict[str, Any]:
    """The run's settings, named as on the command line; unset ones are left out."""
    backbones = {c["config"]["backbone"] for c in report["candidates"] if "backbone" in c["config"]}
    params = {
        "data": settings.data or report.get("data"),
        "test": settings.test,
        "val": settings.val,
        "strategies": ",".join(settings.strategies),
        "metric": settings.metric,
        "target": settings.target,
        "strict": settings.strict if settings.target is not None else None,
        "seed": settings.split.seed,
        "val_frac": settings.split.val_frac,
        "test_frac": settings.split.test_frac,
        "backbone": ",".join(sorted(backbones)),
        "data_fingerprint": settings.fingerprint,
        **{k: report[k] for k in ("n_train", "n_val", "n_test", "n_classes")},
        **_flatten(settings.budget.model_dump(), "budget"),
        **_flatten(settings.options, "options"),  # the --set overrides, by dotted path
    }
    return {k: v for k, v in params.items() if v is not None and v != ""}


def _ladder_tags(folder: Path, report: dict[str, Any]) -> dict[str, str]:
    from frugalml._version import __version__

    tags = {
        "mlflow.note.content": f"chosen: {report['chosen']} — {report['reason']}",
        "frugalml.chosen": report["chosen"],
        "frugalml.run_dir": str(folder.resolve()),
        "frugalml.version": __version__,
    }
    tags.update({f"frugalml.skipped.{k}": v for k, v in report.get("skipped", {}).items()})
    return tags


def _curve(path: Path) -> list[Metric]:
    """The JSON lines `training.write_scalars` wrote: one metric per scalar, stepped by epoch."""
    from mlflow.entities import Metric

    if not path.exists():
        return []
    now = int(time.time() * 1000)
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            step = int(row.pop("step"))
            points += [Metric(k, float(v), now, step) for k, v in _numbers("", row).items()]
    return points


def _log_batch(
    client: MlflowClient,
    run_id: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    steps: Sequence[Metric] = (),
) -> None:
    """One log_batch per MLflow's limits, instead of one request per value."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    param_list = [Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()]
    metric_list = [Metric(k, float(v), now, 0) for k, v in metrics.items()] + list(steps)
    for i in range(0, len(param_list), _BATCH):
        client.log_batch(run_id, params=param_list[i : i + _BATCH])
    for i in range(0, len(metric_list), 10 * _BATCH):
        client.log_batch(run_id, metrics=metric_list[i : i + 10 * _BATCH])


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=_artifact_location(uri))
    if found.lifecycle_stage == "deleted":
        raise ConfigError(
            f"the MLflow experiment '{name}' at {uri} is deleted",
            ["restore it in MLflow, or set MLFLOW_EXPERIMENT_NAME to another name"],
        )
    return str(found.experiment_id)


def _artifact_location(uri: str) -> str | None:
    """Beside a SQLite database; MLflow would otherwise use ./mlruns of whichever folder the
    process happens to run in. Other stores (folders, servers) decide for themselves."""
    if not uri.startswith("sqlite:///"):
        return None
    return (_sqlite_path(uri).parent.resolve() / ARTIFACTS).as_uri()


def _sqlite_path(uri: str) -> Path:
    return Path(unquote(uri[len("sqlite:///") :]))


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'full': {'train': {'epochs': 2}}} -> {'full.train.epochs': 2}, the --set paths."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def _numbers(prefix: str, values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries (not bools, not None) as metrics named prefix/key."""
    return {
        f"{prefix}/{k}" if prefix else k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(
            f"{path.parent} is not a finished frugalml run (no {path.name})",
            ["pass the --out folder of a fit that completed"],
        )
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@contextmanager
def _user_errors(summary: str, hint: str) -> Iterator[None]:
    """MLflow's own errors (a server not reached, a store refused) are the user's to fix."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        raise FrugalError(f"{summary}: {error.message}", [hint]) from error


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow logs INFO lines (creating tables, migrations) that would break up the CLI's
    output; its warnings still show. The level is restored afterwards."""
    logger = logging.getLogger("mlflow")
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)
