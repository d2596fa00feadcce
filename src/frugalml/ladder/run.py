"""The ladder: run strategies from cheapest to dearest, each under a cost meter, and choose.

Each rung is fitted, saved as a bundle, reloaded, and only then scored and timed, so the
figures describe what will be shipped. The choice is the cheapest candidate that meets the
quality bar, else the best one, with a one-line reason. When a test set is there and the
chosen rung's test score misses the bar by more than its interval, the result says so, and
names the rung likely to meet it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.bundle import load, read_manifest, save_bundle, update_manifest
from frugalml.config import Budget, Scale, SpeedConfig
from frugalml.costs import CostCard, CostMeter, Prices
from frugalml.data.split import Splits
from frugalml.errors import ConfigError, FrugalError, OutOfMemoryError
from frugalml.forecast import (
    Forecast,
    memory_shortage,
    rss_bytes,
    startup_seconds,
    stopwatch,
)
from frugalml.ladder.calibration import (
    calibrated_proba,
    expected_calibration_error,
    fit_temperature,
)
from frugalml.ladder.ownership import Option, human
from frugalml.ladder.scale import fit_rung
from frugalml.metrics import Metric, Quality, Speed, get_metric, measure_speed, score
from frugalml.strategies import Predictor, Strategy, get_strategy
from frugalml.strategies.base import FitReport, Ranker, SelfCalibrated

# What a rung's validation and test outcomes offer metrics: predicted labels, calibrated
# probabilities, and rankings derived from them (a text is a query, its class the relevant item).
PROVIDES = ("labels", "probabilities", "rankings")
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
    ece: float | None  # expected calibration error on validation (None: a ranker's)
    forecast: dict[str, Any] | None = None  # wall_s, cpu_s, peak_rss_mb, usd, basis: before fitting
    stopped: str = ""  # "deadline" when the budget stopped training early

    def forecast_ratio(self) -> float | None:
        """Actual / forecast wall time: 1.0 is a perfect forecast."""
        if not self.forecast or not self.forecast.get("wall_s"):
            return None
        return self.cost.wall_s / float(self.forecast["wall_s"])

    def forecast_over_actual(self) -> dict[str, float | None]:
        """Forecast ÷ actual wall, CPU and peak RSS (1.0 is perfect; None where either is
        missing). Peak RSS is the process's, as the cost card reads it: the resident memory
        when the rung was forecast plus what it was forecast to need."""
        f, card = self.forecast or {}, self.cost
        pairs = {
            "wall_s": (f.get("wall_s"), card.wall_s),
            "cpu_s": (f.get("cpu_s"), card.cpu_s),
            "peak_rss_mb": (f.get("peak_rss_mb"), card.peak_rss_mb),
        }
        return {
            key: float(forecast) / actual if forecast and actual else None
            for key, (forecast, actual) in pairs.items()
        }

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
            "forecast": self.forecast,
            "forecast_ratio": self.forecast_ratio(),
            "forecast_over_actual": self.forecast_over_actual(),
            "stopped": self.stopped,
        }


@dataclass(frozen=True)
class Shortfall:
    """The chosen rung's test score misses the bar by more than its 95% interval: the validation
    score it was chosen on was optimistic (test data collected apart from the training data, or
    a lucky validation draw when `strict` is off)."""

    strategy: str
    metric: str
    bar: float
    val: float
    test: float
    test_ci: tuple[float, float]
    next_rung: str | None  # the rung likely to meet the bar, if any
    next_why: str  # why that one: 'test 0.943', or 'not run: ...'

    def message(self) -> str:
        side = "below" if get_metric(self.metric).higher_is_better else "above"
        low, high = self.test_ci
        likely = (
            f"Likely to meet it: {self.next_rung} ({self.next_why})."
            if self.next_rung
            else "No rung of this run is likely to meet it: add dearer ones with --strategies."
        )
        return (
            f"{self.strategy}'s test {self.metric} {self.test:.3f} [{low:.3f}, {high:.3f}] is "
            f"{side} the bar {self.bar:g} by more than its 95% interval (validation "
            f"{self.val:.3f}): the validation score was optimistic. {likely} If the test data "
            "was collected apart from the training data, validate on data like it (--val FILE)."
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message()}


@dataclass
class LadderResult:
    candidates: list[Candidate]
    chosen: Candidate
    reason: str
    skipped: dict[str, str] = field(default_factory=dict)
    # What forecasting itself cost (wall_s, cpu_s), and of it the one-off start-up it ran
    # first (startup_wall_s, startup_cpu_s): imports and a first model load.
    forecast_cost: dict[str, float] = field(default_factory=dict)
    shortfall: Shortfall | None = None  # the chosen rung missed the bar on test
    volume: float | None = None  # predictions the choice was priced for (None: training only)
    prices: Prices = field(default_factory=Prices)
    metric: str = "macro_f1"  # the bar the choice was made against: metric, target, strictness
    target: float | None = None
    strict: bool = False

    def forecast_share(self) -> float | None:
        """Forecasting's share of the ladder's CPU (rungs that ran plus every forecast), less
        the one-off start-up forecasts ran first (imports, a first model load), which the
        rungs would have paid without them."""
        spent = self.forecast_cost.get("cpu_s", 0.0)
        total = spent + sum(c.cost.cpu_s for c in self.candidates)
        startup = self.forecast_cost.get("startup_cpu_s", 0.0)
        return (spent - startup) / total if total > 0 else None


class LadderClock:
    """What the whole ladder has spent so far, for a hard budget across rungs."""

    def __init__(self, budget: Budget, prices: Prices) -> None:
        self.budget, self.prices = budget, prices
        self._t0, self._c0 = time.perf_counter(), os.times()

    def left_s(self) -> float | None:
        """Wall seconds left under the tightest cap ($ and kWh converted at the set prices)."""
        wall = time.perf_counter() - self._t0
        cpu = sum(os.times()[:4]) - sum(self._c0[:4])
        b, p = self.budget, self.prices
        limits = []
        if b.max_wall_s is not None:
            limits.append(b.max_wall_s - wall)
        if b.max_usd is not None:
            limits.append(p.wall_s_for(b.max_usd) - wall)
        if b.max_kwh is not None:  # estimated energy: CPU-s at watts_per_core, all cores busy
            limits.append((p.cpu_s_for(b.max_kwh) - cpu) / (os.cpu_count() or 1))
        return min(limits) if limits else None


# What a ranker's leaderboard shows beside the metric it is chosen by.
RANKING_METRICS = ("ndcg@10", "recall@10", "mrr", "coverage@10", "popularity_bias@10")


def rank_metrics(metric: str) -> list[str]:
    """The metric chosen by first, then the usual ranking figures."""
    return list(dict.fromkeys([metric, *(get_metric(m).name for m in RANKING_METRICS)]))


def ladder_metric(name: str) -> Metric:
    """The registered metric `name`, if the ladder can score its rungs by it."""
    metric = get_metric(name)
    if metric.needs not in PROVIDES:
        raise ConfigError(
            f"the ladder cannot choose by '{metric.name}': it needs "
            f"{metric.needs.replace('_', ' ')}, and a classifier's outcomes give "
            f"{', '.join(PROVIDES)}",
            ["choose by a metric of labels, probabilities or rankings, e.g. macro_f1 or brier"],
        )
    return metric


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
    resume: bool = False,
    strict: bool = False,
    scale: Scale | None = None,
    volume: float | None = None,
) -> LadderResult:
    """Climb cheapest first; stop at the first rung meeting `target`; never overrun `budget`.

    Before each rung its cost is forecast; a rung forecast to overrun what is left is skipped.
    With `strict`, a rung meets the target only when the low end of its validation score's
    95% interval does (the high end for a lower-is-better metric such as brier): fewer stops
    on a lucky small validation set. With `volume` (predictions to serve), the choice among
    the rungs that meet the bar is the cheapest to own: training + volume * serving cost.
    With `resume`, finished rungs in `run_dir` are reused and an interrupted one continues
    from its last checkpoint.
    """
    notify = progress or (lambda event, data: None)
    chooser = ladder_metric(metric)
    metric = chooser.name
    prices = prices or Prices()
    clock = LadderClock(budget or Budget(), prices)
    candidates: list[Candidate] = []
    skipped: dict[str, str] = {}
    forecast_cost = {"wall_s": 0.0, "cpu_s": 0.0, "startup_wall_s": 0.0, "startup_cpu_s": 0.0}
    met: Candidate | None = None
    not_run: dict[str, str] = {}  # rungs that could have run, and why they did not
    plans = _plan(strategies, splits.train.kind, run_dir, resume, options or {}, skipped, notify)
    for name, strategy, finished in plans:
        if finished is not None:
            candidates.append(finished)
            notify("reused", {"strategy": name, "candidate": finished, "metric": metric})
        else:
            assert strategy is not None
            if met is not None:  # no forecast either: the ladder pays only for what it may run
                skipped[name] = (
                    f"target {metric} {chooser.symbol} {target:g} already met by {met.strategy}"
                )
                notify("skipped", {"strategy": name, "reason": skipped[name]})
                not_run[name] = skipped[name]
                continue
            try:  # a rung short of memory is skipped whenever it finds out, never a crash
                forecast = _forecast(strategy, splits, prices, forecast_cost, notify, name)
                reason = _why_skip(clock, forecast)
                if not reason:
                    notify("start", {"strategy": name})
                    candidate = _run_rung(
                        name,
                        strategy,
                        splits,
                        run_dir,
                        Budget(max_wall_s=clock.left_s()),
                        prices,
                        speed,
                        forecast,
                        metric,
                        scale or Scale(),
                    )
            except OutOfMemoryError as error:
                shutil.rmtree(run_dir / "work" / name, ignore_errors=True)
                reason = error.summary
            if reason:
                skipped[name] = not_run[name] = reason
                notify("skipped", {"strategy": name, "reason": reason})
                continue
            candidates.append(candidate)
            notify("done", {"strategy": name, "candidate": candidate, "metric": metric})
        last = candidates[-1]
        if target is not None and met is None and last.val.meets(metric, target, strict=strict):
            met = last
    if not candidates:
        raise FrugalError("no strategy could run", [f"{k}: {v}" for k, v in skipped.items()])
    chosen, reason = choose(candidates, metric, target, strict=strict, volume=volume, prices=prices)
    order = [name for name, _, _ in plans]
    above = {k: v for k, v in not_run.items() if order.index(k) > order.index(chosen.strategy)}
    shortfall = held_out_shortfall(candidates, chosen, metric, target, above)
    return LadderResult(
        candidates, chosen, reason, skipped, forecast_cost, shortfall, volume, prices,
        metric, target, strict,
    )  # fmt: skip


_Plan = tuple[str, Strategy | None, Candidate | None]


def _plan(
    strategies: list[str],
    kind: str,
    run_dir: Path,
    resume: bool,
    options: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    notify: Progress,
) -> list[_Plan]:
    """Rungs cheapest first; on resume a rung a previous run finished comes as its candidate.

    Each rung is forecast just before it would run, not all up front: a forecast times real
    work (a model load, a few steps), and rungs above the one that meets the bar never run.
    A rung that cannot take the data's input kind (`kind`: text, tabular...) is skipped.
    """
    plans: list[_Plan] = []
    for name in sorted(strategies, key=lambda n: get_strategy(n).cost_rank):
        registered = get_strategy(name)
        if kind not in registered.inputs:
            skipped[name] = f"takes {' or '.join(registered.inputs)}, data is {kind}"
            notify("skipped", {"strategy": name, "reason": skipped[name]})
            continue
        if not registered.available():
            skipped[name] = (
                f"needs the '{registered.extra}' extra: pip install 'frugalml[{registered.extra}]'"
            )
            notify("skipped", {"strategy": name, "reason": skipped[name]})
            continue
        done = _finished(run_dir / "candidates" / name) if resume else None
        if done is not None:
            plans.append((name, None, done))
        else:
            plans.append((name, registered.build(**options.get(name, {})), None))
    return plans


def _why_skip(clock: LadderClock, forecast: dict[str, Any] | None) -> str:
    left = clock.left_s()
    if left is not None and left <= 0:
        return "the budget is spent"
    if forecast and left is not None and forecast["wall_s"] > left:
        return f"forecast {forecast['wall_s']:.0f} s > {left:.0f} s left of the budget"
    shortage = forecast and memory_shortage(forecast.get("memory_bytes") or 0, "the rung")
    if forecast and shortage:  # a forecast not timed for want of memory says what needs it
        basis = str(forecast["basis"])
        return f"forecast: {basis[11:] if basis.startswith('not timed: ') else shortage}"
    return ""


def _forecast(
    strategy: Strategy,
    splits: Splits,
    prices: Prices,
    total: dict[str, float],
    notify: Progress,
    name: str,
) -> dict[str, Any] | None:
    forecast_fn = getattr(strategy, "forecast", None)
    if forecast_fn is None:
        return None
    resident = rss_bytes()  # what the rung's peak memory is forecast above, if it says not
    wall0, cpu0 = startup_seconds()
    with stopwatch() as watch:
        forecast: Forecast = forecast_fn(splits.train, splits.val)
    wall1, cpu1 = startup_seconds()
    total["wall_s"] += watch.wall_s
    total["cpu_s"] += watch.cpu_s
    total["startup_wall_s"] += wall1 - wall0
    total["startup_cpu_s"] += cpu1 - cpu0
    peak, need = forecast.peak_rss_bytes, forecast.memory_bytes
    if peak is None and need is not None:
        peak = resident + need
    data = {
        **forecast.to_dict(),
        "usd": prices.usd_for(forecast.wall_s),
        "took_s": watch.wall_s,
        "took_cpu_s": watch.cpu_s,
        "startup_cpu_s": cpu1 - cpu0,  # of took_cpu_s: one-off imports and a first model load
        "peak_rss_mb": None if peak is None else peak / 2**20,
    }
    notify("forecast", {"strategy": name, "forecast": data})
    return data


def _run_rung(
    name: str,
    strategy: Strategy,
    splits: Splits,
    run_dir: Path,
    budget: Budget,
    prices: Prices,
    speed: SpeedConfig | None,
    forecast: dict[str, Any] | None,
    metric: str,
    scale: Scale,
) -> Candidate:
    labels = splits.train.labels
    workdir = run_dir / "work" / name
    with CostMeter(prices) as meter:  # calibration is part of what training costs
        predictor = fit_rung(
            name,
            strategy,
            splits.train,
            splits.val,
            budget=budget,
            meter=meter,
            workdir=workdir,
            scale=scale,
            prices=prices,
        )
        if not isinstance(predictor, Ranker):
            val_logits = _validation_logits(predictor, splits.val.inputs)
            predictor.temperature = (
                1.0
                if isinstance(predictor, SelfCalibrated) and predictor.calibration
                else fit_temperature(val_logits, splits.val.y)
            )
    if isinstance(predictor, Ranker):  # rankings: scored as they are, nothing to calibrate
        val, ece = Quality.of(predictor.outcomes(splits.val), rank_metrics(metric)), None
    else:
        val_proba = calibrated_proba(val_logits, predictor.temperature)
        val = score(splits.val.y, val_proba.argmax(1), labels, proba=val_proba, metrics=[metric])
        ece = expected_calibration_error(val_proba, splits.val.y)
    config = strategy.config.model_dump(mode="json")
    folder = run_dir / "candidates" / name
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished one left by a killed run
    save_bundle(
        folder,
        predictor,
        strategy=name,
        config=config,
        task=splits.train.task,
        data_fingerprint=splits.train.fingerprint(),
        extra={"train_cost": meter.card.to_dict(), "prices": prices.to_dict()},
    )
    reloaded = load(folder)  # test quality and speed describe the saved model, not the live one
    test = None
    if isinstance(reloaded.predictor, Ranker):
        if len(splits.test):
            test = Quality.of(reloaded.predictor.outcomes(splits.test), rank_metrics(metric))
        timing = measure_speed(reloaded, reloaded.predictor.queries(splits.val), speed)
    else:
        if len(splits.test):
            proba = reloaded.predict_proba(splits.test.inputs)
            test = score(splits.test.y, proba.argmax(1), labels, proba=proba, metrics=[metric])
        timing = measure_speed(reloaded, splits.val.inputs, speed)
    stopped = predictor.stopped if isinstance(predictor, FitReport) else ""
    update_manifest(
        folder,
        metrics={"val": val.to_dict(), "test": test.to_dict() if test else None, "val_ece": ece},
        speed=timing.to_dict(),
        forecast=forecast,
        stopped=stopped,
    )
    if (workdir / "curves").exists():  # training curves outlive the checkpoints
        shutil.rmtree(run_dir / "curves" / name, ignore_errors=True)
        (run_dir / "curves").mkdir(exist_ok=True)
        shutil.move(workdir / "curves", run_dir / "curves" / name)
    shutil.rmtree(workdir, ignore_errors=True)  # checkpoints served their purpose
    return Candidate(name, config, val, test, meter.card, timing, folder, ece, forecast, stopped)


def _validation_logits(predictor: Predictor, texts: Sequence[str]) -> np.ndarray:
    """The logits of the validation texts `fit` was given: those it reports having computed
    on the way (no second pass), else computed now."""
    if isinstance(predictor, FitReport) and predictor.val_logits is not None:
        if len(predictor.val_logits) != len(texts):
            raise ValueError(
                f"val_logits has {len(predictor.val_logits)} rows for {len(texts)} validation "
                "texts; a predictor reports the logits of the `val` its fit was given"
            )
        return predictor.val_logits
    return predictor.logits(texts)


def _finished(folder: Path) -> Candidate | None:
    """A candidate a previous run completed (its manifest has metrics), else None."""
    try:
        m = read_manifest(folder)
    except FrugalError:
        return None
    if m.speed is None or m.metrics is None or m.train_cost is None:
        return None
    metrics = m.metrics
    return Candidate(
        m.strategy,
        m.config,
        Quality.from_dict(metrics.val),
        Quality.from_dict(metrics.test) if metrics.test else None,
        CostCard.from_dict(m.train_cost.model_dump()),
        Speed(**m.speed.model_dump()),
        folder,
        metrics.val_ece,
        m.forecast,
        m.stopped,
    )


def candidate_option(candidate: Candidate, prices: Prices) -> Option:
    """A candidate as it was measured (uncompressed), as a cost-of-ownership line."""
    return Option.of(
        candidate.strategy, candidate.cost.usd, candidate.cost.cpu_s, candidate.speed, prices
    )


def choose(
    candidates: list[Candidate],
    metric: str,
    target: float | None,
    *,
    strict: bool = False,
    volume: float | None = None,
    prices: Prices | None = None,
) -> tuple[Candidate, str]:
    """Cheapest candidate meeting the bar on validation, else the best one (highest score,
    or lowest for a lower-is-better metric). Cheapest means training $, or with `volume` (and
    a bar to meet) training $ + volume * serving $ per prediction: the cost of ownership.
    Without a bar the best one is chosen whatever the volume; the volume then only decides
    the shipped format."""
    if volume is not None and target is not None:
        return _choose_to_own(candidates, metric, target, strict, volume, prices or Prices())
    by_cost = sorted(candidates, key=lambda c: (c.cost.usd, c.cost.cpu_s))
    m = get_metric(metric)
    if target is not None:
        meeting = [c for c in by_cost if c.val.meets(metric, target, strict=strict)]
        if meeting:
            pick = meeting[0]
            how = f"{pick.val.metric(metric):.3f}"
            if strict:
                low, high = pick.val.interval(metric)
                how = (
                    f"95% interval from {low:.3f}"
                    if m.higher_is_better
                    else f"95% interval up to {high:.3f}"
                )
            return pick, (
                f"{pick.strategy} is the cheapest candidate with validation {metric} "
                f"{m.symbol} {target:g} ({how})"
            )
    # max keeps the first (cheapest) of equals
    best = max(by_cost, key=lambda c: m.goodness(c.val.metric(metric)))
    lead = f"no candidate reached {metric} {target:g}; " if target is not None else ""
    if target is not None and strict:
        lead = f"no candidate's 95% interval cleared {metric} {target:g}; "
    return best, (
        f"{lead}{best.strategy} has the best validation {metric} ({best.val.metric(metric):.3f})"
    )


def _choose_to_own(
    candidates: list[Candidate],
    metric: str,
    target: float,
    strict: bool,
    volume: float,
    prices: Prices,
) -> tuple[Candidate, str]:
    """Among the candidates meeting the bar, the cheapest to own at `volume`; none meeting
    it: the best one, as without a volume."""
    meeting = [c for c in candidates if c.val.meets(metric, target, strict=strict)]
    if not meeting:
        return choose(candidates, metric, target, strict=strict)
    lines = {id(c): candidate_option(c, prices) for c in meeting}
    pick = min(meeting, key=lambda c: (lines[id(c)].total_usd(volume), c.cost.usd))
    line = lines[id(pick)]
    among = f"with validation {metric} {get_metric(metric).symbol} {target:g}"
    return pick, (
        f"{pick.strategy} is the cheapest candidate {among} to own at {human(volume)} "
        f"predictions (${line.fixed_usd:.4g} training + ${volume * line.usd_per_prediction:.4g} "
        "serving, uncompressed)"
    )


def held_out_shortfall(
    candidates: list[Candidate],
    chosen: Candidate,
    metric: str,
    target: float | None,
    not_run: dict[str, str],
) -> Shortfall | None:
    """A `Shortfall` when the chosen rung's test score misses `target` even at its interval's
    hopeful end (the high end, or the low end for a lower-is-better metric), else None.

    The rung likely to meet it: the best run rung whose test score meets the bar, else the
    first of `not_run` (rungs above the chosen one that did not run, cheapest first).
    """
    if target is None or chosen.test is None:
        return None
    m = get_metric(metric)
    value, (low, high) = chosen.test.estimate(metric)
    if m.meets(high if m.higher_is_better else low, target):
        return None
    scored = [(c.test.metric(metric), c) for c in candidates if c is not chosen and c.test]
    meeting = [(v, c) for v, c in scored if m.meets(v, target)]
    next_rung, why = None, ""
    if meeting:  # max keeps the first (cheapest) of equals
        best_score, best = max(meeting, key=lambda pair: m.goodness(pair[0]))
        next_rung, why = best.strategy, f"test {best_score:.3f}"
    elif not_run:
        next_rung, skipped_because = next(iter(not_run.items()))
        why = f"not run: {skipped_because}"
    return Shortfall(
        chosen.strategy, m.name, target, chosen.val.metric(metric), value, (low, high),
        next_rung, why,
    )  # fmt: skip


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
