"""Memory is forecast before it is spent: a rung that cannot fit is skipped with the reason.

Issue 11: 5,000 labels x 3 rows died with a 33.9 GiB allocation (lbfgs' history for a
classes x n-gram-features head). Here the memory the ladder may use is set low, so that a
many-class set needs more than that without ever allocating much for real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

import frugalml.forecast
from frugalml.data import Dataset, stratified_split
from frugalml.errors import FrugalError, OutOfMemoryError
from frugalml.forecast import Forecast
from frugalml.ladder.run import run_ladder
from frugalml.models.heads import LinearHead
from frugalml.strategies.tfidf import TfidfConfig, TfidfStrategy

MiB = 1 << 20


def many_classes(n_classes: int = 200, per_class: int = 5) -> Dataset:
    """Distinct random texts: every class needs its own n-grams, as real intent sets do."""
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnop"), 6)) for _ in range(4000)]
    texts = [" ".join(rng.choice(words, 8)) for _ in range(n_classes * per_class)]
    return Dataset.from_lists(texts, [f"intent_{i % n_classes}" for i in range(len(texts))])


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes the ladder believes it may allocate (a list, so a test can change it)."""
    room = [8 * MiB]
    monkeypatch.setattr(frugalml.forecast, "available_memory", lambda: room[0])
    return room


def test_the_head_refuses_before_allocating(memory: list[int]) -> None:
    X = sparse.random(300, 20_000, density=0.001, format="csr", dtype=np.float32, random_state=0)
    y = np.arange(300) % 100
    with pytest.raises(OutOfMemoryError) as caught:
        LinearHead.fit(X, y, 100)
    assert caught.value.summary == (
        "the logistic-regression head (100 classes × 20,000 features) needs about 352 MiB "
        "of memory; 8 MiB are available"
    )
    assert caught.value.problems == [
        "free memory, use fewer classes, or leave this rung out (--strategies)"
    ]


def test_the_head_memory_forecast_matches_what_lbfgs_takes() -> None:
    """Binary heads have one weight row; a multinomial one a row per class."""
    assert LinearHead.fit_bytes(1000, 50_000, 2) < LinearHead.fit_bytes(1000, 50_000, 3) / 2
    five_thousand = LinearHead.fit_bytes(5000, 45_000, 5000)
    assert 30 * 2**30 < five_thousand < 60 * 2**30  # the 33.9 GiB was one allocation


def test_tfidf_forecasts_its_memory_and_is_not_timed_when_it_cannot_fit(
    memory: list[int],
) -> None:
    train = stratified_split(many_classes()).train
    forecast = TfidfStrategy(TfidfConfig()).forecast(train, train)
    assert forecast.memory_bytes is not None and forecast.memory_bytes > memory[0]
    assert forecast.basis.startswith("not timed: the logistic-regression head (200 classes")
    memory[0] = 64 << 30
    assert TfidfStrategy(TfidfConfig()).forecast(train, train).wall_s > 0


def test_forecasts_add_up_to_the_larger_memory() -> None:
    total = Forecast(1.0, 1.0, "a", memory_bytes=5) + Forecast(2.0, 2.0, "b", memory_bytes=9)
    assert total.memory_bytes == 9 and total.scaled(2.0, "x").memory_bytes == 9
    assert (Forecast(1.0, 1.0, "a") + Forecast(1.0, 1.0, "b")).memory_bytes is None


def test_the_ladder_skips_a_rung_that_cannot_fit_and_climbs_on(
    memory: list[int], tmp_path: Path, tiny_backbone: Path
) -> None:
    """Every rung forecasts its memory now (the probe's tiny model needs ~20 MiB): the room
    lies between what the probe needs and what the n-gram head does."""
    memory[0] = 128 * MiB
    splits = stratified_split(many_classes())
    result = run_ladder(
        splits,
        ["tfidf", "frozen_probe"],
        tmp_path,
        options={"frozen_probe": {"backbone": str(tiny_backbone), "cache": False}},
    )
    assert [c.strategy for c in result.candidates] == ["frozen_probe"]
    reason = result.skipped["tfidf"]
    assert reason.startswith("forecast: the logistic-regression head (200 classes × ")
    assert "128 MiB are available" in reason


def test_a_rung_that_runs_out_while_fitting_is_skipped_not_a_crash(
    memory: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forecast only bounds the vocabulary from below; the head checks the real one."""
    monkeypatch.setattr(TfidfStrategy, "forecast", lambda self, train, val: Forecast(1, 1, ""))
    with pytest.raises(FrugalError) as caught:  # the only rung was skipped: nothing ran
        run_ladder(stratified_split(many_classes()), ["tfidf"], tmp_path)
    assert type(caught.value) is FrugalError and caught.value.summary == "no strategy could run"
    [reason] = caught.value.problems
    assert reason.startswith("tfidf: the logistic-regression head (200 classes")
    assert not (tmp_path / "candidates" / "tfidf").exists()
