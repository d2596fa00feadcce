"""Make a chosen model small and fast, one accuracy-gated step at a time.

The chain is ONNX (fp32, fused) → int8 (dynamic quantization) → a distilled student (every
other layer, int8). Each step is scored on the validation split and may lose at most
`max_drop` points of accuracy and of macro-F1 against the uncompressed model; a step that
loses more is rejected, the report says by how much, and the last accepted step ships.
Speed and size are re-measured on the saved, reloaded bundle of every step. A TF-IDF model's
chain is the ONNX step alone (n-grams counted and weighted in the graph, so serving needs no
scikit-learn); hybrid exports its encoder and its n-grams. Each model exports itself (the
`OnnxExportable` capability); this module runs the chain and gates it.

With a `volume` (predictions to serve), the accepted step that ships is the one cheapest to
own: what the chain spent to reach it plus `volume` * its serving cost per prediction; the
distilled step runs only when it could pay back its least possible cost at that volume.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.bundle import Bundle, load, read_manifest, save_bundle, update_manifest
from frugalml.config import Scale, SpeedConfig
from frugalml.costs import CostMeter, Prices
from frugalml.data.dataset import Dataset
from frugalml.errors import ConfigError, installed
from frugalml.ladder.calibration import calibrated_proba, fit_temperature
from frugalml.ladder.ownership import Option, human
from frugalml.ladder.run import Progress
from frugalml.metrics import Quality, Speed, measure_speed, score
from frugalml.models.onnx_encoder import is_onnx
from frugalml.strategies.base import Embedder, OnnxExportable, Predictor

STEPS = ("onnx", "int8", "distilled")


@dataclass
class Step:
    """One step of the chain, measured on its saved bundle."""

    name: str  # "source", "onnx", "int8", "distilled"
    val: Quality
    size_mb: float
    speed: dict[str, Any]  # `Speed.to_dict()`
    accepted: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)  # fusions, parity
    cost: dict[str, Any] | None = None  # the step's own cost card (None for the source)

    def drop(self, source: Step) -> dict[str, float]:
        """Points lost against the uncompressed model (negative: it gained)."""
        return {
            name: 100 * (source.val.metric(name) - self.val.metric(name))
            for name in ("accuracy", "macro_f1")
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
            "cost": self.cost,
            **self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        """A step as `to_dict` wrote it (the report reads the compression record back)."""
        known = {"name", "val", "drop_points", "size_mb", "speed", "accepted", "reason", "cost"}
        return cls(
            data["name"],
            Quality.from_dict(data["val"]),
            data["size_mb"],
            data["speed"],
            data["accepted"],
            data["reason"],
            {k: v for k, v in data.items() if k not in known},
            data.get("cost"),
        )

    def option(self, fixed_usd: float, fixed_cpu_s: float, strategy: str, prices: Prices) -> Option:
        """This step as a cost-of-ownership line, built at `fixed_usd` (training + chain)."""
        name = strategy if self.name == "source" else f"{strategy} · {self.name}"
        return Option.of(name, fixed_usd, fixed_cpu_s, Speed(**self.speed), prices)


@dataclass
class CompressResult:
    steps: list[Step]
    shipped: Step
    bundle: Path
    skipped: dict[str, str] = field(default_factory=dict)  # step → why it did not run
    volume: float | None = None  # predictions the shipped step was chosen for

    def to_dict(self) -> dict[str, Any]:
        source = self.steps[0]
        return {
            "shipped": self.shipped.name,
            "bundle": str(self.bundle),
            "steps": [s.to_dict(source) for s in self.steps],
            "skipped": self.skipped,
            "volume": self.volume,
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
    volume: float | None = None,
    scale: Scale | None = None,
) -> CompressResult:
    """Run the chain up to `to` and write the last accepted step's bundle to `out`; with
    `volume`, the accepted ONNX step cheapest to own at that many predictions.

    `keep_steps` keeps every step's bundle there (one folder per step), e.g. for benchmarks.
    With a `scale` asking for several processes, the student trains data-parallel under
    torchrun (rank 0 alone evaluates and saves it; its cost card counts every rank).
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
    teacher = _exportable(source, source_dir)
    strategy = source.manifest.strategy
    recorded = source.manifest.prices
    prices = prices or Prices.from_dict(recorded.model_dump() if recorded else None)
    from frugalml.models.encoder_head import EncoderHeadPredictor

    work = Path(tempfile.mkdtemp(prefix=".compress-", dir=out.parent))
    try:
        texts = list(val.inputs)  # texts, or records for a tabular model
        reference = np.asarray(teacher.logits(texts))  # for parity, and the source's score
        steps = [
            _measure("source", source, val, speed, True, "the uncompressed model", {}, reference)
        ]
        notify("compress", {"step": steps[0].to_dict()})
        shipped = steps[0]
        skipped: dict[str, str] = {}
        wanted = STEPS[: STEPS.index(to) + 1]

        def gate(name: str, folder: Path, details: dict[str, Any], meter: CostMeter) -> Step:
            nonlocal shipped
            bundle = load(folder)
            step = _measure(name, bundle, val, speed, False, "", details)
            step.cost = meter.card.to_dict()
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
            fp32, details = _export(teacher, work / "fp32", "fp32", source.labels)
        parity = _parity(fp32, reference, texts)
        _save_onnx(work / "onnx", source, fp32, "fp32", {**details, "parity": parity}, meter)
        gate("onnx", work / "onnx", {**details, "parity": parity}, meter)
        if "int8" in wanted and "int8" not in teacher.onnx_precisions:
            skipped["int8"] = (
                f"nothing to quantize: a '{strategy}' model has no encoder (n-grams, a linear "
                "head or trees are already small and cheap); the onnx step is the last"
            )
        elif "int8" in wanted:
            with CostMeter(prices) as meter:  # quantizes the fp32 graph: no second export
                int8, _ = _export(fp32, work / "int8-model", "int8", source.labels)
            _save_onnx(work / "int8", source, int8, "int8", details, meter)
            gate("int8", work / "int8", details, meter)
        payback = volume is not None and isinstance(teacher, EncoderHeadPredictor)
        why_not = _distill_cannot_pay(steps, len(train), volume, prices) if payback else ""
        if "distilled" in wanted and why_not:
            skipped["distilled"] = why_not
        elif "distilled" in wanted and isinstance(teacher, EncoderHeadPredictor):
            from frugalml.ship.distill import distill

            with CostMeter(prices) as meter:
                parallel = scale is not None and scale.parallel
                student = distill(
                    teacher,
                    train.texts,
                    val,
                    labels=train.y,
                    meter=meter,
                    scale=scale,
                    workdir=work / "student-training" if parallel else None,
                )
                student.temperature = fit_temperature(student.logits(texts), val.y)
                int8, details = _export(student, work / "student-int8", "int8", source.labels)
            _save_onnx(work / "distilled", source, int8, "int8", details, meter)
            gate("distilled", work / "distilled", details, meter)
        elif "distilled" in wanted:
            skipped["distilled"] = (
                f"a '{strategy}' model is more than an encoder and a head; the student is "
                "distilled for encoder-and-head models only"
                if isinstance(teacher, Embedder)
                else f"a '{strategy}' model has no encoder to distill"
            )
        if volume is not None:
            shipped = cheapest_step(steps, volume, prices)
        chosen_dir = source_dir if shipped.name == "source" else work / shipped.name
        shutil.copytree(chosen_dir, out)
        if keep_steps is not None:
            for step in steps[1:]:
                shutil.copytree(work / step.name, keep_steps / step.name)
        result = CompressResult(steps, shipped, out, skipped, volume)
        update_manifest(out, compression=result.to_dict(), speed=shipped.speed)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def chain_options(
    steps: list[Step], strategy: str, train_usd: float, train_cpu_s: float, prices: Prices
) -> list[tuple[Step, Option]]:
    """Every measured step as a cost-of-ownership line: training plus what the chain spent
    up to it (the int8 step is quantized from the ONNX one; the student is distilled after
    both ran, but needs neither, so it carries only its own cost)."""
    lines = []
    usd, cpu = train_usd, train_cpu_s
    for step in steps:
        own_usd = float((step.cost or {}).get("usd", 0.0))
        own_cpu = float((step.cost or {}).get("cpu_s", 0.0))
        if step.name == "distilled":
            fixed = (train_usd + own_usd, train_cpu_s + own_cpu)
        else:
            usd, cpu = usd + own_usd, cpu + own_cpu
            fixed = (usd, cpu)
        lines.append((step, step.option(*fixed, strategy, prices)))
    return lines


def cheapest_step(steps: list[Step], volume: float, prices: Prices) -> Step:
    """The accepted ONNX step cheapest to own at `volume` (the source only when no ONNX step
    was accepted): training is the same for all, so only the chain and serving differ."""
    accepted = [(s, o) for s, o in chain_options(steps, "", 0.0, 0.0, prices) if s.accepted]
    exported = [(s, o) for s, o in accepted if s.name != "source"] or accepted
    return min(exported, key=lambda pair: (pair[1].total_usd(volume), pair[1].fixed_usd))[0]


def _distill_cannot_pay(
    steps: list[Step], n_train: int, volume: float | None, prices: Prices
) -> str:
    """Why distilling cannot pay back at `volume`, or '' when it might. The student has half
    the teacher's layers, so it saves at most half of the cheapest accepted step's serving
    cost; and it costs at least one teacher pass over the training texts (their soft labels),
    at the uncompressed model's measured CPU per text."""
    assert volume is not None
    exported = [o for s, o in chain_options(steps, "", 0.0, 0.0, prices) if s.accepted]
    best = min(o.usd_per_prediction for o in exported)
    source = steps[0].option(0.0, 0.0, "", prices)
    least_cost = n_train * source.usd_per_prediction
    most_saved = volume * best / 2
    if most_saved >= least_cost:
        return ""
    return (
        f"cannot pay back at {human(volume)} predictions: it would save at most "
        f"${most_saved:.3g} (half the serving cost) and costs at least ${least_cost:.3g} "
        f"(the teacher's pass over {n_train} training texts)"
    )


def _exportable(source: Bundle, folder: Path) -> OnnxExportable:
    """The source's predictor, once it is known to export: the chain starts from the
    uncompressed model, and from a predictor with the `OnnxExportable` capability."""
    strategy = source.manifest.strategy
    if is_onnx(source.manifest.predictor):
        raise ConfigError(
            f"{folder} holds a '{strategy}' model that is already exported to ONNX",
            ["compress the uncompressed bundle (RUN_DIR/candidates/<rung>)"],
        )
    if not isinstance(source.predictor, OnnxExportable):
        raise ConfigError(
            f"{folder} holds a '{strategy}' model, whose predictor cannot be exported to ONNX "
            "(it has no `export_onnx`)",
            ["ship it uncompressed (--ship none)"],
        )
    return source.predictor


def _export(
    predictor: OnnxExportable, folder: Path, precision: str, labels: tuple[str, ...]
) -> tuple[OnnxExportable, dict[str, Any]]:
    """The predictor exported into `folder` and loaded back from there, as a bundle loads it;
    and what the manifest records of the export (the encoder's fusions, when it fused any)."""
    spec = predictor.export_onnx(folder, precision=precision)
    exported = type(predictor).load(folder, spec, labels)
    assert isinstance(exported, OnnxExportable), "an exported model exports again"
    return exported, {"fusions": spec["fusions"]} if "fusions" in spec else {}


def _parity(onnx: Predictor, reference: np.ndarray, texts: list[str]) -> dict[str, Any]:
    """Max |ONNX - source| over the logits (PyTorch, scikit-learn), and label agreement."""

    if not texts:
        return {"texts": 0, "max_abs_logit_diff": 0.0, "max_abs_proba_diff": 0.0,
                "same_labels": 1.0}  # fmt: skip
    got = onnx.logits(texts)
    t = onnx.temperature
    return {
        "texts": len(texts),
        "max_abs_logit_diff": float(np.abs(got - reference).max()),
        "max_abs_proba_diff": float(
            np.abs(calibrated_proba(got, t) - calibrated_proba(reference, t)).max()
        ),
        "same_labels": float((got.argmax(1) == reference.argmax(1)).mean()),
    }


def _save_onnx(
    folder: Path,
    source: Bundle,
    predictor: Predictor,
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
        extra={
            "train_cost": m.train_cost,
            "compress_cost": meter.card.to_dict(),
            "prices": m.prices,
        },
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
        scores = bundle.predict_proba(val.inputs)
    quality = score(val.y, scores.argmax(1), val.labels)
    timing = measure_speed(bundle, val.inputs, speed)
    size = sum(p.stat().st_size for p in (bundle.path / "model").rglob("*") if p.is_file())
    return Step(name, quality, size / 1e6, timing.to_dict(), accepted, reason, details or {})


def compress_available(*, torch: bool = True) -> bool:
    """ONNX export needs onnx and onnxruntime, plus torch and transformers for an encoder."""
    return installed("onnx", "onnxruntime", *(("torch", "transformers") if torch else ()))
