"""Bundles load only when intact: schema, files and checksums are verified before any weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from frugalml import load
from frugalml.bundle import MANIFEST, save_bundle
from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.split import Splits
from frugalml.errors import BundleError
from frugalml.strategies.tfidf import TfidfConfig, TfidfStrategy


@pytest.fixture
def bundle_dir(demo_splits: Splits, tmp_path: Path) -> Path:
    with CostMeter() as meter:
        predictor = TfidfStrategy(TfidfConfig()).fit(
            demo_splits.train, demo_splits.val, budget=Budget(), meter=meter
        )
    return save_bundle(
        tmp_path / "bundle",
        predictor,
        strategy="tfidf",
        config={},
        task="text-classification",
        data_fingerprint="abc",
    )


def manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def test_manifest_lists_every_file_with_sha256_and_no_pickles(bundle_dir: Path) -> None:
    m = manifest(bundle_dir)
    on_disk = {
        p.relative_to(bundle_dir).as_posix()
        for p in bundle_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }
    assert set(m["files"]) == on_disk
    assert all(len(d) == 64 for d in m["files"].values())
    assert all(p.endswith((".json", ".safetensors")) for p in on_disk)
    assert m["schema_version"] == 1 and m["strategy"] == "tfidf" and len(m["labels"]) == 14


def test_round_trip_reproduces_predictions_exactly(bundle_dir: Path, demo_splits: Splits) -> None:
    first, second = load(bundle_dir), load(bundle_dir)
    texts = list(demo_splits.test.texts)
    np.testing.assert_array_equal(first.predict_proba(texts), second.predict_proba(texts))
    record = first.predict(texts[:1])[0]
    assert record["label"] in first.labels
    assert sum(record["probabilities"].values()) == pytest.approx(1.0)


def test_tampered_weights_are_refused(bundle_dir: Path) -> None:
    head = bundle_dir / "model" / "head.safetensors"
    data = bytearray(head.read_bytes())
    data[-1] ^= 0xFF
    head.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model/head.safetensors does not match its sha256"):
        load(bundle_dir)


def test_missing_file_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "model" / "vocab_0.json").unlink()
    with pytest.raises(BundleError, match=r"model/vocab_0.json is missing"):
        load(bundle_dir)


def test_planted_pickle_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "model" / "evil.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(BundleError, match=r"evil.pkl is a pickle-like file the manifest does not"):
        load(bundle_dir)


def test_unknown_schema_version_is_refused(bundle_dir: Path) -> None:
    m = manifest(bundle_dir)
    m["schema_version"] = 99
    (bundle_dir / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"schema version 99 is not supported.*reads version 1"):
        load(bundle_dir)


def test_broken_or_missing_manifest_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    (bundle_dir / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="is not valid JSON"):
        load(bundle_dir)
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_unknown_strategy_in_manifest_is_refused(bundle_dir: Path) -> None:
    m = manifest(bundle_dir)
    m["strategy"] = "tfdif"
    (bundle_dir / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"unknown strategy 'tfdif'.*did you mean 'tfidf'"):
        load(bundle_dir)


def test_saving_never_overwrites(bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(
            bundle_dir,
            load(bundle_dir).predictor,
            strategy="tfidf",
            config={},
            task="text-classification",
            data_fingerprint="abc",
        )
    assert load(bundle_dir).manifest["data_fingerprint"] == "abc"
