"""The model being served: a loaded bundle, its version, and what `/v1/model` says about it.

A version names the exact model: the start of its manifest's digest, which covers every field
(labels, temperature) and every file's sha256. Every prediction says which model made it; a
reload of the same bundle keeps the version, and any change to the manifest or the weights
gives a new one.
A model is served only once it has answered: its warm-up prediction must give one finite
probability per label for every text, so a bundle that loads but cannot answer (labels one
short, none at all) is refused at load or reload instead of failing every request after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.bundle import Bundle
from frugalml.errors import BundleError
from frugalml.strategies.base import Explainer, TabularPredictor

Loader = Callable[[Path], Bundle]
# Two lengths, so a predictor that pads per batch builds its kernels for short and long inputs.
WARMUP_TEXTS = ("warm up", "a longer warm-up text that takes more tokens to encode " * 4)


@dataclass(frozen=True)
class ServedModel:
    bundle: Bundle
    version: str
    loaded_at: str

    @property
    def labels(self) -> tuple[str, ...]:
        return self.bundle.labels

    @property
    def tabular(self) -> bool:
        """Tabular bundles take records, checked against the schema they were trained on."""
        return isinstance(self.bundle.predictor, TabularPredictor)

    def record_problems(self, records: Sequence[Any]) -> list[dict[str, Any]]:
        """Missing, unknown or mistyped fields of `records`, each naming item and field."""
        predictor = self.bundle.predictor
        if not isinstance(predictor, TabularPredictor):
            return []
        return predictor.schema.problems(records)

    def explain(self, inputs: Sequence[Any]) -> list[list[dict[str, Any]]] | None:
        """Reason codes per input when the model gives them, else None."""
        predictor = self.bundle.predictor
        return predictor.explain(inputs) if isinstance(predictor, Explainer) else None

    def predict_proba(self, inputs: Sequence[Any]) -> np.ndarray:
        return self.bundle.predict_proba(inputs)

    def warm_up(self) -> None:
        """First calls allocate and pick kernels; a probe should not turn ready before them.
        They also prove the model answers what its manifest promises (see `check_answer`).
        A model that is not a classifier (a recommender) proves it in its own terms."""
        from frugalml.strategies.base import Ranker

        if not self.labels and isinstance(self.bundle.predictor, Ranker):
            self.bundle.predictor.check()
            return
        if not self.labels:
            raise BundleError(
                f"{self.bundle.path.name}: the manifest lists no labels, so no prediction could "
                "be named; the bundle is damaged: re-create it"
            )
        predictor = self.bundle.predictor
        probes: list[Any] = list(WARMUP_TEXTS)
        if isinstance(predictor, TabularPredictor):
            probes = [predictor.schema.example()] * 2
        for _ in range(2):
            proba = self.predict_proba(probes)
        self.check_answer(proba, len(probes))

    def check_answer(self, proba: np.ndarray, n_inputs: int) -> None:
        expected = (n_inputs, len(self.labels))
        if proba.shape != expected:
            raise BundleError(
                f"{self.bundle.path.name}: the model answered {n_inputs} texts with a "
                f"{'x'.join(map(str, proba.shape))} array, not {n_inputs}x{len(self.labels)}: "
                f"the manifest lists {len(self.labels)} labels, so labels and model do not "
                "match; re-create the bundle"
            )
        if not np.isfinite(proba).all():
            raise BundleError(
                f"{self.bundle.path.name}: the model's warm-up probabilities are not finite; "
                "the weights are damaged: re-create the bundle"
            )

    def summary(self) -> dict[str, Any]:
        m = self.bundle.manifest
        metrics = m.metrics.model_dump() if m.metrics else {}
        return {
            "version": self.version,
            "strategy": m.strategy,
            "task": m.task,
            "labels": list(self.labels),
            "predictor": {
                "format": m.predictor.get("format", "native"),
                "precision": m.predictor.get("precision", "fp32"),
            },
            "quality": {
                split: {k: q[k] for k in ("n", "accuracy", "macro_f1") if k in q}
                for split, q in metrics.items()
                if isinstance(q, dict)
            },
            "train_cost": m.train_cost.model_dump() if m.train_cost else None,
            "speed": m.speed.model_dump() if m.speed else None,
            "created": m.created.isoformat(),
            "frugalml_version": m.frugalml_version,
            "data_fingerprint": m.data_fingerprint,
            "bundle": self.bundle.path.name,  # not the path: clients need not see the disk
            "loaded_at": self.loaded_at,
        }


def load_model(path: Path, loader: Loader) -> ServedModel:
    bundle = loader(path)
    return ServedModel(
        bundle,
        version=bundle.version,
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
