"""A model bundle: one folder, JSON metadata and safetensors weights, checksummed, no pickles.

`load` validates the manifest (`types.Manifest`; older schema versions migrate) and verifies the
sha256 of every file before reading any weights, and only ever parses JSON and safetensors, so a
bundle from someone else cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.errors import BundleError, CapabilityError, plural
from frugalml.models.onnx_encoder import is_onnx, require_onnxruntime
from frugalml.strategies.base import Embedder, Predictor, Registered, get_strategy
from frugalml.types import MANIFEST_SCHEMA, Manifest, parse_manifest

SCHEMA_VERSION = MANIFEST_SCHEMA
MANIFEST = "manifest.json"
MODEL_DIR = "model"
_UNSAFE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".bin", ".pt", ".pth", ".npy", ".npz")


def _version() -> str:
    from frugalml import __version__

    return __version__


class Bundle:
    """A loaded bundle: predicts labels and probabilities, exposes its manifest."""

    def __init__(self, path: Path, manifest: Manifest, predictor: Predictor) -> None:
        self.path = path
        self.manifest = manifest
        self.predictor = predictor

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predictor.predict_proba(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence vectors, (len(texts), dim) float32, from the model's encoder:
        what retrieval, out-of-scope detection and recommendation compare."""
        if not isinstance(self.predictor, Embedder):
            raise CapabilityError(
                f"{self.path} holds a '{self.manifest.strategy}' model, which cannot "
                "embed texts: it has no encoder",
                ["embed with the bundle of an encoder rung (e.g. frozen_probe or hybrid)"],
            )
        return self.predictor.embed(texts)

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One {'label', 'probabilities'} record per text."""
        proba = self.predict_proba(texts)
        labels = self.labels
        return [
            {
                "label": labels[int(row.argmax())],
                "probabilities": {label: float(p) for label, p in zip(labels, row, strict=True)},
            }
            for row in proba
        ]


def save_bundle(
    folder: Path,
    predictor: Predictor,
    *,
    strategy: str,
    config: dict[str, Any],
    task: str,
    data_fingerprint: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a new bundle folder atomically (staged beside it, then renamed into place).

    `extra` sets further manifest fields (e.g. `train_cost`); the manifest is validated before
    anything is renamed into place."""
    if folder.exists():
        raise BundleError(f"{folder} already exists; bundles are never written over")
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / MODEL_DIR).mkdir(parents=True)
    spec = predictor.save(staging / MODEL_DIR)
    manifest = parse_manifest(
        {
            "schema_version": SCHEMA_VERSION,
            "frugalml_version": _version(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "task": task,
            "strategy": strategy,
            "config": config,
            "labels": list(predictor.labels),
            "predictor": spec,
            "data_fingerprint": data_fingerprint,
            **(extra or {}),
            "files": _checksums(staging),
        },
        where=f"the manifest of {folder}",
    )
    write_manifest(staging, manifest)
    staging.replace(folder)
    return folder


def update_manifest(folder: Path, **fields: Any) -> Manifest:
    """Add measured figures (speed, test quality) after saving; weights' checksums stay valid.

    A bundle of an older schema is rewritten in the current one."""
    manifest = read_manifest(folder).updated(**fields)
    write_manifest(folder, manifest)
    return manifest


def write_manifest(folder: Path, manifest: Manifest) -> None:
    _write_json(folder / MANIFEST, manifest.to_json())


def read_manifest(folder: Path) -> Manifest:
    """The folder's manifest, validated (and migrated from an older schema, in memory only:
    loading never writes to a bundle, which may sit on a read-only mount)."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a bundle folder (it does not exist or is a file)")
    if not path.exists():
        raise BundleError(f"{folder} is not a bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON ({err}); the bundle is damaged") from None
    return parse_manifest(manifest, where=str(path))


def load(path: str | Path) -> Bundle:
    """Verify, then load. Refuses an invalid manifest or unknown schema version, missing files
    and checksum mismatches."""
    folder = Path(path)
    manifest = read_manifest(folder)
    problems = verify_files(folder, manifest.files)
    if problems:
        raise BundleError(
            f"{folder}: refused to load, {plural(len(problems), 'problem')}:", problems
        )
    registered = require_dependencies(manifest)
    predictor = registered.predictor.load(folder / MODEL_DIR, manifest.predictor, manifest.labels)
    return Bundle(folder, manifest, predictor)


def require_dependencies(manifest: Manifest) -> Registered:
    """The bundle's strategy, once what its predictor needs is known to be installed: ONNX
    Runtime alone for an exported bundle, else the strategy's own extra."""
    registered = get_strategy(manifest.strategy)
    if is_onnx(manifest.predictor):
        require_onnxruntime()
    else:
        registered.require()
    return registered


def verify_files(folder: Path, expected: Mapping[str, str]) -> list[str]:
    """Every listed file present with its sha256, nothing unlisted, nothing pickle-like."""
    if not expected:
        return ["the manifest lists no files"]
    problems = []
    actual = _checksums(folder)
    for name, digest in sorted(expected.items()):
        if name not in actual:
            problems.append(f"{name} is missing")
        elif actual[name] != digest:
            problems.append(
                f"{name} does not match its sha256 in the manifest (changed or damaged)"
            )
    for name in sorted(actual.keys() - expected.keys()):
        kind = "a pickle-like file" if name.endswith(_UNSAFE_SUFFIXES) else "a file"
        problems.append(f"{name} is {kind} the manifest does not list")
    return problems


def _checksums(folder: Path) -> dict[str, str]:
    sums = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            sums[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return sums


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
