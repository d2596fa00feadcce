"""Model monitoring: PSI of the predicted labels, the confidence drop and the unknown-word rate
against a reference (the training data, or the stream's first block) raise "stale"."""

from __future__ import annotations

import math

import pytest

from frugalml.apps.monitor.drift import Limits, ModelWatch, psi

WORDS = "profit rose sales fell shares order outlook"


def _block(
    watch: ModelWatch, labels: dict[str, int], confidence: float, text: str = WORDS
) -> dict[str, object] | None:
    names = [label for label, n in labels.items() for _ in range(n)]
    watch.add(names, [confidence] * len(names), [text] * len(names))
    assert watch.full()
    return watch.close()


def test_psi_is_zero_for_equal_shares_and_matches_its_formula() -> None:
    assert psi({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert psi({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}) == pytest.approx(expected)
    assert psi({"a": 1.0}, {"a": 0.5, "b": 0.5}) > 2  # a label never seen: floored, not inf


def test_the_first_block_is_the_reference_and_a_like_block_is_not_stale() -> None:
    watch = ModelWatch(Limits(every=100))
    assert _block(watch, {"neutral": 60, "negative": 20, "positive": 20}, 0.9) is None
    figures = _block(watch, {"neutral": 58, "negative": 22, "positive": 20}, 0.88)
    assert figures is not None and figures["stale"] == []
    assert figures["psi"] < 0.01 and figures["unknown_rate"] == 0.0


def test_a_label_shift_and_a_confidence_drop_each_raise_stale() -> None:
    watch = ModelWatch(Limits(every=100, psi=0.25, confidence_drop=0.10))
    _block(watch, {"neutral": 60, "negative": 20, "positive": 20}, 0.9)
    shifted = _block(watch, {"neutral": 20, "negative": 70, "positive": 10}, 0.9)
    assert shifted is not None and len(shifted["stale"]) == 1
    assert shifted["psi"] >= 0.25 and "PSI" in shifted["stale"][0]
    unsure = _block(watch, {"neutral": 60, "negative": 20, "positive": 20}, 0.75)
    assert unsure is not None and unsure["stale"] == ["mean confidence fell 0.15"]
    just_under = _block(watch, {"neutral": 60, "negative": 20, "positive": 20}, 0.81)
    assert just_under is not None and just_under["stale"] == []


def test_a_training_reference_judges_the_first_block_and_survives_a_restart() -> None:
    limits = Limits(every=100)
    texts, labels = [WORDS] * 10, ["neutral"] * 6 + ["negative"] * 2 + ["positive"] * 2
    watch = ModelWatch.from_training(limits, texts, labels)
    # the first block is already compared with the training labels and vocabulary
    first = _block(watch, {"negative": 80, "neutral": 20}, 0.9, "zorblax frobnicate profit")
    assert first is not None and first["psi"] >= 0.25
    assert first["unknown_rate"] == pytest.approx(2 / 3)
    assert any("PSI" in r for r in first["stale"]) and any("unknown" in r for r in first["stale"])
    restarted = ModelWatch(limits)
    restarted.restore(watch.to_dict(), {})
    # the first block's mean confidence became the confidence reference
    later = _block(restarted, {"neutral": 60, "negative": 20, "positive": 20}, 0.7)
    assert later is not None and later["stale"] == ["mean confidence fell 0.20"]
