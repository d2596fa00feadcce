"""MLflow logging: a real fit logged into a SQLite store in tmp_path, then read back.

MLflow's telemetry is switched off and every store is local, so nothing touches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import frugalml
from frugalml.api import FitResult
from frugalml.data import Dataset
from frugalml.errors import ConfigError, MissingExtraError
from frugalml.ladder import tracking
from tests.conftest import demo_dataset

COST_METRICS = ("cost/wall_s", "cost/cpu_s", "cost/peak_rss_mb", "cost/energy_kwh", "cost/usd")


@pytest.fixture(scope="module", autouse=True)
def _no_telemetry() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        yield


def small_dataset() -> Dataset:
    """6 classes x 15 examples, like the small_csv fixture, which a module fixture cannot use."""
    data = demo_dataset()
    counts = dict.fromkeys(range(6), 0)
    texts, labels = [], []
    for text, y in zip(data.texts, data.y, strict=True):
        if counts.get(int(y), 15) < 15:
            counts[int(y)] += 1
            texts.append(text)
            labels.append(data.labels[y])
    return Dataset.from_lists(texts, labels, name="small")


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path) -> tuple[FitResult, str]:
    """tfidf and a 2-epoch full fine-tune of the tiny BERT (which writes a training curve)."""
    pytest.importorskip("mlflow")
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    result = frugalml.fit(
        small_dataset(),
        out=folder / "run",
        strategies=["tfidf", "full"],
        options={"full": {"backbone": str(tiny_backbone), "train": {"epochs": 2}}},
        mlflow=uri,
    )
    return result, uri


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str = tracking.EXPERIMENT) -> dict[str, Any]:
    """Parent runs under '', children under their strategy."""
    c = client(uri)
    found = c.get_experiment_by_name(experiment)
    runs = c.search_runs([found.experiment_id])
    return {r.data.tags.get("frugalml.strategy", ""): r for r in runs}


def test_a_parent_run_per_ladder_and_a_child_run_per_rung(logged: tuple[FitResult, str]) -> None:
    result, uri = logged
    runs = runs_of(uri)
    assert set(runs) == {"", "tfidf", "full"}
    parent = runs[""]
    assert parent.info.run_id == result.mlflow_run_id
    assert parent.info.run_name == "run" and parent.info.status == "FINISHED"
    for name in ("tfidf", "full"):
        assert runs[name].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert runs[name].info.status == "FINISHED"
    assert parent.data.tags["frugalml.chosen"] == result.ladder.chosen.strategy


def test_settings_are_parameters(logged: tuple[FitResult, str], tiny_backbone: Path) -> None:
    result, uri = logged
    params = runs_of(uri)[""].data.params
    settings = json.loads((result.run_dir / "run.json").read_text())
    report = json.loads(result.report_json.read_text())
    assert params["strategies"] == "tfidf,full" and params["seed"] == "0"
    assert params["backbone"] == str(tiny_backbone)
    assert params["options.full.train.epochs"] == "2"
    assert params["data"] == "small" and params["data_fingerprint"] == settings["fingerprint"]
    assert params["n_train"] == str(report["n_train"])
    assert "target" not in params  # unset settings are left out, not logged as 'None'
    assert "strict" not in params and "val" not in params  # strict means nothing without a bar
    assert runs_of(uri)["full"].data.params["train.epochs"] == "2"  # the rung's own config


def test_metrics_are_the_reports(logged: tuple[FitResult, str]) -> None:
    result, uri = logged
    runs = runs_of(uri)
    report = json.loads(result.report_json.read_text())
    for row in report["candidates"]:
        metrics = runs[row["strategy"]].data.metrics
        assert metrics["val/macro_f1"] == row["val"]["macro_f1"]
        assert metrics["val/accuracy_ci_low"] == row["val"]["accuracy_ci"][0]
        assert metrics["test/accuracy"] == row["test"]["accuracy"]
        assert metrics["val/ece"] == row["val_ece"]
        assert all(metrics[k] == row["cost"][k.split("/")[1]] for k in COST_METRICS)
        assert metrics["speed/latency_p50_ms"] == row["speed"]["latency_p50_ms"]
        assert metrics["forecast/wall_s"] == row["forecast"]["wall_s"]
        assert metrics["forecast/ratio"] == row["forecast_ratio"]
    chosen = next(r for r in report["candidates"] if r["strategy"] == report["chosen"])
    parent = runs[""].data.metrics
    assert parent["val/macro_f1"] == chosen["val"]["macro_f1"]
    assert parent["cost/usd"] == chosen["cost"]["usd"]
    total = sum(r["cost"]["usd"] for r in report["candidates"])
    assert parent["ladder/usd"] == pytest.approx(total)


def test_training_curves_are_step_metrics(logged: tuple[FitResult, str]) -> None:
    result, uri = logged
    runs = runs_of(uri)
    lines = (result.run_dir / "curves" / "full" / "scalars.jsonl").read_text().splitlines()
    written = [json.loads(line) for line in lines]
    history = client(uri).get_metric_history(runs["full"].info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(w["step"], w["train/loss"]) for w in written]
    assert "train/loss" not in runs["tfidf"].data.metrics  # tfidf trains no curve


def test_reports_and_bundle_are_artifacts(logged: tuple[FitResult, str]) -> None:
    result, uri = logged
    c = client(uri)
    runs = runs_of(uri)
    parent = runs[""].info.run_id
    paths = {a.path for a in c.list_artifacts(parent)}
    assert {"report.json", "report.md", "report.html", "run.json", "bundle"} <= paths
    assert ("frontier.png" in paths) == (result.run_dir / "frontier.png").exists()
    assert "bundle/manifest.json" in {a.path for a in c.list_artifacts(parent, "bundle")}
    assert [a.path for a in c.list_artifacts(runs["tfidf"].info.run_id)] == ["manifest.json"]
    beside_db = Path(uri.removeprefix("sqlite:///")).parent / tracking.ARTIFACTS
    assert c.get_experiment_by_name(tracking.EXPERIMENT).artifact_location == beside_db.as_uri()


def test_a_finished_run_folder_can_be_logged_again(logged: tuple[FitResult, str]) -> None:
    result, uri = logged
    run_id = tracking.log_run(result.run_dir, uri, experiment="again")
    runs = runs_of(uri, "again")
    assert set(runs) == {"", "tfidf", "full"} and runs[""].info.run_id == run_id
    with pytest.raises(ConfigError, match="not a finished frugalml run"):
        tracking.log_run(result.run_dir / "candidates", uri)


def test_default_uri_is_mlflows_variable_else_sqlite_here(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracking.default_uri() == "sqlite:///mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking.default_uri() == "http://mlflow.internal:5000"


def test_missing_extra_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'frugalml\[mlflow\]'"):
        frugalml.fit(small_dataset(), out=tmp_path / "run", strategies=["tfidf"], mlflow="x")
    assert not (tmp_path / "run").exists()


def cli(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "frugalml", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "160", **env},
        check=False,
    )


def test_cli_mlflow_logs_to_sqlite_in_the_current_folder(small_csv: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    result = cli(
        "fit", small_csv, "--strategies", "tfidf", "--out", "run", "--mlflow", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    runs = runs_of(f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert set(runs) == {"", "tfidf"}
    assert f"mlflow: run {runs[''].info.run_id} in sqlite:///mlruns.db" in result.stdout
    assert (tmp_path / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()


def test_cli_bad_mlflow_uri_fails_before_training(small_csv: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}"
    result = cli("fit", small_csv, "--out", "run", "--mlflow-uri", uri, cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_cli_without_the_extra_names_the_install_command(small_csv: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "mlflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('mlflow is not installed')\n")
    result = cli(
        "fit", small_csv, "--out", "run", "--mlflow", cwd=tmp_path, PYTHONPATH=str(shadow.parent)
    )
    assert result.returncode == 2, result.stderr
    assert "needs the 'mlflow' extra: pip install 'frugalml[mlflow]'" in result.stderr
    assert not (tmp_path / "run").exists()
