"""`check_strategy` catches each broken promise, names it, and lists them all at once.

The rung under test is a small bag-of-words centroid model (numpy only, a second to check)
whose config switches on one defect at a time; the built-in rungs are checked in
tests/strategies/test_common.py.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.models.heads import softmax
from frugalml.strategies import base, get_strategy
from frugalml.strategies.base import StrategyConfig, register_strategy
from frugalml.testing import ODD_TEXTS, StrategyCheckError, check_strategy, demo_splits

Defect = Literal[
    "batch_dependent",
    "pickle",
    "unseeded",
    "empty_crash",
    "reversed_labels",
    "crash",
    "unnormalized_embed",
    "wrong_val_logits",
]


class SloppyConfig(StrategyConfig):
    kind: Literal["sloppy"] = "sloppy"
    defects: tuple[Defect, ...] = ()
    capable: bool = False  # the predictor embeds and reports on its fit


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


class SloppyPredictor:
    """Word counts → cosine to each class's mean count vector; `defects` break it on purpose."""

    def __init__(
        self,
        vocab: list[str],
        centroids: np.ndarray,
        labels: tuple[str, ...],
        defects: Sequence[str] = (),
        temperature: float = 1.0,
    ) -> None:
        self.vocab, self.centroids, self.labels = vocab, centroids, labels
        self.defects, self.temperature = tuple(defects), temperature
        self.index = {w: i for i, w in enumerate(vocab)}

    def features(self, texts: Sequence[str]) -> np.ndarray:
        X = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _words(text):
                if word in self.index:
                    X[row, self.index[word]] += 1
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-9)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        if "empty_crash" in self.defects and not texts:
            raise IndexError("no texts")
        logits = 10 * self.features(texts) @ self.centroids.T
        if "batch_dependent" in self.defects and len(texts):
            logits -= logits.mean(axis=0)  # a batch statistic: what the micro-batcher breaks on
        return np.asarray(logits, dtype=np.float32)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(texts) / self.temperature)

    def save(self, folder: Path) -> dict[str, Any]:
        (folder / "vocab.json").write_text(json.dumps(self.vocab))
        save_file({"centroids": self.centroids}, str(folder / "centroids.safetensors"))
        if "pickle" in self.defects:
            (folder / "state.bin").write_bytes(pickle.dumps({"vocab": self.vocab}))
        capable = isinstance(self, CapablePredictor)
        return {"defects": list(self.defects), "temperature": self.temperature, "capable": capable}

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], labels: tuple[str, ...]) -> SloppyPredictor:
        vocab = json.loads((folder / "vocab.json").read_text())
        centroids = load_file(str(folder / "centroids.safetensors"))["centroids"]
        kind = CapablePredictor if spec["capable"] else SloppyPredictor
        return kind(vocab, centroids, labels, spec["defects"], float(spec["temperature"]))


class CapablePredictor(SloppyPredictor):
    """With the optional capabilities: sentence vectors, and what its fit knew."""

    stopped = ""
    val_logits: np.ndarray | None = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        X = np.hstack([self.features(texts), np.ones((len(texts), 1), np.float32)])
        scale = 2.0 if "unnormalized_embed" in self.defects else 1.0
        return np.asarray(scale * X / np.linalg.norm(X, axis=1, keepdims=True), np.float32)


class SloppyStrategy:
    """Bag-of-words nearest centroid, with switchable defects."""

    def __init__(self, config: SloppyConfig) -> None:
        self.config = config

    def fit(
        self,
        train: Dataset,
        val: Dataset,
        *,
        budget: Budget,
        meter: CostMeter,
        workdir: Path | None = None,
    ) -> SloppyPredictor:
        defects = self.config.defects
        if "crash" in defects:
            raise RuntimeError("out of memory")
        vocab = sorted({w for t in train.texts for w in _words(t)})
        index = {w: i for i, w in enumerate(vocab)}
        counts = np.zeros((len(train.labels), len(vocab)), dtype=np.float32)
        for text, y in zip(train.texts, train.y, strict=True):
            for word in _words(text):
                counts[y, index[word]] += 1
        if "unseeded" in defects:
            counts += np.random.default_rng().random(counts.shape, dtype=np.float32)
        centroids = counts / np.linalg.norm(counts, axis=1, keepdims=True)
        labels = train.labels[::-1] if "reversed_labels" in defects else train.labels
        if not self.config.capable:
            return SloppyPredictor(vocab, centroids, labels, defects)
        predictor = CapablePredictor(vocab, centroids, labels, defects)
        predictor.val_logits = predictor.logits(val.texts)
        if "wrong_val_logits" in defects:
            predictor.val_logits = predictor.val_logits[::-1]  # another order than val's
        return predictor


@pytest.fixture
def sloppy(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Registered for this test only: the registry is a copy thrown away afterwards (taken
    once every built-in rung is in it, so none registers into the copy and is lost)."""
    base.strategy_names()
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register_strategy("sloppy", config=SloppyConfig, predictor=SloppyPredictor, cost_rank=99)(
        SloppyStrategy
    )
    yield "sloppy"


def test_a_rung_that_keeps_its_promises_passes_every_check(sloppy: str) -> None:
    report = check_strategy(sloppy)
    assert report.passed, str(report)
    assert [c.status for c in report.checks] == ["passed"] * len(report.checks)
    assert {c.name for c in report.checks} >= {
        "registered",
        "config",
        "fit",
        "labels",
        "predict_proba",
        "logits",
        "learns",
        "empty_input",
        "odd_texts",
        "batch_invariance",
        "capabilities",
        "deterministic",
        "bundle_roundtrip",
        "no_pickles",
        "bundle_edge_inputs",
    }
    assert report.batch_max_diff is not None and report.batch_max_diff <= 1e-6
    assert report.determinism_max_diff == 0.0
    # the Registered entry works as well as its name
    assert check_strategy(get_strategy(sloppy)).passed


@pytest.mark.parametrize(
    ("defect", "failed"),
    [
        ("batch_dependent", {"batch_invariance"}),
        ("pickle", {"no_pickles", "bundle_roundtrip"}),  # the bundle writer refuses it too
        ("unseeded", {"deterministic"}),
        ("empty_crash", {"empty_input", "bundle_edge_inputs"}),
        ("reversed_labels", {"labels"}),
        ("unnormalized_embed", {"capabilities"}),
        ("wrong_val_logits", {"capabilities"}),
    ],
)
def test_each_defect_fails_exactly_its_check(sloppy: str, defect: str, failed: set[str]) -> None:
    options = {"defects": [defect], "capable": True}
    report = check_strategy(sloppy, options=options, raise_on_failure=False)
    assert {c.name for c in report.failures} == failed, str(report)


def test_capabilities_a_predictor_claims_are_checked(sloppy: str) -> None:
    assert check_strategy(sloppy).capabilities == []
    report = check_strategy(sloppy, options={"capable": True})
    assert report.capabilities == ["FitReport", "val_logits", "Embedder"]
    assert report.check("capabilities").detail == "FitReport, val_logits, Embedder"


def test_every_failure_is_listed_at_once_with_the_rung_and_check_named(sloppy: str) -> None:
    defects = ["batch_dependent", "pickle", "empty_crash"]
    with pytest.raises(StrategyCheckError) as caught:
        check_strategy(sloppy, options={"defects": defects})
    message = str(caught.value)
    assert message.startswith("strategy 'sloppy' fails 4 of 16 checks:")
    for check in ("batch_invariance", "no_pickles", "empty_input", "bundle_roundtrip"):
        assert f"[sloppy] {check}: " in message
    assert "state.bin" in message  # found by content, whatever the file's name
    assert "IndexError: no texts" in message
    assert isinstance(caught.value, AssertionError)
    assert not caught.value.report.passed


def test_a_fit_that_crashes_fails_and_skips_what_needs_a_model(sloppy: str) -> None:
    report = check_strategy(sloppy, options={"defects": ["crash"]}, raise_on_failure=False)
    assert [c.name for c in report.failures] == ["fit"]
    assert "RuntimeError: out of memory" in report.check("fit").detail
    skipped = {c.name for c in report.checks if c.status == "skipped"}
    assert {"batch_invariance", "bundle_roundtrip", "no_pickles"} <= skipped
    assert "fit failed" in report.check("batch_invariance").detail


def test_a_rung_may_decline_the_determinism_check(sloppy: str) -> None:
    report = check_strategy(sloppy, options={"defects": ["unseeded"]}, deterministic=False)
    assert report.check("deterministic").status == "skipped"


def test_the_given_data_and_tolerance_are_used(sloppy: str) -> None:
    train, val, test = demo_splits(seed=1)
    report = check_strategy(
        sloppy,
        train,
        val,
        test=test,
        options={"defects": ["batch_dependent"]},
        tolerance=10.0,  # anything goes: a batch statistic moves a probability by < 1
    )
    assert report.passed and report.batch_max_diff is not None and report.batch_max_diff > 1e-3
    assert report.check("fit").detail.endswith(f"on {len(train)} + {len(val)} examples")
    with pytest.raises(ValueError, match="pass both train and val"):
        check_strategy(sloppy, train)


def test_odd_texts_cover_what_breaks_tokenizers() -> None:
    assert "" in ODD_TEXTS and any(len(t.split()) > 512 for t in ODD_TEXTS)
    assert any(not t.isascii() for t in ODD_TEXTS)


def test_a_rung_without_onnx_export_ships_uncompressed_with_a_note(
    sloppy: str, tmp_path: Path
) -> None:
    import frugalml
    from frugalml.data import DEMO_INTENTS

    result = frugalml.fit(DEMO_INTENTS, out=tmp_path / "run", strategies=[sloppy], ship="int8")
    assert any("shipped uncompressed: a 'sloppy' model" in note for note in result.notes)
    assert result.bundle.manifest.strategy == sloppy
    assert result.bundle.manifest.predictor.get("format", "native") == "native"
