"""Watching the model itself: is the stream still like the data it was trained on?

Every `every` texts, three figures against a reference: the population stability index (PSI)
of the predicted-label distribution, the drop of the mean confidence, and the rate of words
the reference never saw. The reference is the training data when given (`--reference`),
else the first block of the stream. Any figure past its limit raises "model may be stale".
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def psi(expected: dict[str, float], actual: dict[str, float], floor: float = 1e-4) -> float:
    """Population stability index: Σ (a - e)·ln(a / e) over the categories (0.1: some shift,
    0.25: a major one, by the usual reading)."""
    total = 0.0
    for key in set(expected) | set(actual):
        e, a = max(expected.get(key, 0.0), floor), max(actual.get(key, 0.0), floor)
        total += (a - e) * math.log(a / e)
    return total


def shares(counts: dict[str, int] | Counter[str]) -> dict[str, float]:
    n = sum(counts.values())
    return {k: v / n for k, v in counts.items()} if n else {}


@dataclass
class Limits:
    every: int = 500
    psi: float = 0.25
    confidence_drop: float = 0.10
    unknown_rise: float = 0.15


@dataclass
class ModelWatch:
    """Accumulates one block of texts; `close` compares it with the reference."""

    limits: Limits
    labels: dict[str, float] | None = None  # reference label shares
    confidence: float | None = None  # reference mean confidence
    vocabulary: set[str] | None = None
    unknown: float | None = None  # reference unknown-word rate
    block: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_training(
        cls, limits: Limits, texts: Sequence[str], labels: Sequence[str]
    ) -> ModelWatch:
        vocabulary = {w for t in texts for w in words(t)}
        return cls(limits, shares(Counter(labels)), None, vocabulary, 0.0)

    def add(self, labels: Sequence[str], confidence: Sequence[float], texts: Sequence[str]) -> None:
        b = self.block
        counts = b.setdefault("labels", {})
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        b["n"] = b.get("n", 0) + len(labels)
        b["confidence"] = b.get("confidence", 0.0) + float(sum(confidence))
        tokens = [w for t in texts for w in words(t)]
        b["tokens"] = b.get("tokens", 0) + len(tokens)
        if self.vocabulary is None:  # the first block becomes the reference
            b["words"] = sorted(set(b.get("words", [])) | set(tokens))
        if self.vocabulary is not None:
            b["unknown"] = b.get("unknown", 0) + sum(w not in self.vocabulary for w in tokens)

    def full(self) -> bool:
        return int(self.block.get("n", 0)) >= self.limits.every

    def close(self) -> dict[str, Any] | None:
        """Figures of the finished block, with `stale` reasons; the first block of a stream
        without a training reference becomes the reference."""
        b, self.block = self.block, {}
        n = b.get("n", 0)
        if not n:
            return None
        confidence = b["confidence"] / n
        label_shares = shares(b["labels"])
        unknown = b.get("unknown", 0) / b["tokens"] if b.get("tokens") and "unknown" in b else None
        if self.labels is None or self.vocabulary is None:  # no reference yet: this block
            self.labels, self.vocabulary = label_shares, set(b["words"])
            self.confidence, self.unknown = confidence, 0.0
            return None
        if self.confidence is None:  # training data has labels and words, not confidences
            self.confidence = confidence
        figures = {
            "texts": n,
            "psi": psi(self.labels, label_shares),
            "label_shares": label_shares,
            "reference_shares": self.labels,
            "confidence": confidence,
            "reference_confidence": self.confidence,
            "unknown_rate": unknown,
            "reference_unknown_rate": self.unknown,
        }
        stale = []
        if figures["psi"] >= self.limits.psi:
            stale.append(f"label distribution PSI {figures['psi']:.2f} ≥ {self.limits.psi}")
        if self.confidence - confidence >= self.limits.confidence_drop:
            stale.append(f"mean confidence fell {self.confidence - confidence:.2f}")
        if unknown is not None and unknown - (self.unknown or 0.0) >= self.limits.unknown_rise:
            stale.append(f"{unknown:.0%} of words are unknown to the reference")
        figures["stale"] = stale
        return figures

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "confidence": self.confidence,
            "unknown": self.unknown,
            "vocabulary": sorted(self.vocabulary) if self.vocabulary is not None else None,
        }

    def restore(self, reference: dict[str, Any] | None, block: dict[str, Any] | None) -> None:
        if reference:
            self.labels, self.confidence = reference["labels"], reference["confidence"]
            self.unknown = reference["unknown"]
            vocab = reference["vocabulary"]
            self.vocabulary = set(vocab) if vocab is not None else None
        self.block = block or {}
