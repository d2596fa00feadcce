"""Bad inputs as a user meets them through `frugalml fit`: `error: ...`, exit 2, no traceback.

Real processes on real files; the hub is switched off so that a regression cannot download.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def fit(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return frugalml("fit", *args, cwd=cwd)


def frugalml(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "frugalml", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env=env,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *messages: str) -> None:
    assert result.returncode == 2, result.stderr
    assert any(line.startswith("error: ") for line in result.stderr.splitlines()), result.stderr
    for message in messages:
        assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_name_is_a_missing_file_not_a_download(tmp_path: Path) -> None:
    (tmp_path / "tickets.csv").write_text("text,label\nhi,greet\n")
    result = fit("tickets", "--out", tmp_path / "run", cwd=tmp_path)
    assert_user_error(
        result,
        "tickets: no such file; did you mean tickets.csv?",
        "to read the Hugging Face hub dataset 'tickets', pass hf://tickets",
    )
    assert "could not be loaded from the Hugging Face hub" not in result.stderr


def test_jsonl_nested_100k_deep_names_the_line(tmp_path: Path) -> None:
    rows = [json.dumps({"text": f"question {i}", "label": "ab"[i % 2]}) for i in range(8)]
    rows.insert(2, "[" * 100_000 + "]" * 100_000)
    (tmp_path / "deep.jsonl").write_text("\n".join(rows) + "\n")
    result = fit(tmp_path / "deep.jsonl", "--out", tmp_path / "run", cwd=tmp_path)
    assert_user_error(
        result,
        "1 line could not be read as a JSON object",
        "line 3: nested too deeply to read",
    )
    assert "RecursionError" not in result.stderr


def test_a_multi_character_delimiter_for_a_csv_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("text||label\nhi||greet\n")
    result = fit(tmp_path / "data.csv", "--delimiter", "||", "--out", tmp_path / "r", cwd=tmp_path)
    assert_user_error(result, "--delimiter must be a single character for data.csv; got '||'")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_device_is_refused(tmp_path: Path) -> None:
    result = fit("/dev/zero", "--out", tmp_path / "run", cwd=tmp_path)
    assert_user_error(result, "/dev/zero: is a device, not a regular file")


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_predict_input_that_is_not_a_file_is_refused(tmp_path: Path, kind: str) -> None:
    source = tmp_path / "texts.txt"
    source.mkdir() if kind == "folder" else os.mkfifo(source)
    result = frugalml("predict", tmp_path / "bundle", "--input", source, cwd=tmp_path)
    what = "a folder" if kind == "folder" else "a named pipe (FIFO)"
    assert_user_error(result, f"{source}: is {what}, not a regular file")


def test_copies_are_counted_and_kept_in_one_split(tmp_path: Path) -> None:
    """Issue 11: every row 5x gave validation and test 1.000, the copies being in every split."""
    from tests.conftest import demo_dataset

    data = demo_dataset()
    rows = [(t, data.labels[y]) for t, y in zip(data.texts, data.y, strict=True) if y < 4]
    with (tmp_path / "copies.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *(rows * 5)])
    run = tmp_path / "run"
    args = ["--strategies", "tfidf", "--ship", "none", "--out", run]
    result = fit(tmp_path / "copies.csv", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    note = (
        f"{4 * len(rows)} rows repeat an earlier text (ignoring case and spacing; "
        f"{len(rows)} texts occur more than once)"
    )
    assert note in result.stderr
    report = json.loads((run / "report.json").read_text())
    assert any(n.startswith(note) for n in report["notes"])
    assert report["n_train"] + report["n_val"] + report["n_test"] == 5 * len(rows)
