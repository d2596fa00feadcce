"""Make a chosen model small and fast, one accuracy-gated step at a time.

The chain is ONNX (fp32, fused) → int8 (dynamic quantization) → a distilled student (every
other layer, int8). Each step is scored on the validation split and may lose at most
`max_drop` points of accuracy and of macro-F1 against the uncompressed model; a step that
loses more is rejected, the report says by how much, and the last accepted step ships.
Speed and size are re-measured on the saved, reloaded bundle of every step. A TF-IDF model's
chain is the ONNX step alone (n-grams counted and weighted in the graph, so serving needs no
scikit-learn); hybrid exports its encoder and its n-grams.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.bundle import Bundle, load, read_manifest, save_bundle, update_manifest
from frugalml.config import SpeedConfig
from frugalml.costs import CostMeter, Prices
from frugalml.data.dataset import Dataset
from frugalml.errors import ConfigError, installed
from frugalml.ladder.calibration import fit_temperature
from frugalml.ladder.run import Progress
from frugalml.metrics import Quality, measure_speed, score

STEPS = ("onnx", "int8", "distilled")


@dataclass
class Step:
    """One step of the chain, measured on its saved bundle."""

    name: str  # "source", "onnx", "int8", "distilled"
    val: Quality
    size_mb: float
    speed: dict[str, float]
    accepted: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)  # fusions, parity, cost

    def drop(self, source: Step) -> dict[str, float]:
        """Points lost against the uncompressed model (negative: it gained)."""
        return {
            "accuracy": 100 * (source.val.accuracy - self.val.accuracy),
            "macro_f1": 100 * (source.val.macro_f1 - self.val.macro_f1),
        }

    def to_dict(self, source: Step | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "val": self.val.to_dict(),
            "drop_points": self.drop(source) if source else None,
            "size_mb": self.size_mb,
            "speed": self.speed,
            "accepted": self.accepted,
            "reason": self.reason,
            **self.details,
        }


@dataclass
class CompressResult:
    steps: list[Step]
    shipped: Step
    bundle: Path
    skipped: dict[str, str] = field(default_factory=dict)  # step → why it did not run

    def to_dict(self) -> dict[str, Any]:
        source = self.steps[0]
        return {
            "shipped": self.shipped.name,
            "bundle": str(self.bundle),
            "steps": [s.to_dict(source) for s in self.steps],
            "skipped": self.skipped,
        }


def compress(
    source_dir: Path,
    train: Dataset,
    val: Dataset,
    out: Path,
    *,
    to: str = "int8",
    max_drop: float = 1.0,
    speed: SpeedConfig | None = None,
    prices: Prices | None = None,
    progress: Progress | None = None,
    keep_steps: Path | None = None,
) -> CompressResult:
    """Run the chain up to `to` and write the last accepted step's bundle to `out`.

    `keep_steps` keeps every step's bundle there (one folder per step), e.g. for benchmarks.
    """
    if to not in STEPS:
        raise ConfigError(f"--to must be one of {', '.join(STEPS)}; got '{to}'")
    if max_drop < 0:
        raise ConfigError(f"--max-drop must be ≥ 0 points; got {max_drop}")
    if out.exists():
        raise ConfigError(f"{out} already exists; choose another --out (nothing is overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    notify = progress or (lambda event, data: None)
    source = load(source_dir)
    teacher: Any = source.predictor
    strategy = source.manifest.strategy
    parts = _exportable(teacher)
    if not parts:
        raise ConfigError(
            f"{source_dir} holds a '{strategy}' model that is already exported to ONNX",
            ["compress the uncompressed bundle (RUN_DIR/candidates/<rung>)"],
        )
    from frugalml.models.encoder_head import EncoderHeadPredictor

    work = Path(tempfile.mkdtemp(prefix=".compress-", dir=out.parent))
    try:
        texts = list(val.texts)
        reference = np.asarray(teacher.logits(texts))  # for parity, and the source's score
        steps = [
            _measure("source", source, val, speed, True, "the uncompressed model", {}, reference)
        ]
        notify("compress", {"step": steps[0].to_dict()})
        shipped = steps[0]
        skipped: dict[str, str] = {}
        wanted = STEPS[: STEPS.index(to) + 1]

        def gate(name: str, folder: Path, details: dict[str, Any]) -> Step:
            nonlocal shipped
            bundle = load(folder)
            step = _measure(name, bundle, val, speed, False, "", details)
            lost = step.drop(steps[0])
            worst = max(lost.values())
            step.accepted = worst <= max_drop
            step.reason = (
                f"loses {worst:.2f} points ≤ {max_drop:g} allowed"
                if step.accepted
                else f"rejected: loses {worst:.2f} points > {max_drop:g} allowed; "
                f"{shipped.name} ships instead"
            )
            steps.append(step)
            notify("compress", {"step": step.to_dict(steps[0])})
            if step.accepted:
                shipped = step
            return step

        with CostMeter(prices) as meter:
            fp32, details = _export(teacher, work / "fp32")
        parity = _parity(fp32, reference, texts)
        _save_onnx(work / "onnx", source, fp32, "fp32", {**details, "parity": parity}, meter)
        gate("onnx", work / "onnx", {**details, "parity": parity})
        if "int8" in wanted and "encoder" not in parts:
            skipped["int8"] = (
                "nothing to quantize: n-gram counting and a linear head are already small and "
                "cheap; the onnx step is the last"
            )
        elif "int8" in wanted:
            with CostMeter(prices) as meter:
                int8 = _quantized(fp32, work / "int8-encoder")
            _save_onnx(work / "int8", source, int8, "int8", details, meter)
            gate("int8", work / "int8", details)
        if "distilled" in wanted and not isinstance(teacher, EncoderHeadPredictor):
            skipped["distilled"] = (
                f"a '{strategy}' model has no encoder to distill"
                if "encoder" not in parts
                else f"a '{strategy}' model is more than an encoder and a head; the student is "
                "distilled for encoder-and-head models only"
            )
        elif "distilled" in wanted:
            from frugalml.ship.distill import distill

            with CostMeter(prices) as meter:
                student = distill(teacher, train.texts, val, labels=train.y, meter=meter)
                student.temperature = fit_temperature(student.logits(texts), val.y)
                student_fp32, details = _export(student, work / "student-fp32")
                student_int8 = _quantized(student_fp32, work / "student-int8")
            _save_onnx(work / "distilled", source, student_int8, "int8", details, meter)
            gate("distilled", work / "distilled", details)
        chosen_dir = source_dir if shipped.name == "source" else work / shipped.name
        shutil.copytree(chosen_dir, out)
        if keep_steps is not None:
            for step in steps[1:]:
                shutil.copytree(work / step.name, keep_steps / step.name)
        result = CompressResult(steps, shipped, out, skipped)
        update_manifest(out, compression=result.to_dict(), speed=shipped.speed)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _exportable(predictor: Any) -> list[str]:
    """The parts of a predictor that still need PyTorch or scikit-learn to run; none when its
    encoder is already ONNX (the chain starts from the uncompressed model)."""
    from frugalml.models.encoder import Encoder
    from frugalml.strategies.tfidf import NgramFeatures

    encoder = getattr(predictor, "encoder", None)
    if encoder is not None and not isinstance(encoder, Encoder):
        return []
    parts = ["encoder"] if encoder is not None else []
    if isinstance(getattr(predictor, "ngrams", None), NgramFeatures):
        parts.append("ngrams")
    return parts


def _export(predictor: Any, folder: Path) -> tuple[Any, dict[str, Any]]:
    """A copy of the predictor served by ONNX Runtime alone: its encoder and its n-grams
    exported; and the details the manifest records (the encoder's fusions)."""
    parts = _exportable(predictor)
    details: dict[str, Any] = {}
    if "encoder" in parts:
        predictor, fusions = _export_encoder(predictor, folder / "encoder")
        details["fusions"] = fusions.to_dict()
    if "ngrams" in parts:
        import copy

        from frugalml.models.onnx_ngrams import export_ngrams

        predictor = copy.copy(predictor)
        predictor.ngrams = export_ngrams(predictor.ngrams.vectorizers, folder / "ngrams")
    return predictor, details


def _export_encoder(predictor: Any, folder: Path) -> tuple[Any, Any]:
    """The predictor with its encoder exported, fused and served by ONNX Runtime."""
    from frugalml.models.onnx_encoder import MODEL_FILE, TOKENIZER_FILE, write_settings
    from frugalml.ship import onnx_export as ox

    encoder = predictor.encoder
    folder.mkdir(parents=True)
    raw = folder.with_name(folder.name + "-raw.onnx")
    ox.export_onnx(encoder, raw)
    fusions = ox.optimize(raw, folder / MODEL_FILE, encoder.model.config)
    raw.unlink()
    encoder.tokenizer.backend_tokenizer.save(str(folder / TOKENIZER_FILE))
    write_settings(folder, {"pad_id": encoder.pad_id, "dim": encoder.dim, "precision": "fp32"})
    return _with_encoder(predictor, folder), fusions


def _quantized(fp32: Any, folder: Path) -> Any:
    from frugalml.models.onnx_encoder import MODEL_FILE, TOKENIZER_FILE, write_settings
    from frugalml.ship import onnx_export as ox

    source = fp32.encoder.folder
    folder.mkdir(parents=True)
    ox.quantize_int8(source / MODEL_FILE, folder / MODEL_FILE)
    shutil.copyfile(source / TOKENIZER_FILE, folder / TOKENIZER_FILE)
    write_settings(folder, {**fp32.encoder.settings, "precision": "int8"})
    return _with_encoder(fp32, folder)


def _with_encoder(predictor: Any, folder: Path) -> Any:
    """A shallow copy of `predictor` whose encoder is the ONNX one in `folder`."""
    import copy

    from frugalml.models.onnx_encoder import OnnxEncoder

    encoder = predictor.encoder
    clone = copy.copy(predictor)
    clone.encoder = OnnxEncoder(
        folder,
        max_length=encoder.max_length,
        batch_size=encoder.batch_size,
        normalize=encoder.normalize,
    )
    return clone


def _parity(onnx: Any, reference: Any, texts: list[str]) -> dict[str, Any]:
    """Max |ONNX - source| over the logits (PyTorch, scikit-learn), and label agreement."""

    if not texts:
        return {"texts": 0, "max_abs_logit_diff": 0.0, "same_labels": 1.0}
    got = onnx.logits(texts)
    return {
        "texts": len(texts),
        "max_abs_logit_diff": float(np.abs(got - reference).max()),
        "same_labels": float((got.argmax(1) == reference.argmax(1)).mean()),
    }


def _save_onnx(
    folder: Path,
    source: Bundle,
    predictor: Any,
    precision: str,
    details: dict[str, Any],
    meter: CostMeter,
) -> Path:
    """A bundle like the source's (same strategy and predictor), its parts in ONNX."""
    m = source.manifest
    save_bundle(
        folder,
        predictor,
        strategy=m.strategy,
        config=m.config,
        task=m.task,
        data_fingerprint=m.data_fingerprint,
        extra={"train_cost": m.train_cost, "compress_cost": meter.card.to_dict()},
    )
    spec = read_manifest(folder).predictor
    update_manifest(folder, predictor={**spec, "format": "onnx", "precision": precision, **details})
    return folder


def _measure(
    name: str,
    bundle: Bundle,
    val: Dataset,
    speed: SpeedConfig | None,
    accepted: bool,
    reason: str,
    details: dict[str, Any] | None = None,
    scores: np.ndarray | None = None,
) -> Step:
    """Quality on `val`, speed and size. `scores`: the bundle's logits or probabilities for
    `val`, when the caller has them already (only their argmax is used)."""
    if scores is None:
        scores = bundle.predict_proba(val.texts)
    quality = score(val.y, scores.argmax(1), val.labels)
    timing = measure_speed(bundle, val.texts, speed)
    size = sum(p.stat().st_size for p in (bundle.path / "model").rglob("*") if p.is_file())
    return Step(name, quality, size / 1e6, timing.to_dict(), accepted, reason, details or {})


def compress_available(*, torch: bool = True) -> bool:
    """ONNX export needs onnx and onnxruntime, plus torch and transformers for an encoder."""
    return installed("onnx", "onnxruntime", *(("torch", "transformers") if torch else ()))
