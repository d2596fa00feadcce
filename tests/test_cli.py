"""The CLI as a user runs it: real processes, real files, exit codes and messages."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
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


# -- the run folder never costs the user their data (issue 11, item 4) -----------------------
def made_run(small_csv: Path, out: Path) -> Path:
    """A finished run folder, the kind `--force` may replace."""
    result = frugalml("fit", small_csv, "--strategies", "tfidf", "--ship", "none", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("option", ["DATA", "--test", "--val"])
def test_force_never_deletes_an_input_inside_the_run_folder(
    option: str, small_csv: Path, tmp_path: Path
) -> None:
    run = made_run(small_csv, tmp_path / "run")
    inside = run / "data" / "input.csv"
    inside.parent.mkdir()
    inside.write_bytes(small_csv.read_bytes())
    data, extra = (inside, []) if option == "DATA" else (small_csv, [option, inside])
    result = frugalml("fit", data, *extra, "--strategies", "tfidf", "--out", run, "--force")
    assert result.returncode == 2, result.stderr
    assert f"{run} contains the input {inside}" in result.stderr
    assert "Traceback" not in result.stderr
    assert inside.read_bytes() == small_csv.read_bytes()
    assert (run / "report.json").exists()  # nothing of the run was touched either


def test_out_that_is_the_input_file_is_refused(small_csv: Path) -> None:
    result = frugalml("fit", small_csv, "--strategies", "tfidf", "--out", small_csv, "--force")
    assert result.returncode == 2 and "contains the input" in result.stderr
    assert small_csv.read_text(encoding="utf-8").startswith("text,label")


def test_symlinked_or_dangling_out_is_refused(small_csv: Path, tmp_path: Path) -> None:
    run = made_run(small_csv, tmp_path / "run")
    link = tmp_path / "latest"
    link.symlink_to(run, target_is_directory=True)
    result = frugalml("fit", small_csv, "--strategies", "tfidf", "--out", link, "--force")
    assert result.returncode == 2, result.stderr
    assert f"{link} is a symbolic link (to {run})" in result.stderr
    assert (run / "report.json").exists() and link.is_symlink()
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    result = frugalml("fit", small_csv, "--strategies", "tfidf", "--out", dangling)
    assert result.returncode == 2, result.stderr
    assert f"{dangling} is a symbolic link (to {tmp_path / 'gone'})" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "gone").exists()


def test_an_out_under_a_file_exits_2_with_the_path_and_reason(
    small_csv: Path, tmp_path: Path
) -> None:
    (tmp_path / "plain.txt").write_text("a file, not a folder")
    out = tmp_path / "plain.txt" / "run"
    result = frugalml("fit", small_csv, "--strategies", "tfidf", "--out", out)
    assert result.returncode == 2, result.stderr
    assert f"cannot write the run folder {out}" in result.stderr
    assert "Not a directory" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def unwritable_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder no one may create anything in: immutable as root (chmod does not stop root),
    mode 0o555 otherwise."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("chattr") is None:
        pytest.skip("as root only an immutable folder is unwritable, and chattr is missing")
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"this file system has no immutable flag: {made.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_an_unwritable_out_exits_2_with_the_path_and_reason(
    small_csv: Path, unwritable_folder: Path
) -> None:
    out = unwritable_folder / "run"
    result = frugalml("fit", small_csv, "--strategies", "tfidf", "--out", out)
    assert result.returncode == 2, result.stderr
    assert f"cannot write the run folder {out}" in result.stderr
    reason = "Operation not permitted" if os.geteuid() == 0 else "Permission denied"
    assert reason in result.stderr and "Traceback" not in result.stderr


def test_force_on_an_unwritable_run_folder_exits_2_and_keeps_it(
    small_csv: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a run folder immutable")
    run = made_run(small_csv, tmp_path / "run")
    report = run / "report.json"
    if subprocess.run(["chattr", "+i", str(report)], check=False).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    try:
        result = frugalml("fit", small_csv, "--strategies", "tfidf", "--out", run, "--force")
    finally:
        subprocess.run(["chattr", "-i", str(report)], check=True)
    assert result.returncode == 2, result.stderr
    assert f"cannot replace the run folder {run}" in result.stderr
    assert "Operation not permitted" in result.stderr and "Traceback" not in result.stderr


# -- user strings are text, never markup (issue 11, item 9) -----------------------------------
MARKUP_LABELS = ("@mention", "[/]close", "[bold]open", "plain")


@pytest.fixture(scope="module")
def markup_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF-IDF bundle whose labels, and run folder name, look like Rich markup."""
    folder = tmp_path_factory.mktemp("markup")
    words = {
        "[/]close": "shut lock bolt",
        "[bold]open": "unlock ajar wide",
        "plain": "beige flat grey",
        "@mention": "tag ping notify",  # a label a spreadsheet would read as a formula
    }
    with (folder / "doors.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for label, vocabulary in words.items():
            for i in range(12):
                writer.writerow([f"{vocabulary.split()[i % 3]} door number {i}", label])
    out = folder / "[red]run"
    result = frugalml(
        "fit", folder / "doors.csv", "--strategies", "tfidf", "--ship", "none", "--out", out
    )
    assert result.returncode == 0, result.stderr
    assert "[red]run" in result.stdout  # the path printed as it is
    return out / "bundle"


def test_info_and_evaluate_print_markup_like_labels_as_text(
    markup_bundle: Path, tmp_path: Path
) -> None:
    info = frugalml("info", markup_bundle)
    assert info.returncode == 0, info.stderr
    assert "[/]close" in info.stdout and "[bold]open" in info.stdout
    data = tmp_path / "[x]eval.csv"
    data.write_text("text,label\nshut door,[/]close\nunlock door,[bold]open\nbeige door,plain\n")
    evaluate = frugalml("evaluate", markup_bundle, data)
    assert evaluate.returncode == 0, evaluate.stderr
    assert "[/]close" in evaluate.stdout and "[bold]open" in evaluate.stdout


def test_errors_about_markup_like_labels_are_printed_as_text(
    markup_bundle: Path, tmp_path: Path
) -> None:
    data = tmp_path / "eval.csv"
    data.write_text("text,label\nshut door,[/]close\nunlock door,[i]other\n")
    result = frugalml("evaluate", markup_bundle, data)
    assert result.returncode == 2, result.stderr
    assert "labels the bundle does not know: [i]other" in result.stderr
    assert "[/]close" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["folder", "under a file", "missing folder"])
def test_predict_output_that_cannot_be_written_exits_2(
    where: str, markup_bundle: Path, tmp_path: Path
) -> None:
    (tmp_path / "file.txt").write_text("x")
    output = {
        "folder": tmp_path,
        "under a file": tmp_path / "file.txt" / "out.csv",
        "missing folder": tmp_path / "nowhere" / "out.csv",
    }[where]
    for force in ([], ["--force"]):
        result = frugalml("predict", markup_bundle, "shut door", "--output", output, *force)
        assert result.returncode == 2, result.stderr
        assert f"cannot write predictions to {output}" in result.stderr
        assert "Traceback" not in result.stderr


def test_predict_output_in_an_unwritable_folder_exits_2(
    markup_bundle: Path, unwritable_folder: Path
) -> None:
    output = unwritable_folder / "out.jsonl"
    result = frugalml("predict", markup_bundle, "shut door", "--output", output)
    assert result.returncode == 2, result.stderr
    assert f"cannot write predictions to {output}" in result.stderr
    assert "Traceback" not in result.stderr


# -- CSV cells are data, never formulas (issue 11, item 11) ----------------------------------
def test_predict_csv_escapes_cells_a_spreadsheet_would_run(
    markup_bundle: Path, tmp_path: Path
) -> None:
    texts = ['=HYPERLINK("http://x")', "+1 shut", "-2 shut", "@SUM(A1)", "\tshut", "\rshut"]
    output = tmp_path / "out.csv"
    args = ("--output", output, "--", *texts, "shut door", "tag door")  # '--': "-2" is a text
    result = frugalml("predict", markup_bundle, *args)
    assert result.returncode == 0, result.stderr
    with output.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["text"] for r in rows] == [*(f"'{t}" for t in texts), "shut door", "tag door"]
    assert rows[-2]["label"] == "[/]close" and rows[-1]["label"] == "'@mention"
    header = output.read_text(encoding="utf-8").splitlines()[0]
    assert header == "text,label,p_@mention,p_[/]close,p_[bold]open,p_plain"


# -- held-out honesty: --val, --strict by default, a test score short of the bar (item 12) ----
def test_fit_warns_when_the_test_score_misses_the_bar_beyond_its_interval(
    tmp_path: Path, tiny_backbone: Path
) -> None:
    from tests.test_api import shifted_data

    train, test = shifted_data(tmp_path)
    common = ("--strategies", "tfidf,frozen_probe", "--backbone", tiny_backbone, "--ship", "none")
    result = frugalml(
        "fit", train, "--test", test, "--target", "macro_f1=0.9", *common, "--out", tmp_path / "a"
    )
    assert result.returncode == 0, result.stderr
    summary = result.stdout[result.stdout.index("chosen:") :]
    assert "warning: tfidf's test macro_f1" in summary
    assert "below the bar 0.9 by more than its 95% interval" in summary
    assert "Likely to meet it: frozen_probe (not run:" in summary
    board = result.stdout[: result.stdout.index("chosen:")]
    assert "test macro_f1" in board and "⚠" in board
    # validation from the shifted data: tfidf no longer meets the bar (point estimate rule)
    result = frugalml(
        "fit",
        train,
        "--val",
        test,
        "--target",
        "macro_f1=0.9",
        "--no-strict",
        *common,
        "--out",
        tmp_path / "b",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["n_val"] == 36 and report["strict"] is False
    assert [row["strategy"] for row in report["leaderboard"]] == ["tfidf", "frozen_probe"]


# -- one line per event, as it happens, when output is not a terminal (item 13) --------------
def test_fit_off_a_terminal_prints_each_event_as_it_happens(
    small_csv: Path, tmp_path: Path, tiny_backbone: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "frugalml",
        "fit",
        str(small_csv),
        "--out",
        str(tmp_path / "r"),
    ]
    options = ["--strategies", "tfidf,frozen_probe", "--backbone", str(tiny_backbone)]
    process = subprocess.Popen(
        [*command, *options, "--target", "macro_f1=0.0", "--ship", "onnx"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:  # read as the lines come, not after the end
        lines.append(line.rstrip("\n"))
        if line.startswith("tfidf: fitting"):
            # the rung has only started: model, report and bundle are all still to come
            assert process.poll() is None
            break
    stdout, rest = process.communicate(timeout=240)
    assert process.returncode == 0, rest
    lines += rest.splitlines()
    events = [
        next((i for i, line in enumerate(lines) if line.startswith(start)), -1)
        for start in (
            "tfidf: forecast ",
            "tfidf: fitting",
            "tfidf: actual ",
            "frozen_probe: skipped (target macro_f1 ≥ 0 already met by tfidf)",
            "ship source: ",
            "ship onnx: ",
        )
    ]
    assert -1 not in events and events == sorted(events), lines
    assert "━" not in rest and "chosen:" in stdout  # no progress bar drawn into a log
