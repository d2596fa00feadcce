"""The Python API: fit() with a separate test set, run-folder safety, and the choice rule."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import frugalml
from frugalml.api import prepare_run_dir, resume_fit
from frugalml.errors import ConfigError, OutputExistsError


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    return path


def rows_of(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(r["text"], r["label"]) for r in csv.DictReader(lines)]


def test_fit_with_a_separate_test_set(small_csv: Path, tmp_path: Path) -> None:
    rows = rows_of(small_csv)
    train = write_csv(tmp_path / "train.csv", rows[::2] + rows[1::4])
    test = write_csv(tmp_path / "test.csv", rows[3::4])
    result = frugalml.fit(train, test=test, out=tmp_path / "run", strategies=["tfidf"])
    report = json.loads(result.report_json.read_text())
    assert report["n_test"] == len(rows[3::4])
    assert report["n_train"] + report["n_val"] == len(rows[::2] + rows[1::4])
    assert result.ladder.chosen.test is not None
    assert result.bundle.labels == tuple(sorted({label for _, label in rows}))


def test_test_set_with_unknown_classes_is_refused(small_csv: Path, tmp_path: Path) -> None:
    test = write_csv(tmp_path / "test.csv", [("hello there", "greeting")])
    with pytest.raises(ConfigError, match="classes the training data lacks: \\['greeting'\\]"):
        frugalml.fit(small_csv, test=test, out=tmp_path / "run", strategies=["tfidf"])


def test_target_picks_the_cheapest_candidate_meeting_it(
    small_csv: Path, tmp_path: Path, tiny_backbone: Path
) -> None:
    result = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        target=0.0,
        strategies=["tfidf", "frozen_probe"],
        options={"frozen_probe": {"backbone": str(tiny_backbone)}},
    )
    assert result.ladder.chosen.strategy == "tfidf"  # both meet 0.0; tfidf costs less
    assert "cheapest candidate" in result.ladder.reason
    strict = frugalml.fit(small_csv, out=tmp_path / "run2", target=1.01, strategies=["tfidf"])
    assert strict.ladder.reason.startswith("no candidate reached macro_f1 1.01")


def test_run_folder_is_replaced_only_when_frugalml_made_it(tmp_path: Path) -> None:
    run = prepare_run_dir(tmp_path / "run", force=False)
    (run / "report.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="pass --force"):
        prepare_run_dir(run, force=False)
    assert not (prepare_run_dir(run, force=True) / "report.json").exists()
    user = tmp_path / "user"
    user.mkdir()
    (user / "data.csv").write_text("x")
    with pytest.raises(OutputExistsError, match="not a frugalml run folder"):
        prepare_run_dir(user, force=True)
    assert (user / "data.csv").read_text() == "x"


def test_bad_metric_is_refused_before_any_work(small_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown metric 'f1' \(known: accuracy, auc, brier"):
        frugalml.fit(small_csv, out=tmp_path / "run", metric="f1")
    assert not (tmp_path / "run").exists()


def test_fit_chooses_by_a_probability_metric(small_csv: Path, tmp_path: Path) -> None:
    """Rungs are scored on their calibrated validation probabilities; lower brier is better."""
    events: list[dict[str, object]] = []
    result = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        strategies=["tfidf"],
        metric="brier",
        target=2.0,  # the worst a brier score can be: any rung meets it
        progress=lambda event, info: events.append(info) if event == "done" else None,
    )
    chosen = result.ladder.chosen
    assert result.metric == "brier" and events[0]["metric"] == "brier"
    assert 0 < chosen.val.metric("brier") < 2.0 and chosen.test is not None
    low, high = chosen.val.interval("brier")
    assert low <= chosen.val.metric("brier") <= high
    assert "validation brier ≤ 2 (" in result.ladder.reason
    row = json.loads(result.report_json.read_text())["leaderboard"][0]
    assert row["val_brier"] == chosen.val.metric("brier") and row["val_brier_ci"] == [low, high]
    metrics = json.loads((chosen.bundle / "manifest.json").read_text())["metrics"]
    assert {"brier", "brier_ci"} <= set(metrics["val"]) and "brier" in metrics["test"]
    resumed = resume_fit(result.run_dir)  # the reused rung keeps its brier
    assert resumed.ladder.chosen.val.metric("brier") == chosen.val.metric("brier")
