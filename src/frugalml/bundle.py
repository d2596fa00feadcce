"""A model bundle: one folder, JSON metadata and safetensors weights, checksummed, no pickles.

`load` validates the manifest (`types.Manifest`; older schema versions migrate) and its seal
(`signing.py`: a digest over the manifest and every file's sha256, optionally signed), then
checks the folder against it: only regular files of the types predictors read, each listed
with its size (from the directory alone, before anything is read) and sha256. It only ever
parses JSON, safetensors (headers checked first) and ONNX, so a bundle from someone else
cannot run code, and a bundle's version names its exact manifest and weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import struct
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from frugalml.errors import (
    BundleError,
    CapabilityError,
    ConfigError,
    DataError,
    FrugalError,
    plural,
)
from frugalml.models.onnx_encoder import is_onnx, require_onnxruntime
from frugalml.signing import (
    KEY_ENV,
    MAKE_KEY,
    Integrity,
    seal,
    signing_key,
    unverified,
    verify,
)
from frugalml.strategies.base import (
    Embedder,
    Explainer,
    JointEmbedder,
    Predictor,
    Registered,
    SelfChecking,
    TabularPredictor,
    get_strategy,
)
from frugalml.types import MANIFEST_SCHEMA, Manifest, parse_manifest

SCHEMA_VERSION = MANIFEST_SCHEMA
MANIFEST = "manifest.json"
MODEL_DIR = "model"
# What predictors write and read: weights (safetensors, ONNX), settings and tokenizers
# (JSON; vocab.txt and merges.txt; sentencepiece .model). Anything else is refused.
READABLE_SUFFIXES = (".json", ".model", ".onnx", ".safetensors", ".txt")
_UNSAFE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".bin", ".pt", ".pth", ".npy", ".npz")


def _version() -> str:
    from frugalml._version import __version__

    return __version__


class Bundle:
    """A loaded bundle: predicts labels and probabilities, exposes its manifest."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        predictor: Predictor,
        integrity: Integrity | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.predictor = predictor
        self.integrity = integrity or unverified(manifest)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def version(self) -> str:
        """Names the exact manifest and weights: the start of the manifest's digest."""
        return self.integrity.version

    @property
    def temperature(self) -> float:
        """The calibration temperature: `predict_proba` is softmax(`logits` / temperature)."""
        return float(self.predictor.temperature)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predictor.predict_proba(texts)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw class scores, (len(texts), len(labels)), before calibration: what
        energy-style out-of-scope scores read."""
        return np.asarray(self.predictor.logits(texts), dtype=np.float32)

    def logits_and_embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`logits(texts)` and `embed(texts)`, from one encoder pass when the model can."""
        if isinstance(self.predictor, JointEmbedder):
            logits, vectors = self.predictor.logits_and_embed(texts)
            return np.asarray(logits, dtype=np.float32), vectors
        return self.logits(texts), self.embed(texts)

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

    def predict(self, texts: Sequence[Any]) -> list[dict[str, Any]]:
        """One {'label', 'probabilities'} record per text (or record, for a tabular bundle:
        checked against its schema first); with the reasons when the model gives them."""
        self.check_inputs(texts)
        proba = self.predict_proba(texts)
        labels = self.labels
        answers: list[dict[str, Any]] = [
            {
                "label": labels[int(row.argmax())],
                "probabilities": {label: float(p) for label, p in zip(labels, row, strict=True)},
            }
            for row in proba
        ]
        if isinstance(self.predictor, Explainer):
            for answer, reasons in zip(answers, self.predictor.explain(texts), strict=True):
                answer["reasons"] = reasons
        return answers

    def check_inputs(self, inputs: Sequence[Any]) -> None:
        """Records sent to a tabular bundle must fit its schema: every problem at once."""
        if not isinstance(self.predictor, TabularPredictor):
            return
        problems = self.predictor.schema.problems(inputs)
        if problems:
            raise DataError(
                f"{plural(len(problems), 'problem')} with the records for {self.path.name}:",
                [p["message"] for p in problems[:20]],
            )


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
    signing_key()  # a bad key fails before anything is written
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / MODEL_DIR).mkdir(parents=True)
    spec = predictor.save(staging / MODEL_DIR)
    _share_modes(staging)
    sizes = _saved_files(staging)
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
            "files": {name: _sha256(staging / name) for name in sizes},
            "sizes": sizes,
        },
        where=f"the manifest of {folder}",
    )
    write_manifest(staging, manifest)
    staging.replace(folder)
    return folder


def update_manifest(folder: Path, **fields: Any) -> Manifest:
    """Add measured figures (speed, test quality) after saving; weights' checksums stay valid.

    The manifest is verified first (an edited one is not sealed again) and sealed anew. A
    bundle of an older schema is rewritten in the current one."""
    manifest = read_manifest(folder).updated(**fields)
    write_manifest(folder, manifest)
    return manifest


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest sealed: its digest, and a signature when a key is set."""
    _write_json(folder / MANIFEST, seal(manifest).to_json())


def read_manifest(folder: Path) -> Manifest:
    """The folder's manifest, validated (and migrated from an older schema, in memory only:
    loading never writes to a bundle, which may sit on a read-only mount) and its seal
    verified."""
    return _read_manifest(folder, signing_key())[0]


def _read_manifest(folder: Path, key: bytes | None) -> tuple[Manifest, Integrity]:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a bundle folder (it does not exist or is a file)")
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{folder} is not a bundle: {MANIFEST} is missing")
    if not stat.S_ISREG(path.lstat().st_mode):
        raise BundleError(f"{path} is {_kind(path)}; a bundle holds regular files only")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise BundleError(f"{path} is not valid JSON ({err}); the bundle is damaged") from None
    parsed = parse_manifest(manifest, where=str(path))
    return parsed, verify(parsed, where=str(path), key=key)


def load(path: str | Path) -> Bundle:
    """Verify, then load. Refuses an invalid or edited manifest, an unknown schema version,
    missing, unlisted or changed files, and labels that do not match the model's outputs."""
    folder = Path(path)
    manifest, integrity = _read_manifest(folder, signing_key())
    problems = verify_files(folder, manifest)
    if problems:
        raise BundleError(
            f"{folder}: refused to load, {plural(len(problems), 'problem')}:", problems
        )
    registered = require_dependencies(manifest)
    predictor = registered.predictor.load(folder / MODEL_DIR, manifest.predictor, manifest.labels)
    _check_outputs(folder, manifest, predictor)
    return Bundle(folder, manifest, predictor, replace(integrity, files=len(manifest.files)))


def sign_bundle(path: str | Path) -> Integrity:
    """Sign a bundle with the key in $FRUGALML_SIGNING_KEY, once its manifest's digest and
    every file are verified (any earlier signature is replaced): a signature vouches for the
    bundle as it is now. Returns what loading it now verifies."""
    folder = Path(path)
    if signing_key() is None:
        raise ConfigError(f"set ${KEY_ENV} to the key to sign with", [MAKE_KEY])
    manifest, _ = _read_manifest(folder, key=None)
    problems = verify_files(folder, manifest)
    if problems:
        raise BundleError(
            f"{folder}: refused to sign, {plural(len(problems), 'problem')}:", problems
        )
    write_manifest(folder, manifest)
    # The files were just hashed: check only the new signature, not every file again.
    _, integrity = _read_manifest(folder, signing_key())
    return replace(integrity, files=len(manifest.files))


def _check_outputs(folder: Path, manifest: Manifest, predictor: Predictor) -> None:
    """One prediction proves the model has one output per label: a manifest whose labels do
    not fit its weights would otherwise load and fail (or mislabel) every request."""
    probe: Any = "warm up"
    if isinstance(predictor, TabularPredictor):
        probe = predictor.schema.example()  # a record of the schema the model was trained on
    try:
        if isinstance(predictor, SelfChecking):  # not a text classifier: it checks itself
            predictor.check()
            return
        proba = np.asarray(predictor.predict_proba([probe]))
    except FrugalError:
        raise
    except Exception as err:
        raise BundleError(
            f"{folder}: the model failed its check prediction "
            f"({type(err).__name__}: {err}); the bundle is damaged or was made by an "
            "incompatible frugalml: re-create it"
        ) from err
    labels = len(manifest.labels)
    if proba.shape != (1, labels):
        outputs = proba.shape[-1] if proba.ndim else 0
        raise BundleError(
            f"{folder}: the model has {plural(outputs, 'output')} but the manifest lists "
            f"{plural(labels, 'label')}, so labels and model do not match; re-create the bundle"
        )


def require_dependencies(manifest: Manifest) -> Registered:
    """The bundle's strategy, once what its predictor needs is known to be installed: ONNX
    Runtime alone for an exported bundle, else the strategy's own extra."""
    registered = get_strategy(manifest.strategy)
    if is_onnx(manifest.predictor):
        require_onnxruntime()
    else:
        registered.require()
    return registered


def verify_files(folder: Path, manifest: Manifest) -> list[str]:
    """Every listed file present, of a type a predictor reads, with its size and sha256;
    nothing else in the folder (no link, pipe or device, no unlisted file); safetensors
    headers consistent with their files. Names, types and sizes come from the directory
    entries, so an unlisted or resized file is refused without being read."""
    expected = manifest.files
    if not expected:
        return ["the manifest lists no files"]
    present, others = _inventory(folder)
    problems = list(others.values())
    for name in sorted(present.keys() - expected.keys()):
        kind = "a pickle-like file" if name.lower().endswith(_UNSAFE_SUFFIXES) else "a file"
        problems.append(f"{name} is {kind} the manifest does not list")
    to_hash = []
    for name in sorted(expected):
        size = None if manifest.sizes is None else manifest.sizes[name]
        if not name.lower().endswith(READABLE_SUFFIXES):
            suffix = PurePosixPath(name).suffix
            problems.append(
                f"{name} is {f'a {suffix} file' if suffix else 'a file without a suffix'}, "
                f"a type no predictor reads: bundles hold only {', '.join(READABLE_SUFFIXES)} "
                "files"
            )
        elif name in others:
            continue  # said above
        elif name not in present:
            problems.append(f"{name} is missing")
        elif size is not None and present[name] != size:
            problems.append(
                f"{name} is {present[name]:,} bytes; the manifest says {size:,} "
                "(changed or damaged)"
            )
        else:
            to_hash.append(name)
    for name in to_hash:
        if _sha256(folder / name) != expected[name]:
            problems.append(
                f"{name} does not match its sha256 in the manifest (changed or damaged)"
            )
        elif name.endswith(".safetensors"):
            problems.extend(filter(None, [safetensors_problem(folder / name, name)]))
    return problems


def _inventory(folder: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Regular files under `folder` (but the manifest) with their sizes, and what else is
    there (links, pipes, devices) with a description; no link is followed, nothing opened."""
    sizes: dict[str, int] = {}
    others: dict[str, str] = {}
    pending = [(folder, "")]
    while pending:
        where, prefix = pending.pop()
        with os.scandir(where) as entries:
            for entry in entries:
                name = prefix + entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    pending.append((Path(entry.path), f"{name}/"))
                elif stat.S_ISREG(mode):
                    if name != MANIFEST:
                        sizes[name] = entry.stat(follow_symlinks=False).st_size
                else:
                    others[name] = (
                        f"{name} is {_kind(Path(entry.path))}; a bundle holds regular files "
                        "and folders only"
                    )
    return dict(sorted(sizes.items())), dict(sorted(others.items()))


def _kind(path: Path) -> str:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return f"a symbolic link (to {path.readlink()})"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "a folder" if stat.S_ISDIR(mode) else "not a regular file"


def _saved_files(staging: Path) -> dict[str, int]:
    """What a predictor wrote, by size; a link, pipe or unreadable type is a bug to refuse
    now rather than a bundle that no frugalml would load."""
    sizes, others = _inventory(staging)
    wrong = [n for n in sizes if not n.lower().endswith(READABLE_SUFFIXES)]
    if others or wrong:
        raise BundleError(
            f"the predictor wrote what a bundle may not hold into {staging}",
            [*others.values(), *(f"{n}: not one of {', '.join(READABLE_SUFFIXES)}" for n in wrong)],
        )
    return sizes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Bytes per element of each safetensors dtype; a dtype not listed is checked for bounds only.
_DTYPE_BYTES = {
    **dict.fromkeys(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3"), 1),
    **dict.fromkeys(("U16", "I16", "F16", "BF16"), 2),
    **dict.fromkeys(("U32", "I32", "F32"), 4),
    **dict.fromkeys(("U64", "I64", "F64"), 8),
}
_MAX_HEADER = 100_000_000  # safetensors' own limit


def safetensors_problem(path: Path, name: str) -> str | None:
    """What is wrong with a safetensors file's header, checked the way the safetensors
    library checks it, before that library (which would raise a bare error) sees it: a header
    length past the file, offsets outside it, tensors whose bytes do not match their shape."""
    size = path.stat().st_size
    if size < 8:
        return f"{name} is shorter than a safetensors header ({plural(size, 'byte')})"
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > min(size - 8, _MAX_HEADER):
            limit = "the file" if length > size - 8 else "safetensors' 100 MB limit"
            return f"{name}: its header length ({length:,} bytes) is larger than {limit}"
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        return f"{name}: its header is not valid JSON; the file is damaged"
    if not isinstance(header, dict):
        return f"{name}: its header is not a JSON object; the file is damaged"
    problem = _tensors_problem(header, size - 8 - length)
    return f"{name}: {problem}; the file is damaged" if problem else None


def _tensors_problem(header: dict[str, Any], data_bytes: int) -> str | None:
    """Each tensor's offsets inside the data, its bytes what its dtype and shape take, and
    the tensors tiling the data without gaps or overlap (safetensors' own rule)."""
    spans = []
    for tensor, spec in header.items():
        if tensor == "__metadata__":
            continue
        offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and isinstance(shape, list)
            and all(type(d) is int and d >= 0 for d in shape)
        ):
            return f"tensor {tensor!r} lacks a valid shape or data_offsets"
        begin, end = offsets
        if not 0 <= begin <= end <= data_bytes:
            return (
                f"tensor {tensor!r} has data_offsets {offsets}, outside the {data_bytes:,} "
                "bytes of data"
            )
        width = _DTYPE_BYTES.get(spec.get("dtype"))
        if width is not None and math.prod(shape) * width != end - begin:
            return (
                f"tensor {tensor!r} has shape {shape} of {spec['dtype']} "
                f"({math.prod(shape) * width:,} bytes) but {end - begin:,} bytes of data"
            )
        spans.append((begin, end, tensor))
    position = 0
    for begin, end, tensor in sorted(spans):
        if begin != position:
            return f"tensor {tensor!r} starts at byte {begin:,}, not at {position:,}"
        position = end
    if position != data_bytes:
        return f"its tensors take {position:,} bytes, but the file holds {data_bytes:,}"
    return None


def _umask() -> int:
    """The process umask, read without changing it (another thread may be creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the only portable way, set and put back at once
    os.umask(mask)
    return mask


def _share_modes(folder: Path) -> None:
    """Give every file and folder the permissions `open` and `mkdir` give under the umask:
    safetensors writes 0600, which a server running as another user (the Docker image's
    uid 10001, the bundle copied in as root) cannot read."""
    mask = _umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
