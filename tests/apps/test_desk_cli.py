"""`frugalml desk ...` through the real entry point (a subprocess, as a user runs it)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from frugalml.apps import desk as desk_app
from frugalml.data import DEMO_INTENTS


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    return subprocess.run(
        [sys.executable, "-m", "frugalml", "desk", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


# slow: a fresh interpreter climbs the demo's whole ladder (~40 s of the desk's ~55 s fast
# tests); the build it exercises is covered in-process by tests/apps/test_desk.py
@pytest.mark.slow
def test_demo_builds_and_routes_then_ask_answers_in_json(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    done = _cli(
        "demo", "--out", str(tmp_path / "desk"), "--backbone", str(tiny_backbone), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "out-of-scope detector:" in done.stdout and "route:" in done.stdout
    assert done.stdout.count("> ") == 6  # the six demo questions, each routed
    asked = _cli("ask", str(tmp_path / "desk"), "where is my IBAN", "--json", cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr[-3000:]
    reply = json.loads(asked.stdout)
    assert reply["route"] in ("answer", "knowledge", "handoff")
    assert {"intent", "confidence", "oos_score", "evidence"} <= set(reply)
    refused = _cli("ask", str(tmp_path / "desk"), "hi", "--confidence", "3", cwd=tmp_path)
    assert refused.returncode == 2 and "between 0 and 1" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_build_with_an_intent_without_an_answer_exits_2_listing_it(tmp_path: Path) -> None:
    answers = tmp_path / "answers.csv"
    with desk_app.DEMO_ANSWERS.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    with answers.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(r for r in rows if r[0] != "change_pin")
    done = _cli(
        "build",
        str(DEMO_INTENTS),
        "--answers",
        str(answers),
        "--knowledge",
        str(desk_app.DEMO_FAQ),
        "--out",
        str(tmp_path / "desk"),
        "--oos-recall",
        "0",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "1 intent without an answer: change_pin" in done.stderr
    assert "--oos-recall must be between 0 and 1; got 0.0" in done.stderr
    assert "Traceback" not in done.stderr
