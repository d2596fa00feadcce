"""Bundles load only when intact: schema, files and checksums are verified before any weights."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frugalml import load
from frugalml.bundle import MANIFEST, SCHEMA_VERSION, read_manifest, save_bundle, update_manifest
from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.split import Splits
from frugalml.errors import BundleError, CapabilityError, ConfigError
from frugalml.strategies.tfidf import TfidfConfig, TfidfStrategy
from frugalml.types import parse_manifest
from tests.conftest import reseal


def make_bundle(splits: Splits, folder: Path, *, labels: tuple[str, ...] | None = None) -> Path:
    """A TF-IDF bundle saved through the public path; `labels` replaces the predictor's."""
    with CostMeter() as meter:
        predictor = TfidfStrategy(TfidfConfig()).fit(
            splits.train, splits.val, budget=Budget(), meter=meter
        )
    if labels is not None:
        predictor.labels = labels
    return save_bundle(
        folder,
        predictor,
        strategy="tfidf",
        config={},
        task="text-classification",
        data_fingerprint="abc",
    )


@pytest.fixture
def bundle_dir(demo_splits: Splits, tmp_path: Path) -> Path:
    return make_bundle(demo_splits, tmp_path / "bundle")


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
    assert m["schema_version"] == SCHEMA_VERSION == 2
    assert m["strategy"] == "tfidf" and len(m["labels"]) == 14
    assert m["metrics"] is None and m["speed"] is None  # every field is written, absent as null


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
    with pytest.raises(
        BundleError, match=r"schema version 99 is not supported.*reads versions 1, 2"
    ):
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
    reseal(bundle_dir, strategy="tfdif")  # as a frugalml with a rung this one lacks wrote it
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
    assert load(bundle_dir).manifest.data_fingerprint == "abc"


# -- the manifest's schema ------------------------------------------------------------------
def edit(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    m = manifest(folder)
    change(m)
    (folder / MANIFEST).write_text(json.dumps(m))


def drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.pop(key)


def put(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.__setitem__(key, value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (put("files", ["model/head.safetensors"]), "files: expected a JSON object; got a list ["),
        (drop("labels"), "labels: required, but missing"),
        (drop("predictor"), "predictor: required, but missing"),
        (put("labels", "refund"), 'labels: expected a list; got a string "refund"'),
        (put("labels", ["a", "b", "a"]), "labels: expected distinct labels; ['a'] appear"),
        (put("labels", []), "labels: expected at least 1 item, not 0; got a list []"),
        (put("predictor", 3), "predictor: expected a JSON object; got an integer 3"),
        (put("strategy", 7), "strategy: expected a valid string; got an integer 7"),
        (put("created", "yesterday"), "created: expected a valid datetime"),
        (put("speed", {"latency_p50_ms": "fast"}), "speed.latency_p50_ms: expected a valid number"),
        (put("speed", {"latency_p50_ms": 1.0}), "speed.latency_p95_ms: required, but missing"),
        (put("temprature", 1e9), "temprature: not a known field"),
        (put("sizes", {"model/x.json": 1}), "sizes must list exactly the paths of files"),
        (put("digest", "abc"), "digest: expected a sha256 digest"),
        (put("signature", {"scheme": "rsa"}), "signature.scheme: expected 'hmac-sha256'"),
        (
            lambda m: m["files"].__setitem__("model/head.safetensors", "abc"),
            "files.model/head.safetensors: expected a sha256 digest",
        ),
    ],
)
def test_an_invalid_manifest_is_refused_with_the_field_and_what_was_expected(
    bundle_dir: Path, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    edit(bundle_dir, change)
    with pytest.raises(BundleError) as refused:
        load(bundle_dir)
    assert "does not match the manifest schema (version 2)" in str(refused.value)
    assert expected in str(refused.value)
    assert "re-export the bundle" in str(refused.value)


def test_every_problem_of_a_manifest_is_reported_at_once(bundle_dir: Path) -> None:
    edit(bundle_dir, lambda m: [m.pop("labels"), m.pop("predictor"), m.update(files=[])])
    with pytest.raises(BundleError) as refused:
        read_manifest(bundle_dir)
    problems = refused.value.problems
    assert problems[:3] == [
        "labels: required, but missing",
        "predictor: required, but missing",
        "files: expected a JSON object; got a list []",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (put("schema_version", "2"), "schema version '2' is not supported"),
        (put("schema_version", None), "schema version None is not supported"),
        (drop("schema_version"), "has no schema version"),
    ],
)
def test_a_manifest_without_a_known_version_is_refused(
    bundle_dir: Path, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    edit(bundle_dir, change)
    with pytest.raises(BundleError, match=re.escape(expected)):
        load(bundle_dir)


def test_a_manifest_that_is_not_an_object_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST).write_text("[1, 2]")
    with pytest.raises(BundleError, match="must hold a JSON object"):
        load(bundle_dir)


def test_info_on_a_broken_manifest_exits_2_with_the_field(bundle_dir: Path) -> None:
    edit(bundle_dir, lambda m: [m.pop("labels"), m.update(files=["model/head.safetensors"])])
    done = subprocess.run(
        [sys.executable, "-m", "frugalml", "info", str(bundle_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "labels: required, but missing" in done.stderr
    assert "files: expected a JSON object; got a list" in done.stderr
    assert "Traceback" not in done.stderr


# A manifest as frugalml 0.1.0 wrote it (schema 1): RUN_DIR/candidates/tfidf/manifest.json of
# `frugalml.fit(DEMO_INTENTS, strategies=["tfidf"])`, verbatim but for the per-class rows and
# the confusion matrix, cut to two classes to keep this short.
V1_CANDIDATE: dict[str, Any] = {
    "schema_version": 1,
    "frugalml_version": "0.1.0",
    "created": "2026-12-01T22:20:29+00:00",
    "task": "text-classification",
    "strategy": "tfidf",
    "config": {
        "kind": "tfidf",
        "word_ngrams": [1, 2],
        "char_ngrams": [2, 5],
        "char_min_df": 2,
        "C": 10.0,
        "class_weight": "balanced",
    },
    "labels": [
        "account_balance",
        "activate_card",
        "atm_cash_not_received",
        "card_lost_or_stolen",
        "card_not_arrived",
        "card_payment_declined",
        "change_pin",
        "close_account",
        "direct_debit_cancel",
        "refund_not_showing",
        "top_up_failed",
        "transfer_failed",
        "transfer_pending",
        "wrong_exchange_rate",
    ],
    "predictor": {
        "vectorizers": [
            {
                "analyzer": "word",
                "ngram_range": [1, 2],
                "lowercase": True,
                "sublinear_tf": True,
                "norm": "l2",
                "smooth_idf": True,
            },
            {
                "analyzer": "char_wb",
                "ngram_range": [2, 5],
                "lowercase": True,
                "sublinear_tf": True,
                "norm": "l2",
                "smooth_idf": True,
            },
        ],
        "temperature": 0.3592921795969018,
    },
    "data_fingerprint": "b9a714383cc3b02d3c1cb092c056e022728c033c43905029e3e1b9778174362d",
    "train_cost": {
        "wall_s": 0.2773664309999049,
        "cpu_s": 0.2799999999999998,
        "peak_rss_mb": 281.4140625,
        "energy_kwh": 7.777777777777773e-07,
        "energy_source": "estimate(10 W per busy core)",
        "usd": 7.396438159997464e-06,
        "price_basis": "2 vCPU on-demand VM at $0.096/h",
        "device_s": None,
        "peak_device_mb": None,
        "flops": None,
        "extra": {},
    },
    "files": {
        "model/head.safetensors": "36f90683a00563d83c7fcc110d5b2a88"
        "8a139b55a0869122f79b5f9aa52c22d1",
        "model/idf.safetensors": "bf348caa485da7f7cdcb09cc78ddf694d53a318bf6541c3bbb908f19e7f2a306",
        "model/vocab_0.json": "1b8be1c8819b1dd850fdf8186049f1e02650a1a610480c9b1f2b358d6e50670a",
        "model/vocab_1.json": "07f29755594f4c01921846181429660b0b7893260d292bd89e18809b51535013",
    },
    "metrics": {
        "val": {
            "n": 84,
            "accuracy": 0.9404761904761905,
            "accuracy_ci": [0.8809523809523809, 0.9880952380952381],
            "macro_f1": 0.9422577422577422,
            "macro_f1_ci": [0.8780973639455782, 0.9855699855699855],
            "per_class": {
                "account_balance": {
                    "precision": 1.0,
                    "recall": 0.8333333333333334,
                    "f1": 0.9090909090909091,
                    "support": 6,
                },
                "activate_card": {
                    "precision": 1.0,
                    "recall": 0.8333333333333334,
                    "f1": 0.9090909090909091,
                    "support": 6,
                },
            },
            "confusion": [[5, 0], [0, 5]],
        },
        "test": None,
        "val_ece": 0.0512,
    },
    "speed": {
        "latency_p50_ms": 1.4062044999718637,
        "latency_p95_ms": 1.4941555000291373,
        "throughput_per_s": 7139.522643150209,
        "throughput_batch": 32,
    },
    "forecast": {
        "wall_s": 1.5571449139999913,
        "cpu_s": 1.5400000000000003,
        "basis": "fit on 392 of 392 examples, scaled linearly",
        "usd": 4.1523864373333104e-05,
        "took_s": 1.5583273500000132,
    },
    "stopped": "",
}


def test_a_schema_1_manifest_migrates_field_for_field() -> None:
    m = parse_manifest(V1_CANDIDATE)
    assert m.schema_version == 2
    written = m.to_json()
    for key, value in V1_CANDIDATE.items():
        if key == "created":
            assert m.created == datetime.fromisoformat(value)
        elif key == "train_cost":  # cards gained a defaulted field since schema 1
            assert written[key] == {**value, "processes": 1}
        elif key == "speed":  # CPU per text is recorded since issue 18; older speed has none
            assert written[key] == {**value, "cpu_ms_per_text": None}
        elif key != "schema_version":
            assert written[key] == value, key
    assert written["compression"] is None and written["compress_cost"] is None  # new as null
    assert parse_manifest(written) == m  # and what it writes reads back the same


def test_a_schema_1_bundle_loads_predicts_and_is_rewritten_as_2_when_updated(
    bundle_dir: Path, demo_splits: Splits, tmp_path: Path
) -> None:
    texts = list(demo_splits.test.texts)
    expected = load(bundle_dir).predict_proba(texts)
    # The schema-1 document, its file digests those of the weights beside it.
    v1 = {**V1_CANDIDATE, "files": manifest(bundle_dir)["files"]}
    v1["predictor"] = {**v1["predictor"], "temperature": 1.0}  # as the weights were saved
    (bundle_dir / MANIFEST).write_text(json.dumps(v1, indent=2))
    before = (bundle_dir / MANIFEST).read_bytes()
    bundle = load(bundle_dir)
    np.testing.assert_array_equal(bundle.predict_proba(texts), expected)
    assert bundle.manifest.schema_version == 2 and bundle.manifest.metrics is not None
    assert bundle.manifest.metrics.val["accuracy"] == V1_CANDIDATE["metrics"]["val"]["accuracy"]
    assert (bundle_dir / MANIFEST).read_bytes() == before  # loading never writes
    from frugalml.ladder.run import _finished

    reused = _finished(bundle_dir)  # a run resumed across versions reuses the finished rung
    assert reused is not None and reused.speed.throughput_batch == 32
    update_manifest(bundle_dir, stopped="deadline")
    assert manifest(bundle_dir)["schema_version"] == 2
    assert manifest(bundle_dir)["metrics"] == V1_CANDIDATE["metrics"]


def test_embedding_needs_a_model_with_an_encoder(bundle_dir: Path) -> None:
    bundle = load(bundle_dir)
    with pytest.raises(CapabilityError, match="'tfidf' model, which cannot embed texts") as err:
        bundle.embed(["my card never arrived"])
    assert "frozen_probe" in str(err.value)  # says which bundles can


def test_an_encoder_bundle_embeds_unit_vectors_that_survive_the_round_trip(
    demo_splits: Splits, tiny_backbone: Path, tmp_path: Path
) -> None:
    from frugalml.strategies.frozen_probe import FrozenProbeConfig, FrozenProbeStrategy

    strategy = FrozenProbeStrategy(FrozenProbeConfig(backbone=str(tiny_backbone), cache=False))
    with CostMeter() as meter:
        predictor = strategy.fit(demo_splits.train, demo_splits.val, budget=Budget(), meter=meter)
    folder = save_bundle(
        tmp_path / "bundle",
        predictor,
        strategy="frozen_probe",
        config={},
        task="text-classification",
        data_fingerprint="abc",
    )
    texts = list(demo_splits.test.texts[:12])
    vectors = load(folder).embed(texts)
    assert vectors.shape == (12, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors, predictor.embed(texts), atol=1e-6)
    # the same text embeds the same wherever it stands in a batch
    np.testing.assert_allclose(load(folder).embed(texts[3:4])[0], vectors[3], atol=1e-5)
    # logits and vectors from one pass equal each on its own; probabilities are calibrated logits
    bundle = load(folder)
    logits, joint = bundle.logits_and_embed(texts)
    np.testing.assert_allclose(joint, vectors, atol=1e-6)
    np.testing.assert_allclose(logits, bundle.logits(texts), atol=1e-5)
    scaled = np.exp(logits / bundle.temperature)
    np.testing.assert_allclose(
        scaled / scaled.sum(1, keepdims=True), bundle.predict_proba(texts), atol=1e-5
    )


def test_a_model_without_an_encoder_gives_logits_but_no_joint_pass(bundle_dir: Path) -> None:
    bundle = load(bundle_dir)
    assert bundle.logits(["my card never arrived"]).shape == (1, len(bundle.labels))
    with pytest.raises(CapabilityError, match="cannot embed texts"):
        bundle.logits_and_embed(["my card never arrived"])


# -- a tamper-evident manifest ---------------------------------------------------------------
def swap_two_labels(m: dict[str, Any]) -> None:
    m["labels"][0], m["labels"][1] = m["labels"][1], m["labels"][0]


def set_temperature(m: dict[str, Any]) -> None:
    m["predictor"]["temperature"] = 1e9


@pytest.mark.parametrize(
    "change", [swap_two_labels, set_temperature, put("data_fingerprint", "abd")]
)
def test_any_edit_to_the_manifest_is_refused(
    bundle_dir: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    edit(bundle_dir, change)
    with pytest.raises(BundleError, match=r"manifest\.json was changed after it was written"):
        load(bundle_dir)


def test_the_digest_covers_content_not_layout(bundle_dir: Path) -> None:
    edit(bundle_dir, lambda m: None)  # the same manifest, written without indentation
    assert load(bundle_dir).manifest.data_fingerprint == "abc"


def test_the_version_is_the_digest_of_the_manifest_and_every_file(bundle_dir: Path) -> None:
    before = load(bundle_dir)
    assert before.version == manifest(bundle_dir)["digest"][:12]
    update_manifest(bundle_dir, stopped="deadline")  # no file changes, the manifest does
    after = load(bundle_dir)
    assert after.manifest.files == before.manifest.files
    assert after.version != before.version
    assert "sha256 of 4 files and the manifest verified" in after.integrity.describe()
    assert "not signed" in after.integrity.describe()


def test_labels_that_do_not_match_the_models_outputs_are_refused(
    demo_splits: Splits, tmp_path: Path
) -> None:
    short = demo_splits.train.labels[:-1]  # saved through the public path: digests all valid
    folder = make_bundle(demo_splits, tmp_path / "short", labels=short)
    with pytest.raises(BundleError, match="labels and model do not match"):
        load(folder)


SIGNING_KEY = "FRUGALML_SIGNING_KEY"


def test_a_signed_bundle_loads_only_with_its_key(
    demo_splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unsigned = make_bundle(demo_splits, tmp_path / "unsigned")
    monkeypatch.setenv(SIGNING_KEY, "correct horse battery staple")
    signed = make_bundle(demo_splits, tmp_path / "signed")
    assert manifest(signed)["signature"]["scheme"] == "hmac-sha256"
    says = load(signed).integrity.describe()
    assert "signed with the HMAC-SHA256 key in $FRUGALML_SIGNING_KEY" in says
    with pytest.raises(BundleError, match=r"is not signed.*FRUGALML_SIGNING_KEY is set"):
        load(unsigned)
    monkeypatch.setenv(SIGNING_KEY, "another key of enough length")
    with pytest.raises(BundleError, match="signature does not match"):
        load(signed)
    monkeypatch.delenv(SIGNING_KEY)
    says = load(signed).integrity.describe()
    assert "signature not checked" in says and "set $FRUGALML_SIGNING_KEY" in says


def test_a_signed_bundle_edited_without_the_key_is_refused(
    demo_splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SIGNING_KEY, "correct horse battery staple")
    signed = make_bundle(demo_splits, tmp_path / "signed")
    raw = manifest(signed)
    swap_two_labels(raw)
    raw["digest"] = parse_manifest(raw).canonical_digest()  # recomputed, signature kept
    (signed / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="signature does not match"):
        load(signed)
    monkeypatch.delenv(SIGNING_KEY)
    reseal(signed)  # rewritten by frugalml without the key: the stale signature is dropped
    assert manifest(signed)["signature"] is None
    monkeypatch.setenv(SIGNING_KEY, "correct horse battery staple")
    with pytest.raises(BundleError, match="is not signed"):
        load(signed)


def test_a_short_signing_key_is_refused(
    demo_splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SIGNING_KEY, "secret")
    with pytest.raises(ConfigError, match=r"FRUGALML_SIGNING_KEY is 6 characters.*at least 16"):
        make_bundle(demo_splits, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_schema_1_bundle_loads_as_an_unsigned_legacy_bundle(bundle_dir: Path) -> None:
    v1 = {**V1_CANDIDATE, "files": manifest(bundle_dir)["files"]}
    v1["predictor"] = {**v1["predictor"], "temperature": 1.0}
    (bundle_dir / MANIFEST).write_text(json.dumps(v1))
    bundle = load(bundle_dir)
    says = bundle.integrity.describe()
    assert "sha256 of 4 files verified" in says and "unsigned legacy bundle" in says
    assert len(bundle.version) == 12  # still a digest of what was loaded


def test_edited_manifests_fail_info_and_predict_with_exit_2(bundle_dir: Path) -> None:
    edit(bundle_dir, swap_two_labels)
    for command in (["info"], ["predict", "--", "my card never arrived"]):
        done = subprocess.run(
            [sys.executable, "-m", "frugalml", command[0], str(bundle_dir), *command[1:]],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "manifest.json was changed after it was written" in done.stderr
        assert "Traceback" not in done.stderr


# -- file permissions ------------------------------------------------------------------------
@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    before = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(before)


def modes(folder: Path) -> dict[str, int]:
    return {
        p.relative_to(folder.parent).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [folder, *folder.rglob("*")]
    }


@pytest.mark.parametrize(
    ("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_bundle_files_take_the_umasks_permissions(
    demo_splits: Splits,
    tmp_path: Path,
    umask: Callable[[int], None],
    mask: int,
    file_mode: int,
    folder_mode: int,
) -> None:
    umask(mask)
    folder = make_bundle(demo_splits, tmp_path / "bundle")
    update_manifest(folder, stopped="deadline")
    expected = {
        name: folder_mode if (tmp_path / name).is_dir() else file_mode for name in modes(folder)
    }
    assert modes(folder) == expected


def test_a_bundle_saved_by_root_loads_as_another_user(
    demo_splits: Splits, umask: Callable[[int], None]
) -> None:
    """The documented image: saved as root, served as uid 10001. A forked child drops to that
    user (the interpreter may live under /root, which that user cannot enter); every module
    it needs is already imported, so it reads only the bundle."""
    if os.geteuid() != 0:
        pytest.skip("switching to another user (uid 10001) needs root")
    root = Path(tempfile.mkdtemp(prefix="frugalml-uid-"))  # tmp_path is private to root
    try:
        root.chmod(0o755)
        folder = make_bundle(demo_splits, root / "bundle")
        load(folder).predict(["my card never arrived"])  # imports done before the fork
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                os.setgroups([])
                os.setgid(10001)
                os.setuid(10001)
                load(folder).predict(["my card never arrived"])
                code = 0
            except BaseException as err:
                print(f"as uid {os.getuid()}: {err!r}", file=sys.stderr)
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        shutil.rmtree(root)
    assert os.waitstatus_to_exitcode(status) == 0, "uid 10001 could not load the bundle"


# -- what a bundle may hold ------------------------------------------------------------------
def test_a_listed_symlink_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "model" / "notes.txt").symlink_to("/etc/passwd")
    reseal(bundle_dir)  # listed, with the sha256 of what the link points to
    with pytest.raises(BundleError, match=r"model/notes\.txt is a symbolic link"):
        load(bundle_dir)


def test_a_linked_folder_is_refused_not_followed(bundle_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "extra.json").write_text("{}")
    (bundle_dir / "model" / "more").symlink_to(tmp_path / "elsewhere")
    reseal(bundle_dir)
    with pytest.raises(BundleError) as refused:
        load(bundle_dir)
    assert "model/more is a symbolic link" in str(refused.value)
    assert "model/more/extra.json" not in str(refused.value)


def test_a_fifo_is_refused_not_skipped(bundle_dir: Path) -> None:
    os.mkfifo(bundle_dir / "model" / "pipe.json")
    with pytest.raises(BundleError, match=r"model/pipe\.json is a named pipe \(FIFO\)"):
        load(bundle_dir)


def test_a_listed_pickle_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "model" / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    reseal(bundle_dir)
    with pytest.raises(BundleError, match=r"model/extra\.pkl is a \.pkl file, a type no predictor"):
        load(bundle_dir)


def test_an_unlisted_huge_file_is_refused_without_reading_it(bundle_dir: Path) -> None:
    with (bundle_dir / "model" / "big.safetensors").open("wb") as handle:
        handle.truncate(16 << 30)  # sparse: 16 GiB that take no disk, and a minute to hash
    started = time.perf_counter()
    with pytest.raises(BundleError, match=r"model/big\.safetensors is a file the manifest does"):
        load(bundle_dir)
    assert time.perf_counter() - started < 3


def test_a_listed_file_of_the_wrong_size_is_refused_without_reading_it(bundle_dir: Path) -> None:
    head = bundle_dir / "model" / "head.safetensors"
    size = head.stat().st_size
    os.truncate(head, 16 << 30)
    started = time.perf_counter()
    with pytest.raises(
        BundleError,
        match=rf"model/head\.safetensors is {16 << 30:,} bytes; the manifest says {size:,}",
    ):
        load(bundle_dir)
    assert time.perf_counter() - started < 3


# -- safetensors headers that lie ------------------------------------------------------------
def header_of(data: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("<Q", data[:8])
    return dict(json.loads(data[8 : 8 + length]))


def with_header(data: bytes, header: dict[str, Any]) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data[8 + length :]


def first_tensor(header: dict[str, Any]) -> str:
    return next(name for name in header if name != "__metadata__")


def offsets_beyond_the_file(data: bytes) -> bytes:
    header = header_of(data)
    header[first_tensor(header)]["data_offsets"][1] = 1 << 40
    return with_header(data, header)


def shape_larger_than_its_bytes(data: bytes) -> bytes:
    header = header_of(data)
    header[first_tensor(header)]["shape"] = [1 << 30, 1 << 30]
    return with_header(data, header)


@pytest.mark.parametrize(
    ("forge", "says"),
    [
        (lambda d: struct.pack("<Q", 1 << 62) + d[8:], "header length"),
        (lambda d: struct.pack("<Q", len(d)) + d[8:], "header length"),
        (lambda d: d[:5], "shorter than"),
        (lambda d: d[:8] + b"\xff" * (len(d) - 8), "header is not"),
        (offsets_beyond_the_file, "data_offsets"),
        (shape_larger_than_its_bytes, "shape"),
    ],
)
def test_a_safetensors_file_whose_header_lies_is_refused_by_name(
    bundle_dir: Path, forge: Callable[[bytes], bytes], says: str
) -> None:
    head = bundle_dir / "model" / "head.safetensors"
    head.write_bytes(forge(head.read_bytes()))
    reseal(bundle_dir)  # consistent checksums: the header itself is the lie
    with pytest.raises(BundleError) as refused:
        load(bundle_dir)
    assert "model/head.safetensors" in str(refused.value)
    assert says in str(refused.value)


def test_info_on_a_lying_safetensors_header_exits_2(bundle_dir: Path) -> None:
    head = bundle_dir / "model" / "head.safetensors"
    head.write_bytes(struct.pack("<Q", 1 << 62) + head.read_bytes()[8:])
    reseal(bundle_dir)
    done = subprocess.run(
        [sys.executable, "-m", "frugalml", "info", str(bundle_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "model/head.safetensors" in done.stderr and "Traceback" not in done.stderr


def test_a_hybrid_model_gives_logits_and_vectors_from_one_pass(
    demo_splits: Splits, tiny_backbone: Path
) -> None:
    from frugalml.strategies.hybrid import HybridConfig, HybridStrategy

    strategy = HybridStrategy(HybridConfig(backbone=str(tiny_backbone), cache=False))
    with CostMeter() as meter:
        predictor = strategy.fit(demo_splits.train, demo_splits.val, budget=Budget(), meter=meter)
    texts = list(demo_splits.test.texts[:8])
    logits, vectors = predictor.logits_and_embed(texts)
    np.testing.assert_allclose(logits, predictor.logits(texts), atol=1e-5)
    np.testing.assert_allclose(vectors, predictor.embed(texts), atol=1e-6)
