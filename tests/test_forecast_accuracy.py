"""Forecasts of time and memory for every rung, kept beside the actuals, and what they cost.

Issue 18: every built-in rung forecasts its peak memory; the ladder reports forecast ÷ actual
for wall, CPU and peak RSS per rung and forecasting's share of the ladder's CPU; rungs share
calibration work instead of paying for it twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import frugalml
import frugalml.strategies.tfidf as tfidf_module
from frugalml.data.split import Splits
from frugalml.forecast import remembered, rss_bytes, startup_seconds, warm_up
from frugalml.strategies import get_strategy, strategy_names
from frugalml.strategies.tfidf import head_scale

TINY: dict[str, dict[str, Any]] = {
    "top_layers": {"train": {"epochs": 1}},
    "full": {"train": {"epochs": 1}},
    "lora": {"train": {"epochs": 1}},
    "setfit": {"train": {"epochs": 1}, "shots": 4, "iterations": 2},
}


def options(name: str, backbone: Path) -> dict[str, Any]:
    registered = get_strategy(name)
    fields = registered.config.model_fields
    return {**({"backbone": str(backbone)} if "backbone" in fields else {}), **TINY.get(name, {})}


@pytest.mark.parametrize("name", [n for n in strategy_names() if "text" in get_strategy(n).inputs])
def test_every_text_rung_forecasts_its_peak_memory(
    name: str, demo_splits: Splits, tiny_backbone: Path
) -> None:
    registered = get_strategy(name)
    if not registered.available():
        pytest.skip(f"needs the '{registered.extra}' extra")
    before = rss_bytes()
    forecast = registered.build(**options(name, tiny_backbone)).forecast(
        demo_splits.train, demo_splits.val
    )
    assert forecast.memory_bytes is not None and forecast.memory_bytes > 0
    assert forecast.peak_rss_bytes is not None
    # The peak is what the process holds when the rung starts plus what it needs: at least
    # the need, and within what was resident around the forecast plus the need.
    assert forecast.peak_rss_bytes >= forecast.memory_bytes
    assert forecast.peak_rss_bytes <= max(before, rss_bytes()) + forecast.memory_bytes
    assert forecast.wall_s > 0 and forecast.cpu_s > 0


def test_the_ladder_reports_forecast_over_actual_and_what_forecasting_cost(
    small_csv: Path, tmp_path: Path, tiny_backbone: Path
) -> None:
    result = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        strategies=["tfidf", "frozen_probe"],
        options={"frozen_probe": {"backbone": str(tiny_backbone)}},
        ship="none",
    )
    ladder = result.ladder
    for candidate in ladder.candidates:
        ratios = candidate.summary()["forecast_over_actual"]
        assert set(ratios) == {"wall_s", "cpu_s", "peak_rss_mb"}
        assert all(value is not None and value > 0 for value in ratios.values()), ratios
        forecast = candidate.forecast or {}
        assert ratios["peak_rss_mb"] == pytest.approx(
            forecast["peak_rss_mb"] / candidate.cost.peak_rss_mb
        )
    cost = ladder.forecast_cost
    assert cost["cpu_s"] > 0 and 0 <= cost["startup_cpu_s"] <= cost["cpu_s"]
    share = ladder.forecast_share()
    assert share is not None and 0 < share < 1
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["forecast_cost"]["share_of_ladder_cpu"] == pytest.approx(share)
    assert report["leaderboard"][0]["forecast_over_actual"]["cpu_s"] > 0
    markdown = (result.run_dir / "report.md").read_text()
    assert "forecast peak memory" in markdown and "of the ladder's CPU" in markdown


def test_hybrid_reuses_the_tfidf_calibration(
    demo_splits: Splits, tiny_backbone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The n-grams are fitted on the subsample once for both rungs (and once more on its
    first half, for the vocabulary's growth): the hybrid forecast adds no vectorizing."""
    fitted: list[int] = []
    original = tfidf_module.NgramFeatures.fit

    def counting(texts: Any, config: Any) -> Any:
        fitted.append(len(texts))
        return original(texts, config)

    monkeypatch.setattr(tfidf_module.NgramFeatures, "fit", counting)
    train = demo_splits.train.subset(np.arange(len(demo_splits.train) - 1))  # unseen data
    get_strategy("tfidf").build().forecast(train, demo_splits.val)
    after_tfidf = len(fitted)
    assert after_tfidf >= 1
    hybrid = get_strategy("hybrid").build(backbone=str(tiny_backbone), cache=False)
    forecast = hybrid.forecast(train, demo_splits.val)
    assert len(fitted) == after_tfidf and forecast.cpu_s > 0


def test_remembered_computes_once_per_key() -> None:
    calls: list[int] = []
    key = ("test", id(calls))
    assert remembered(key, lambda: calls.append(1) or 7) == 7
    assert remembered(key, lambda: calls.append(1) or 8) == 7
    assert calls == [1]


def test_start_up_runs_once_and_is_counted_apart() -> None:
    ran: list[int] = []
    key = ("test-start-up", id(ran))
    _, cpu0 = startup_seconds()
    warm_up(key, lambda: ran.append(sum(range(200_000))))
    warm_up(key, lambda: ran.append(0))
    _, cpu1 = startup_seconds()
    assert len(ran) == 1 and cpu1 >= cpu0


def test_the_head_scales_with_lbfgs_work() -> None:
    """Same data: 1. More examples: more iterations, each over more values and weights, but
    less than linearly in weights when the vocabulary grows more slowly than the data."""
    assert head_scale(1000, 1000, 5e4, 5e4, 9000, 9000, 77) == pytest.approx(1.0)
    more = head_scale(1000, 8000, 1.8e5, 1.44e6, 12_700, 35_000, 77)
    assert 8**0.27 * 35_000 / 12_700 < more < 8**1.27
    # Few classes: the stored values weigh more than the weights do.
    few = head_scale(400, 1600, 1.2e5, 4.8e5, 17_000, 45_000, 3)
    many = head_scale(400, 1600, 1.2e5, 4.8e5, 17_000, 45_000, 77)
    assert few > many
