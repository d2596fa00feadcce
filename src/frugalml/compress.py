"""Make a chosen model small and fast, one accuracy-gated step at a time.

The chain is ONNX (fp32, fused) → int8 (dynamic quantization) → a distilled student (every
other layer, int8). Each step is scored on the validation split and may lose at most
`max_drop` points of accuracy and of macro-F1 against the uncompressed model; a step that
loses more is rejected, the report says by how much, and the last accepted step ships.
Speed and size are re-measured on the saved, reloaded bundle of every step.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalml.bundle import Bundle, load, read_manifest, save_bundle, update_manifest
from frugalml.calibration import fit_temperature
from frugalml.config import SpeedConfig
from frugalml.costs import CostMeter, Prices
from frugalml.data.dataset import Dataset
from frugalml.errors import ConfigError
from frugalml.evaluate import Quality, measure_speed, score

STEPS = ("onnx", "int8", "distilled")
Progress = Callable[[str, dict[str, Any]], None]


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

    def to_dict(self) -> dict[str, Any]:
        source = self.steps[0]
        return {
            "shipped": self.shipped.name,
            "bundle": str(self.bundle),
            "steps": [s.to_dict(source) for s in self.steps],
        }


def compress(
    source_dir: Path,
    train_texts: tuple[str, ...],
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
    teacher = source.predictor
    from frugalml.strategies.encoder_head import EncoderHeadPredictor

    if not isinstance(teacher, EncoderHeadPredictor):
        raise ConfigError(
            f"{source_dir} holds a '{source.manifest['strategy']}' model, which has no "
            "transformer to compress",
            [
                "compress a bundle of an encoder rung (frozen_probe, hybrid's encoder is not "
                "exported yet, top_layers, setfit, lora, full)"
            ],
        )
    from frugalml import onnx_export as ox

    work = Path(tempfile.mkdtemp(prefix=".compress-", dir=out.parent))
    try:
        steps = [_measure("source", source, val, speed, True, "the uncompressed model")]
        notify("compress", {"step": steps[0].to_dict()})
        shipped = steps[0]
        texts = list(val.texts)
        reference = ox.torch_logits(teacher, texts)
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
            fp32 = _export(teacher, work / "onnx-raw.onnx", work / "fp32.onnx", source)
        parity = _parity(fp32, reference, texts)
        fp32_dir = _save_onnx(work / "onnx", source, fp32, "fp32", parity, meter)
        gate("onnx", fp32_dir, {"fusions": fp32.info["fusions"], "parity": parity})
        if "int8" in wanted:
            with CostMeter(prices) as meter:
                int8 = _quantized(fp32, work / "int8.onnx")
            _save_onnx(work / "int8", source, int8, "int8", None, meter)
            gate("int8", work / "int8", {"fusions": fp32.info["fusions"]})
        if "distilled" in wanted:
            from frugalml.distill import distill

            with CostMeter(prices) as meter:
                student = distill(teacher, train_texts, val, meter=meter)
                student.temperature = fit_temperature(student.logits(texts), val.y)
                student_fp32 = _export(
                    student, work / "student-raw.onnx", work / "student.onnx", source
                )
                student_int8 = _quantized(student_fp32, work / "student-int8.onnx")
            _save_onnx(work / "distilled", source, student_int8, "int8", None, meter)
            gate("distilled", work / "distilled", {"fusions": student_fp32.info["fusions"]})
        chosen_dir = source_dir if shipped.name == "source" else work / shipped.name
        shutil.copytree(chosen_dir, out)
        if keep_steps is not None:
            for step in steps[1:]:
                shutil.copytree(work / step.name, keep_steps / step.name)
        result = CompressResult(steps, shipped, out)
        update_manifest(out, compression=result.to_dict(), speed=shipped.speed)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export(predictor: Any, raw: Path, optimized: Path, source: Bundle) -> Any:
    """Export, fuse, and wrap as an OnnxPredictor carrying the source's settings."""
    from frugalml import onnx_export as ox
    from frugalml.onnx_predictor import OnnxPredictor

    ox.export_onnx(predictor, raw)
    fusions = ox.optimize(raw, optimized, predictor.encoder.model.config)
    tokenizer = optimized.with_name(optimized.stem + "-tokenizer.json")
    predictor.encoder.tokenizer.backend_tokenizer.save(str(tokenizer))
    return OnnxPredictor(
        optimized,
        tokenizer,
        predictor.labels,
        max_length=predictor.encoder.max_length,
        batch_size=predictor.encoder.batch_size,
        pad_id=predictor.encoder.pad_id,
        temperature=predictor.temperature,
        info={"fusions": fusions.to_dict(), "source_strategy": source.manifest["strategy"]},
    )


def _quantized(fp32: Any, target: Path) -> Any:
    from frugalml import onnx_export as ox
    from frugalml.onnx_predictor import OnnxPredictor

    ox.quantize_int8(fp32.model_path, target)
    return OnnxPredictor(
        target,
        fp32.tokenizer_path,
        fp32.labels,
        max_length=fp32.max_length,
        batch_size=fp32.batch_size,
        pad_id=fp32.pad_id,
        temperature=fp32.temperature,
        info=dict(fp32.info),
    )


def _parity(onnx: Any, reference: Any, texts: list[str]) -> dict[str, Any]:
    """Max |ONNX - PyTorch| over the logits, and label agreement, on the given texts."""
    import numpy as np

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
    parity: dict[str, Any] | None,
    meter: CostMeter,
) -> Path:
    predictor.info = {**predictor.info, "precision": precision}
    if parity is not None:
        predictor.info["parity"] = parity
    m = source.manifest
    return save_bundle(
        folder,
        predictor,
        strategy=m["strategy"],
        config=m["config"],
        task=m["task"],
        data_fingerprint=m["data_fingerprint"],
        extra={"train_cost": m.get("train_cost"), "compress_cost": meter.card.to_dict()},
    )


def _measure(
    name: str,
    bundle: Bundle,
    val: Dataset,
    speed: SpeedConfig | None,
    accepted: bool,
    reason: str,
    details: dict[str, Any] | None = None,
) -> Step:
    quality = score(val.y, bundle.predict_proba(val.texts).argmax(1), val.labels)
    timing = measure_speed(bundle, val.texts, speed)
    size = sum(p.stat().st_size for p in (bundle.path / "model").rglob("*") if p.is_file())
    return Step(name, quality, size / 1e6, timing.to_dict(), accepted, reason, details or {})


def compress_available() -> bool:
    """ONNX export needs torch and transformers (the model) plus onnx and onnxruntime."""
    import importlib.util

    needed = ("torch", "transformers", "onnx", "onnxruntime")
    return all(importlib.util.find_spec(m) is not None for m in needed)


def read_compression(folder: Path) -> dict[str, Any] | None:
    """The compression report a bundle carries, if it was compressed."""
    compression = read_manifest(folder).get("compression")
    return compression if isinstance(compression, dict) else None
