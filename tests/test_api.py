"""The Python API: fit() with a separate test set, run-folder safety, and the choice rule."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import frugalml
from frugalml.api import RUN_SETTINGS, prepare_run_dir, resume_fit
from frugalml.config import Budget, RunSettings, SpeedConfig, SplitConfig, read_run_settings
from frugalml.costs import Prices
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
    unmet = frugalml.fit(
        small_csv, out=tmp_path / "run2", target=1.01, strategies=["tfidf"], strict=False
    )
    assert unmet.ladder.reason.startswith("no candidate reached macro_f1 1.01")


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


# -- run settings: run.json is a RunSettings ------------------------------------------------
def test_run_json_round_trips_the_fit_options(small_csv: Path, tmp_path: Path) -> None:
    prices = Prices(usd_per_hour=1.5, basis="a test price")
    speed = SpeedConfig(latency_calls=5, throughput_texts=16)
    result = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        strategies=["tfidf"],
        metric="accuracy",
        target=0.5,
        budget=Budget(max_wall_s=600),
        split=SplitConfig(seed=3),
        ship="none",
        max_drop=0.5,
        prices=prices,
        speed=speed,
    )
    settings = read_run_settings(result.run_dir / RUN_SETTINGS)
    assert settings == RunSettings(
        data=str(small_csv),
        strategies=("tfidf",),
        metric="accuracy",
        target=0.5,
        budget=Budget(max_wall_s=600),
        split=SplitConfig(seed=3),
        ship="none",
        max_drop=0.5,
        prices=prices,
        speed=speed,
        fingerprint=result.bundle.manifest.data_fingerprint,
    )
    assert result.ladder.chosen.cost.price_basis == "a test price"


def kill_after_ladder(run_dir: Path) -> None:
    """What a kill after the first rungs leaves: candidates, but no bundle or report."""
    shutil.rmtree(run_dir / "bundle")
    (run_dir / "report.json").unlink()


def test_resume_reads_its_options_from_run_json(small_csv: Path, tmp_path: Path) -> None:
    first = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        strategies=["tfidf"],
        metric="accuracy",
        ship="none",
        prices=Prices(basis="the run's price"),
    )
    kill_after_ladder(first.run_dir)
    shutil.rmtree(first.run_dir / "candidates" / "tfidf")  # killed while training it
    resumed = resume_fit(first.run_dir)
    assert resumed.metric == "accuracy"
    assert resumed.ladder.chosen.cost.price_basis == "the run's price"  # not the default
    assert (first.run_dir / "bundle" / "manifest.json").exists()


# run.json as the previous frugalml (0.1.0, before RunSettings) wrote it: no speed or prices.
PREVIOUS_RUN_JSON = {
    "data": "DATA",
    "test": None,
    "text_col": None,
    "label_col": None,
    "strategies": ["tfidf"],
    "metric": "macro_f1",
    "target": None,
    "strict": False,
    "budget": {"max_wall_s": None, "max_usd": None, "max_kwh": None},
    "split": {"val_frac": 0.15, "test_frac": 0.15, "seed": 0},
    "drop_invalid": False,
    "delimiter": None,
    "options": {},
    "ship": "none",
    "max_drop": 1.0,
    "fingerprint": "FINGERPRINT",
}


def test_a_run_json_from_the_previous_version_still_resumes(
    small_csv: Path, tmp_path: Path
) -> None:
    first = frugalml.fit(small_csv, out=tmp_path / "run", strategies=["tfidf"], ship="none")
    fingerprint = read_run_settings(first.run_dir / RUN_SETTINGS).fingerprint
    previous = {**PREVIOUS_RUN_JSON, "data": str(small_csv), "fingerprint": fingerprint}
    (first.run_dir / RUN_SETTINGS).write_text(json.dumps(previous, indent=2))
    kill_after_ladder(first.run_dir)
    resumed = resume_fit(first.run_dir)
    assert resumed.ladder.chosen.strategy == "tfidf"
    assert (first.run_dir / "bundle" / "manifest.json").exists()
    older = {k: v for k, v in previous.items() if k not in ("strict", "ship", "max_drop")}
    assert RunSettings.model_validate(older).ship == "int8"  # what those versions shipped


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"split": {"seed": "one"}}, "split.seed: expected a valid integer"),
        ({"strategies": "tfidf"}, 'strategies: expected a list; got a string "tfidf"'),
        ({"strategies": []}, "strategies: expected at least 1 item"),
        ({"max_drop": -1}, "max_drop: expected greater than or equal to 0; got an integer -1"),
        ({"budgett": {}}, "budgett: not a known field"),
    ],
)
def test_a_bad_run_json_is_a_clear_error(
    change: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    run = prepare_run_dir(tmp_path / "run", force=False)
    (run / RUN_SETTINGS).write_text(json.dumps({**PREVIOUS_RUN_JSON, **change}))
    with pytest.raises(ConfigError, match="holds invalid run settings") as bad:
        resume_fit(run)
    assert any(p.startswith(expected) for p in bad.value.problems), bad.value.problems


def test_bad_fit_options_are_refused_with_the_field(small_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid fit settings") as bad:
        frugalml.fit(small_csv, out=tmp_path / "run", strategies=[], max_drop=-2)
    assert bad.value.problems == [
        "strategies: expected at least 1 item, not 0; got a list []",
        "max_drop: expected greater than or equal to 0; got an integer -2",
    ]
    assert not (tmp_path / "run").exists()


# -- validation from the data the model will see; honest test figures (issue 11, item 12) ----
def test_val_file_is_the_validation_set_and_the_split_carves_only_test(
    small_csv: Path, tmp_path: Path
) -> None:
    rows = rows_of(small_csv)
    train = write_csv(tmp_path / "train.csv", rows[::2] + rows[1::4])
    val = write_csv(tmp_path / "val.csv", rows[3::4])
    result = frugalml.fit(train, val=val, out=tmp_path / "run", strategies=["tfidf"], ship="none")
    report = json.loads(result.report_json.read_text())
    assert report["n_val"] == len(rows[3::4])
    assert report["n_test"] > 0  # the split carves a test set only
    assert report["n_train"] + report["n_test"] == len(rows[::2] + rows[1::4])
    assert read_run_settings(result.run_dir / RUN_SETTINGS).val == str(val)
    test = write_csv(tmp_path / "test.csv", rows[1::4][:6])
    both = frugalml.fit(
        train, val=val, test=test, out=tmp_path / "both", strategies=["tfidf"], ship="none"
    )
    report = json.loads(both.report_json.read_text())
    assert (report["n_train"], report["n_val"], report["n_test"]) == (
        len(rows[::2] + rows[1::4]),
        len(rows[3::4]),
        6,
    )
    resumed = resume_fit(both.run_dir)  # run.json keeps --val
    assert len(resumed.ladder.chosen.val.per_class) == len(both.ladder.chosen.val.per_class)
    assert resumed.ladder.chosen.val.n == len(rows[3::4])


def test_val_with_unknown_classes_is_refused(small_csv: Path, tmp_path: Path) -> None:
    val = write_csv(tmp_path / "val.csv", [("hello there", "greeting")])
    with pytest.raises(ConfigError, match="validation set has classes the training data lacks"):
        frugalml.fit(small_csv, val=val, out=tmp_path / "run", strategies=["tfidf"])
    assert not (tmp_path / "run").exists()


VOCABULARY = {  # per class: words of the training data, then of a test set in another language
    "card": ("card plastic debit", "κάρτα χρεωστική πλαστική"),
    "refund": ("refund money back", "επιστροφή χρημάτων αγοράς"),
    "pin": ("pin code digits", "κωδικός ψηφία επαναφορά"),
}


def shifted_data(folder: Path) -> tuple[Path, Path]:
    """Training data TF-IDF separates perfectly, and a test set of the same classes written in
    another alphabet (collected elsewhere): validation, carved from training, says ~1.0; on the
    test set TF-IDF sees no feature it knows."""
    train, test = [], []
    for label, (seen, unseen) in VOCABULARY.items():
        for i in range(24):
            train.append((f"{seen.split()[i % 3]} {seen.split()[(i + 1) % 3]} please", label))
            test.append((f"{unseen.split()[i % 3]} {unseen.split()[(i + 2) % 3]}", label))
    return write_csv(folder / "train.csv", train), write_csv(folder / "test.csv", test[::2])


def test_a_test_score_short_of_the_bar_beyond_its_interval_is_reported(
    tmp_path: Path, tiny_backbone: Path
) -> None:
    train, test = shifted_data(tmp_path)
    result = frugalml.fit(
        train,
        test=test,
        out=tmp_path / "run",
        strategies=["tfidf", "frozen_probe"],
        target=0.9,
        ship="none",
        options={"frozen_probe": {"backbone": str(tiny_backbone)}},
    )
    chosen = result.ladder.chosen
    assert chosen.strategy == "tfidf" and chosen.val.meets("macro_f1", 0.9, strict=True)
    assert chosen.test is not None and chosen.test.interval("macro_f1")[1] < 0.9
    short = result.ladder.shortfall
    assert short is not None and short.next_rung == "frozen_probe"
    assert short.test == chosen.test.macro_f1
    message = short.message()
    assert message.startswith(f"tfidf's test macro_f1 {chosen.test.macro_f1:.3f}")
    assert "below the bar 0.9 by more than its 95% interval" in message
    assert "frozen_probe (not run: target macro_f1 ≥ 0.9 already met by tfidf)" in message
    report = json.loads(result.report_json.read_text())
    assert report["shortfall"]["next_rung"] == "frozen_probe"
    assert report["shortfall"]["message"] == message
    row = report["leaderboard"][0]
    assert row["test_macro_f1"] == chosen.test.macro_f1 and row["misses_bar_on_test"] is True
    assert f"⚠ {message}" in result.report_md.read_text(encoding="utf-8")
    page = result.report_html.read_text(encoding="utf-8")
    assert 'class="warning"' in page and "already met by tfidf" in page
    met = frugalml.fit(train, test=test, out=tmp_path / "met", strategies=["tfidf"], target=0.1)
    assert met.ladder.shortfall is None  # a bar the test score meets: nothing to say
    assert json.loads(met.report_json.read_text())["shortfall"] is None


def test_strict_is_the_default_and_no_strict_opts_out(small_csv: Path, tmp_path: Path) -> None:
    assert RunSettings().strict is True
    plain = frugalml.fit(small_csv, out=tmp_path / "a", strategies=["tfidf"], target=1.0)
    assert plain.ladder.reason.startswith("no candidate's 95% interval cleared macro_f1 1")
    loose = frugalml.fit(
        small_csv, out=tmp_path / "b", strategies=["tfidf"], target=0.5, strict=False
    )
    assert read_run_settings(loose.run_dir / RUN_SETTINGS).strict is False
    older = {k: v for k, v in PREVIOUS_RUN_JSON.items() if k != "strict"}
    assert read_settings_json(tmp_path, older).strict is False  # what runs before it used


def read_settings_json(folder: Path, data: dict[str, Any]) -> RunSettings:
    path = folder / "old-run.json"
    path.write_text(json.dumps(data))
    return read_run_settings(path)
