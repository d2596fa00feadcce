"""The compression chain on a tiny fine-tuned BERT: ONNX parity and fusions, int8, the
accuracy gate's fallback, torch-free serving, and the `fit --ship` / `compress` entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import frugalml
from frugalml.data.split import Splits
from frugalml.errors import ConfigError
from frugalml.ship.compress import CompressResult, compress
from tests.conftest import labels_in_a_process_without

pytest.importorskip("onnxruntime")

# The random 16-wide BERT needs high learning rates to learn anything in a few epochs.
TEACHER = {"backbone": None, "train": {"epochs": 10, "lr": 5e-3, "head_lr": 2e-2, "batch_size": 16}}


class Chain(NamedTuple):
    source: Path
    result: CompressResult
    steps: Path  # every step's bundle, kept


@pytest.fixture(scope="module")
def teacher_run(
    demo_splits: Splits, tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory
) -> frugalml.FitResult:
    options = {"full": {**TEACHER, "backbone": str(tiny_backbone)}}
    root = tmp_path_factory.mktemp("teacher")
    return frugalml.fit(
        demo_splits.train, out=root / "run", strategies=["full"], options=options, ship="none"
    )


@pytest.fixture(scope="module")
def int8_chain(
    teacher_run: frugalml.FitResult, demo_splits: Splits, tmp_path_factory: pytest.TempPathFactory
) -> Chain:
    root = tmp_path_factory.mktemp("chain")
    source = teacher_run.run_dir / "candidates" / "full"
    result = compress(
        source,
        demo_splits.train,
        demo_splits.val,
        root / "shipped",
        to="int8",
        keep_steps=root / "steps",
    )
    return Chain(source, result, root / "steps")


def steps(result: CompressResult) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in result.to_dict()["steps"]}


def test_onnx_matches_pytorch_and_every_layer_fused(int8_chain: Chain, demo_splits: Splits) -> None:
    onnx = steps(int8_chain.result)["onnx"]
    assert onnx["parity"]["max_abs_logit_diff"] < 1e-4
    assert onnx["parity"]["same_labels"] == 1.0
    assert onnx["fusions"] == {
        "layers": 2,
        "attention": 2,  # one fused Attention per layer
        "skip_layer_norm": 4,  # two per layer
        "other": onnx["fusions"]["other"],
        "complete": True,
    }
    texts = list(demo_splits.train.texts) + list(demo_splits.val.texts)
    torch_labels = frugalml.load(int8_chain.source).predict_proba(texts).argmax(1)
    onnx_bundle = frugalml.load(int8_chain.steps / "onnx")
    assert onnx_bundle.manifest.predictor["format"] == "onnx"
    np.testing.assert_array_equal(onnx_bundle.predict_proba(texts).argmax(1), torch_labels)


def test_int8_is_smaller_and_ships_when_within_the_allowed_drop(int8_chain: Chain) -> None:
    by_name = steps(int8_chain.result)
    assert by_name["int8"]["size_mb"] < by_name["onnx"]["size_mb"]
    assert all(s["accepted"] for s in by_name.values())  # the tiny model loses nothing here
    assert max(by_name["int8"]["drop_points"].values()) <= 1.0
    assert int8_chain.result.shipped.name == "int8"
    manifest = json.loads((int8_chain.result.bundle / "manifest.json").read_text())
    assert manifest["predictor"]["precision"] == "int8"
    assert manifest["compression"]["shipped"] == "int8"
    assert manifest["speed"] == by_name["int8"]["speed"]  # re-measured on the shipped model


def test_a_step_that_loses_too_much_is_rejected_and_the_previous_one_ships(
    teacher_run: frugalml.FitResult,
    demo_splits: Splits,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import frugalml.ship.distill

    real = frugalml.ship.distill.distill

    def broken_student(*args: Any, **kwargs: Any) -> Any:
        """A real student whose head then always answers the first class: a lossy step."""
        student = real(*args, **kwargs)
        student.head.coef[:] = 0.0
        student.head.intercept[:] = 0.0
        student.head.intercept[0] = 1.0
        return student

    monkeypatch.setattr(frugalml.ship.distill, "distill", broken_student)
    result = compress(
        teacher_run.run_dir / "candidates" / "full",
        demo_splits.train,
        demo_splits.val,
        tmp_path / "shipped",
        to="distilled",
        max_drop=1.0,
    )
    distilled = steps(result)["distilled"]
    assert not distilled["accepted"]
    assert max(distilled["drop_points"].values()) > 1.0
    assert distilled["reason"].startswith("rejected: loses")
    assert result.shipped.name == "int8"
    shipped = frugalml.load(result.bundle)
    assert shipped.manifest.predictor["precision"] == "int8"
    assert shipped.manifest.predictor["fusions"]["layers"] == 2  # the teacher, not the student


def test_a_bundle_and_its_int8_export_embed_texts_alike(
    int8_chain: Chain, demo_splits: Splits
) -> None:
    texts = list(demo_splits.val.texts)
    torch_bundle, int8 = frugalml.load(int8_chain.source), frugalml.load(int8_chain.result.bundle)
    assert int8.manifest.predictor["precision"] == "int8"
    cosine = (torch_bundle.embed(texts) * int8.embed(texts)).sum(axis=1)  # unit rows
    assert cosine.min() > 0.99


def test_compress_asks_the_model_to_export_itself_and_refuses_one_that_cannot(
    demo_splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from frugalml.strategies.tfidf import TfidfPredictor

    run = frugalml.fit(demo_splits.train, out=tmp_path / "run", strategies=["tfidf"], ship="none")
    source = run.run_dir / "candidates" / "tfidf"
    asked: list[str] = []
    export = TfidfPredictor.export_onnx

    def recorded(self: TfidfPredictor, folder: Path, *, precision: str = "fp32") -> Any:
        asked.append(precision)
        return export(self, folder, precision=precision)

    monkeypatch.setattr(TfidfPredictor, "export_onnx", recorded)
    result = compress(source, demo_splits.train, demo_splits.val, tmp_path / "onnx", to="int8")
    assert asked == ["fp32"]  # int8 is not among a TF-IDF model's `onnx_precisions`
    assert result.shipped.name == "onnx" and "int8" in result.skipped
    monkeypatch.delattr(TfidfPredictor, "export_onnx")
    with pytest.raises(ConfigError, match="cannot be exported to ONNX"):
        compress(source, demo_splits.train, demo_splits.val, tmp_path / "none", to="onnx")


def test_an_onnx_bundle_loads_and_predicts_without_torch_or_scikit_learn(
    int8_chain: Chain, demo_splits: Splits
) -> None:
    texts = list(demo_splits.val.texts[:20])
    expected = frugalml.load(int8_chain.result.bundle).predict_proba(texts).argmax(1).tolist()
    refused = ("torch", "transformers", "sklearn")
    assert labels_in_a_process_without(int8_chain.result.bundle, texts, refused) == expected


def test_session_tuning_sets_threads_and_spinning_of_encoders_loaded_after_it(
    int8_chain: Chain, demo_splits: Splits
) -> None:
    from frugalml.models.onnx_encoder import SessionTuning, tune_sessions

    texts = list(demo_splits.val.texts[:8])
    tune_sessions(SessionTuning())  # a server built by an earlier test tuned the process
    default = frugalml.load(int8_chain.result.bundle)
    tune_sessions(SessionTuning(threads=1, spinning=False))
    try:
        tuned = frugalml.load(int8_chain.result.bundle)
    finally:
        tune_sessions(SessionTuning())
    options = tuned.predictor.encoder.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    untouched = default.predictor.encoder.session.get_session_options()
    assert untouched.intra_op_num_threads == 0  # ONNX Runtime's own default: one per core
    np.testing.assert_allclose(tuned.predict_proba(texts), default.predict_proba(texts), atol=1e-6)


def test_fit_ships_int8_by_default_for_a_transformer_rung(
    small_csv: Path, tmp_path: Path, tiny_backbone: Path
) -> None:
    result = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        strategies=["full"],
        options={"full": {**TEACHER, "backbone": str(tiny_backbone)}},
    )
    assert result.bundle.manifest.predictor["precision"] == "int8"
    report = json.loads(result.report_json.read_text())
    assert report["compression"]["shipped"] == "int8"
    assert [s["name"] for s in report["compression"]["steps"]] == ["source", "onnx", "int8"]
    # the uncompressed candidate stays, for comparison and for compressing differently later
    assert (
        frugalml.load(result.run_dir / "candidates" / "full").manifest.predictor.get("format")
        is None
    )


def test_compress_command_finds_the_run_data_and_never_overwrites(
    small_csv: Path, tmp_path: Path, tiny_backbone: Path
) -> None:
    run = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        strategies=["full"],
        options={"full": {**TEACHER, "backbone": str(tiny_backbone)}},
        ship="none",
    )
    assert run.bundle.manifest.predictor.get("format") is None
    source = run.run_dir / "candidates" / "full"
    out = tmp_path / "onnx-bundle"
    command = [sys.executable, "-m", "frugalml", "compress", str(source), "--to", "onnx"]
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "shipped: onnx" in done.stdout
    assert frugalml.load(out).manifest.predictor["precision"] == "fp32"
    again = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_hybrid_exports_its_encoder_and_its_ngrams(
    demo_splits: Splits, tiny_backbone: Path, tmp_path: Path
) -> None:
    run = frugalml.fit(
        demo_splits.train,
        out=tmp_path / "run",
        strategies=["hybrid"],
        options={"hybrid": {"backbone": str(tiny_backbone)}},
        ship="none",
    )
    source = run.run_dir / "candidates" / "hybrid"
    result = compress(source, demo_splits.train, demo_splits.val, tmp_path / "out", to="distilled")
    by_name = steps(result)
    assert list(by_name) == ["source", "onnx", "int8"]
    assert "distilled" in result.skipped
    assert by_name["onnx"]["parity"]["max_abs_logit_diff"] < 1e-4
    texts = list(demo_splits.val.texts)
    shipped = frugalml.load(result.bundle)
    assert shipped.manifest.strategy == "hybrid"
    assert type(shipped.predictor).__name__ == "HybridPredictor"
    assert type(shipped.predictor.encoder).__name__ == "OnnxEncoder"  # type: ignore[attr-defined]
    assert type(shipped.predictor.ngrams).__name__ == "OnnxNgramFeatures"  # type: ignore[attr-defined]
    assert not any(name.startswith("model/vocab_") for name in shipped.manifest.files)
    labels = shipped.predict_proba(texts).argmax(1)
    agree = labels == frugalml.load(source).predict_proba(texts).argmax(1)
    assert agree.mean() >= 0.95
    refused = ("torch", "transformers", "sklearn")
    assert labels_in_a_process_without(result.bundle, texts, refused) == labels.tolist()


def test_fit_ships_a_tfidf_model_as_onnx_and_says_why_int8_is_skipped(
    small_csv: Path, tmp_path: Path
) -> None:
    result = frugalml.fit(small_csv, out=tmp_path / "run", strategies=["tfidf"])  # --ship int8
    spec = result.bundle.manifest.predictor
    assert (spec["format"], spec["precision"]) == ("onnx", "fp32")
    assert spec["parity"]["max_abs_logit_diff"] < 1e-4 and spec["parity"]["same_labels"] == 1.0
    compression = json.loads(result.report_json.read_text())["compression"]
    assert compression["shipped"] == "onnx"
    assert [s["name"] for s in compression["steps"]] == ["source", "onnx"]
    assert compression["skipped"]["int8"].startswith("nothing to quantize")
    candidate = frugalml.load(result.run_dir / "candidates" / "tfidf")
    assert candidate.manifest.predictor.get("format") is None  # kept as scikit-learn
    assert not result.notes


def test_compress_command_exports_a_tfidf_bundle(small_csv: Path, tmp_path: Path) -> None:
    run = frugalml.fit(small_csv, out=tmp_path / "run", strategies=["tfidf"], ship="none")
    source = run.run_dir / "candidates" / "tfidf"
    out = tmp_path / "tfidf-onnx"
    command = [sys.executable, "-m", "frugalml", "compress", str(source), "--to", "distilled"]
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "shipped: onnx" in done.stdout
    assert "skip int8: nothing to quantize" in done.stderr
    assert "skip distilled: a 'tfidf' model has no encoder to distill" in done.stderr
    bundle = frugalml.load(out)
    assert bundle.manifest.compression["skipped"].keys() == {"int8", "distilled"}
    twice = [sys.executable, "-m", "frugalml", "compress", str(out), "--data", str(small_csv)]
    again = subprocess.run([*twice, "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert again.returncode == 2
    assert "already exported to ONNX" in again.stderr


@pytest.mark.slow  # 2 gloo ranks: ~10 s; test_scale keeps `full` on two ranks fast
def test_compress_distills_on_two_ranks_and_its_card_counts_both(
    teacher_run: frugalml.FitResult, demo_splits: Splits, tmp_path: Path
) -> None:
    pytest.importorskip("torch.distributed")
    from frugalml.config import Scale

    result = compress(
        teacher_run.run_dir / "candidates" / "full",
        demo_splits.train,
        demo_splits.val,
        tmp_path / "shipped",
        to="distilled",
        max_drop=100.0,  # any student ships: this is about where and how it trained
        scale=Scale(nproc=2),
    )
    distilled = steps(result)["distilled"]
    assert distilled["cost"]["processes"] == 2
    assert distilled["cost"]["cpu_s"] >= distilled["cost"]["extra"]["ranks_cpu_s"] > 0
    assert result.shipped.name == "distilled"
    model = frugalml.load(tmp_path / "shipped")
    assert model.manifest.compression["steps"][-1]["cost"]["processes"] == 2
    assert model.predict_proba(["card lost"]).shape == (1, len(demo_splits.train.labels))
    # Rank 0 alone saved the student; the chain's working folder is gone.
    assert [p.name for p in tmp_path.iterdir()] == ["shipped"]


def test_compress_command_checks_nproc_and_refuses_to_run_under_torchrun(
    tmp_path: Path,
) -> None:
    import os

    command = [sys.executable, "-m", "frugalml", "compress", str(tmp_path), "--nproc", "0"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2 and "--nproc" in done.stderr
    env = {**os.environ, "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}
    done = subprocess.run(command[:-2], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "does not run under torchrun" in done.stderr
