"""A small sentiment bundle (TF-IDF on the demo's sentences) and event files for monitor tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import frugalml
from frugalml.apps.monitor import demo
from frugalml.data import Dataset


@pytest.fixture(scope="session")
def sentiment_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = demo.training_rows()
    data = Dataset.from_lists([r["text"] for r in rows], [r["label"] for r in rows], name="demo")
    out = tmp_path_factory.mktemp("monitor-model") / "run"
    return frugalml.fit(data, out=out, strategies=["tfidf"], ship="none").run_dir / "bundle"


def write_events(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
