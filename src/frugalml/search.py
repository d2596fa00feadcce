"""The ladder: run strategies from cheapest to dearest, each under a cost meter, and choose.

Each rung is fitted, saved as a bundle, reloaded, and only then scored and timed, so the
figures describe what will be shipped. The choice is the cheapest candidate that meets the
quality bar, else the best one, with a one-line reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalml.bundle import load, save_bundle, update_manifest
from frugalml.calibration import calibrated_proba, expected_calibration_error, fit_temperature
from frugalml.config import Budget, SpeedConfig
from frugalml.costs import CostCard, CostMeter, Prices
from frugalml.data.split import Splits
from frugalml.evaluate import Quality, Speed, measure_speed, score
from frugalml.strategies import get_strategy

METRICS = ("accuracy", "macro_f1")
Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class Candidate:
    """One finished rung: what it scored, what it cost, how fast the saved model runs."""

    strategy: str
    config: dict[str, Any]
    val: Quality
    test: Quality | None
    cost: CostCard
    speed: Speed
    bundle: Path
    ece: float  # expected calibration error on validation, after temperature scaling

    def summary(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "config": self.config,
            "val": self.val.to_dict(),
            "test": self.test.to_dict() if self.test else None,
            "cost": self.cost.to_dict(),
            "speed": self.speed.to_dict(),
            "bundle": str(self.bundle),
            "val_ece": self.ece,
        }


@dataclass
class LadderResult:
    candidates: list[Candidate]
    chosen: Candidate
    reason: str
    skipped: dict[str, str] = field(default_factory=dict)


def run_ladder(
    splits: Splits,
    strategies: list[str],
    run_dir: Path,
    *,
    budget: Budget | None = None,
    metric: str = "macro_f1",
    target: float | None = None,
    prices: Prices | None = None,
    speed: SpeedConfig | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    progress: Progress | None = None,
) -> LadderResult:
    """Fit each strategy in ladder order; write candidates under `run_dir/candidates/`."""
    notify = progress or (lambda event, data: None)
    budget = budget or Budget()
    ordered = sorted(strategies, key=lambda name: get_strategy(name).cost_rank)
    candidates, skipped = [], {}
    for name in ordered:
        registered = get_strategy(name)
        if not registered.available():
            skipped[name] = f"needs the '{registered.extra}' extra"
            notify("skipped", {"strategy": name, "reason": skipped[name]})
            continue
        notify("start", {"strategy": name})
        candidate = _run_rung(
            name, splits, run_dir, budget, prices, speed, (options or {}).get(name, {})
        )
        candidates.append(candidate)
        notify("done", {"strategy": name, "candidate": candidate})
    if not candidates:
        raise RuntimeError(f"no strategy could run: {skipped}")
    chosen, reason = choose(candidates, metric, target)
    return LadderResult(candidates, chosen, reason, skipped)


def _run_rung(
    name: str,
    splits: Splits,
    run_dir: Path,
    budget: Budget,
    prices: Prices | None,
    speed: SpeedConfig | None,
    options: dict[str, Any],
) -> Candidate:
    strategy = get_strategy(name).build(**options)
    labels = splits.train.labels
    with CostMeter(prices) as meter:  # calibration is part of what training costs
        predictor = strategy.fit(splits.train, splits.val, budget=budget, meter=meter)
        val_logits = predictor.logits(splits.val.texts)
        predictor.temperature = fit_temperature(val_logits, splits.val.y)
    val_proba = calibrated_proba(val_logits, predictor.temperature)
    val = score(splits.val.y, val_proba.argmax(1), labels)
    ece = expected_calibration_error(val_proba, splits.val.y)
    config = strategy.config.model_dump(mode="json")
    folder = save_bundle(
        run_dir / "candidates" / name,
        predictor,
        strategy=name,
        config=config,
        task=splits.train.task,
        data_fingerprint=splits.train.fingerprint(),
        extra={"train_cost": meter.card.to_dict()},
    )
    reloaded = load(folder)  # test quality and speed describe the saved model, not the live one
    test = None
    if len(splits.test):
        test = score(splits.test.y, reloaded.predict_proba(splits.test.texts).argmax(1), labels)
    timing = measure_speed(reloaded, splits.val.texts, speed)
    update_manifest(
        folder,
        metrics={"val": val.to_dict(), "test": test.to_dict() if test else None, "val_ece": ece},
        speed=timing.to_dict(),
    )
    return Candidate(name, config, val, test, meter.card, timing, folder, ece)


def choose(candidates: list[Candidate], metric: str, target: float | None) -> tuple[Candidate, str]:
    """Cheapest (training $) candidate meeting the bar on validation, else the best one."""
    by_cost = sorted(candidates, key=lambda c: (c.cost.usd, c.cost.cpu_s))
    if target is not None:
        meeting = [c for c in by_cost if c.val.metric(metric) >= target]
        if meeting:
            pick = meeting[0]
            return pick, (
                f"{pick.strategy} is the cheapest candidate with validation {metric} "
                f"≥ {target:g} ({pick.val.metric(metric):.3f})"
            )
    best = max(by_cost, key=lambda c: c.val.metric(metric))  # max keeps the first (cheapest) tie
    lead = f"no candidate reached {metric} {target:g}; " if target is not None else ""
    return best, (
        f"{lead}{best.strategy} has the best validation {metric} ({best.val.metric(metric):.3f})"
    )


def publish(chosen: Candidate, run_dir: Path) -> Path:
    """The chosen candidate becomes `run_dir/bundle` (hard links where possible, else copies)."""
    target = run_dir / "bundle"
    shutil.copytree(chosen.bundle, target, copy_function=_link_or_copy)
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
