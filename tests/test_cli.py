"""The CLI as a user runs it: real processes, real files, exit codes and messages."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def frugalml(
    *args: str | Path, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160", **env}
    return subprocess.run(
        [sys.executable, "-m", "frugalml", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path) -> Path:
    from tests.conftest import demo_dataset

    folder = tmp_path_factory.mktemp("cli")
    data = demo_dataset()
    with (folder / "intents.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "intent"])
        writer.writerows((t, data.labels[y]) for t, y in zip(data.texts, data.y, strict=True))
    result = frugalml(
        "fit",
        folder / "intents.csv",
        "--strategies",
        "tfidf,frozen_probe",
        "--backbone",
        tiny_backbone,
        "--out",
        folder / "run",
        "--seed",
        "1",
    )
    assert result.returncode == 0, result.stderr
    (folder / "stdout.txt").write_text(result.stdout)
    return folder / "run"


def test_fit_prints_the_leaderboard_and_writes_the_run_folder(run_dir: Path) -> None:
    stdout = (run_dir.parent / "stdout.txt").read_text()
    assert "leaderboard" in stdout and "tfidf" in stdout and "frozen_probe" in stdout
    assert "chosen:" in stdout and str(run_dir / "bundle") in stdout
    report = json.loads((run_dir / "report.json").read_text())
    assert {row["strategy"] for row in report["leaderboard"]} == {"tfidf", "frozen_probe"}
    assert report["chosen"] in {"tfidf", "frozen_probe"} and report["seed"] == 1
    for row in report["candidates"]:
        assert row["cost"]["cpu_s"] > 0 and row["speed"]["throughput_per_s"] > 0
    assert "## Cost cards" in (run_dir / "report.md").read_text()
    assert (run_dir / "bundle" / "manifest.json").exists()


def test_predict_writes_one_json_object_per_text(run_dir: Path) -> None:
    result = frugalml("predict", run_dir / "bundle", "my card has not arrived", "cancel my pin")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == ["my card has not arrived", "cancel my pin"]
    for record in records:
        assert record["label"] in record["probabilities"]
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_from_a_file_to_csv_and_never_overwrites(run_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("where is my refund\r\nmy transfer failed\r\n\r\n")
    output = tmp_path / "out.csv"
    assert (
        frugalml("predict", run_dir / "bundle", "--input", source, "--output", output).returncode
        == 0
    )
    rows = list(csv.DictReader(output.read_text(encoding="utf-8").splitlines()))
    assert [r["text"] for r in rows] == ["where is my refund", "my transfer failed"]
    again = frugalml("predict", run_dir / "bundle", "--input", source, "--output", output)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_evaluate_and_info(run_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "eval.jsonl"
    data.write_text(
        '{"text": "I lost my card", "label": "card_lost_or_stolen"}\n'
        '{"text": "change my pin please", "label": "change_pin"}\n'
    )
    result = frugalml("evaluate", run_dir / "bundle", data, "--json")
    assert result.returncode == 0, result.stderr
    quality = json.loads(result.stdout)
    assert quality["n"] == 2 and 0 <= quality["accuracy"] <= 1
    info = frugalml("info", run_dir / "bundle")
    assert info.returncode == 0, info.stderr
    files = len(json.loads((run_dir / "bundle" / "manifest.json").read_text())["files"])
    assert f"sha256 of {files} files and the manifest verified" in info.stdout
    assert "not signed" in info.stdout
    assert "training cost" in info.stdout


def test_sign_then_info_says_what_was_verified_and_edits_are_refused(
    run_dir: Path, tmp_path: Path
) -> None:
    bundle = shutil.copytree(run_dir / "bundle", tmp_path / "bundle")
    key = "correct horse battery staple"
    unsigned = frugalml("info", bundle, FRUGALML_SIGNING_KEY=key)
    assert unsigned.returncode == 2 and "is not signed" in unsigned.stderr
    assert "frugalml sign BUNDLE" in unsigned.stderr
    signed = frugalml("sign", bundle, FRUGALML_SIGNING_KEY=key)
    assert signed.returncode == 0, signed.stderr
    info = frugalml("info", bundle, FRUGALML_SIGNING_KEY=key)
    assert info.returncode == 0, info.stderr
    assert "signed with the HMAC-SHA256 key in $FRUGALML_SIGNING_KEY" in info.stdout
    wrong = frugalml("info", bundle, FRUGALML_SIGNING_KEY="a different key, long enough")
    assert wrong.returncode == 2 and "signature does not match" in wrong.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["predictor"]["temperature"] = 1e9
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    for command in (["info"], ["predict", "cancel my pin"], ["sign"]):
        refused = frugalml(command[0], bundle, *command[1:], FRUGALML_SIGNING_KEY=key)
        assert refused.returncode == 2, refused.stderr
        assert "manifest.json was changed after it was written" in refused.stderr
        assert "Traceback" not in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "{data}", "--text-col", "txt"], "did you mean 'text'?"),
        (["fit", "{data}", "--strategies", "tfidf,frozen-probe"], "did you mean 'frozen_probe'?"),
        (["fit", "{missing}"], "no such file"),
        (["predict", "{data}", "hello"], "not a bundle"),
        (["evaluate", "{data}", "{data}"], "not a bundle"),
        (["predict", "{data}"], "nothing to predict"),
        (["fit", "{data}", "--metric", "brierr"], "did you mean 'brier'?"),
        (["fit", "{data}", "--target", "brier=3"], "--target brier must lie between 0 and 2"),
    ],
)
def test_user_errors_exit_2_with_a_message_and_no_traceback(
    args: list[str],
    message: str,
    small_csv: Path,
    tmp_path: Path,
) -> None:
    values = {"data": small_csv, "missing": tmp_path / "smal.csv"}
    if args[0] in ("predict", "evaluate"):
        values["data"] = tmp_path  # a folder that is not a bundle
    result = (
        frugalml(*[a.format(**values) for a in args], "--out", tmp_path / "r")
        if args[0] == "fit"
        else frugalml(*[a.format(**values) for a in args])
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_fit_refuses_an_existing_folder(small_csv: Path, tmp_path: Path) -> None:
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    for extra in ([], ["--force"]):
        result = frugalml("fit", small_csv, "--strategies", "tfidf", "--out", keep, *extra)
        assert result.returncode == 2
    assert (keep / "notes.txt").read_text() == "precious"
    assert "not a frugalml run folder" in result.stderr


def test_fit_reports_the_metric_it_chooses_by(small_csv: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = frugalml(
        "fit", small_csv, "--strategies", "tfidf", "--target", "log_loss=5", "--out", run
    )
    assert result.returncode == 0, result.stderr
    assert "; val log_loss " in result.stderr and "macro-F1" not in result.stderr
    assert "validation log_loss ≤ 5" in result.stdout  # the reason, direction included
    assert json.loads((run / "report.json").read_text())["metric"] == "log_loss"


def test_resume_with_a_bad_run_json_exits_2_naming_the_field(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / ".frugalml-run").write_text("")
    (run / "run.json").write_text('{"data": "x.csv", "split": {"seed": "one"}}')
    result = frugalml("fit", "--resume", run)
    assert result.returncode == 2, result.stderr
    assert "split.seed: expected a valid integer" in result.stderr
    assert "Traceback" not in result.stderr
