"""Quality with 95% bootstrap confidence intervals, and inference speed of a loaded model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from frugalml.config import SpeedConfig


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predictions."""
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return np.asarray(flat.reshape(n_classes, n_classes))


def _f1_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """Per-class F1 for one matrix (k, k) or a stack of them (b, k, k)."""
    tp = np.diagonal(matrix, axis1=-2, axis2=-1).astype(np.float64)
    predicted, actual = matrix.sum(axis=-2), matrix.sum(axis=-1)
    denominator = predicted + actual
    return np.asarray(np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in y_true (scikit-learn's 'macro' on those labels)."""
    matrix = confusion(y_true, y_pred, n_classes)
    present = matrix.sum(axis=1) > 0
    return float(_f1_from_confusion(matrix)[present].mean())


@dataclass
class Quality:
    """Point estimates with 95% bootstrap intervals, per-class report and confusion matrix."""

    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    macro_f1: float
    macro_f1_ci: tuple[float, float]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Quality:
        fields = {
            **data,
            "accuracy_ci": tuple(data["accuracy_ci"]),
            "macro_f1_ci": tuple(data["macro_f1_ci"]),
        }
        return cls(**fields)

    def metric(self, name: str) -> float:
        return float(getattr(self, name))

    def lower_bound(self, name: str) -> float:
        """The low end of the metric's 95% bootstrap interval."""
        return float(getattr(self, f"{name}_ci")[0])

    def meets(self, name: str, target: float, *, strict: bool = False) -> bool:
        """Point estimate ≥ target; with `strict`, the interval's low end must clear it too."""
        return (self.lower_bound(name) if strict else self.metric(name)) >= target


def score(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> Quality:
    """Bootstrap resamples whole examples; all resamples are scored at once with bincount."""
    k = len(labels)
    matrix = confusion(y_true, y_pred, k)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), size=(n_boot, len(y_true)))
    cells = y_true[idx] * k + y_pred[idx]
    offsets = (np.arange(n_boot) * k * k)[:, None]
    boot = np.bincount((cells + offsets).ravel(), minlength=n_boot * k * k).reshape(n_boot, k, k)
    boot_acc = np.trace(boot, axis1=1, axis2=2) / len(y_true)
    present = boot.sum(axis=2) > 0
    boot_f1 = (_f1_from_confusion(boot) * present).sum(1) / np.maximum(present.sum(1), 1)
    return Quality(
        n=len(y_true),
        accuracy=float(np.trace(matrix) / max(len(y_true), 1)),
        accuracy_ci=_interval(boot_acc),
        macro_f1=macro_f1(y_true, y_pred, k),
        macro_f1_ci=_interval(boot_f1),
        per_class=_per_class(matrix, labels),
        confusion=matrix.tolist(),
    )


def _interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def _per_class(matrix: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    tp = np.diagonal(matrix).astype(np.float64)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = _f1_from_confusion(matrix)
    return {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }


class _Predicts(Protocol):
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass
class Speed:
    """Latency at batch 1 and throughput at a larger batch, on the loaded model."""

    latency_p50_ms: float
    latency_p95_ms: float
    throughput_per_s: float
    throughput_batch: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_speed(
    model: _Predicts, texts: Sequence[str], config: SpeedConfig | None = None
) -> Speed:
    """Times real calls on real texts (cycled if there are few) after one warm-up call."""
    config = config or SpeedConfig()
    pool = list(texts) or ["hello"]
    model.predict_proba(pool[: config.throughput_batch])  # warm-up: lazy init, caches
    latencies = []
    for i in range(config.latency_calls):
        start = time.perf_counter()
        model.predict_proba([pool[i % len(pool)]])
        latencies.append(time.perf_counter() - start)
    batch_texts = [pool[i % len(pool)] for i in range(config.throughput_texts)]
    start = time.perf_counter()
    for i in range(0, len(batch_texts), config.throughput_batch):
        model.predict_proba(batch_texts[i : i + config.throughput_batch])
    elapsed = time.perf_counter() - start
    p50, p95 = np.percentile(np.asarray(latencies) * 1000, [50, 95])
    return Speed(float(p50), float(p95), len(batch_texts) / elapsed, config.throughput_batch)
