"""Pareto frontiers of a ladder: which candidates no other beats on both cost and quality.

A candidate off the frontier is never worth choosing: another is at least as good for no more
money. Along the frontier, each step says what the next rung costs and how many points it buys.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, Literal, Protocol, TypedDict, TypeVar

from frugalml.ladder.run import Candidate, LadderResult
from frugalml.metrics import get_metric

Axis = Literal["train", "inference"]


class _Ordered(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...
    def __le__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=_Ordered)


# From one frontier candidate to the next dearer one on the same axis ("from" is a keyword).
Step = TypedDict(
    "Step",
    {
        "from": str,
        "to": str,
        "extra_usd": float,
        "extra_cpu_s": float,
        "extra_ms_per_text": float,
        "gain_points": float,
        "sentence": str,
    },
)


class AxisFrontier(TypedDict):
    cost: str  # what "cost" means on this axis, in words
    members: list[str]  # frontier candidates, cheapest first
    steps: list[Step]


class FrontierSummary(TypedDict):
    metric: str
    train: AxisFrontier
    inference: AxisFrontier


def pareto_mask(costs: Sequence[K], qualities: Sequence[float]) -> list[bool]:
    """True where no other point has cost <= and quality >= with at least one strict.

    Costs may be numbers or tuples (compared in order, so later items break ties).
    Identical points do not dominate each other: both stay on the frontier.
    """
    if len(costs) != len(qualities):
        raise ValueError(f"got {len(costs)} costs but {len(qualities)} qualities")
    points = list(zip(costs, qualities, strict=True))
    return [not any(_dominates(other, point) for other in points) for point in points]


def _dominates(a: tuple[K, float], b: tuple[K, float]) -> bool:
    """No worse on either axis and better on one; a point never dominates itself."""
    (cost_a, quality_a), (cost_b, quality_b) = a, b
    no_worse = cost_a <= cost_b and quality_a >= quality_b
    return no_worse and (cost_a < cost_b or quality_a > quality_b)


def ms_per_text(candidate: Candidate) -> float:
    """Inference cost: milliseconds per prediction at the throughput batch size."""
    rate = candidate.speed.throughput_per_s
    return 1000.0 / rate if rate > 0 else math.inf


def frontier_summary(result: LadderResult, metric: str) -> FrontierSummary:
    """The training-cost and inference-cost frontiers, with a 'next rung' step for each member."""
    batch = result.candidates[0].speed.throughput_batch if result.candidates else 32
    return {
        "metric": metric,
        "train": _axis(
            result.candidates, metric, "train", "training $, ties broken by CPU-s", _train_key
        ),
        "inference": _axis(
            result.candidates, metric, "inference", f"ms per text at batch {batch}", ms_per_text
        ),
    }


def _train_key(candidate: Candidate) -> tuple[float, float]:
    return candidate.cost.usd, candidate.cost.cpu_s


def _axis(
    candidates: list[Candidate],
    metric: str,
    axis: Axis,
    cost: str,
    key: Callable[[Candidate], Any],
) -> AxisFrontier:
    quality = _quality(metric)
    mask = pareto_mask([key(c) for c in candidates], [quality(c) for c in candidates])
    members = sorted(
        (c for c, on in zip(candidates, mask, strict=True) if on),
        key=lambda c: (key(c), quality(c)),
    )
    steps = [_step(a, b, metric, axis) for a, b in pairwise(members)]
    return {"cost": cost, "members": [c.strategy for c in members], "steps": steps}


def _quality(metric: str) -> Callable[[Candidate], float]:
    """Validation score, larger is better (a lower-is-better metric is negated)."""
    m = get_metric(metric)
    return lambda c: m.goodness(c.val.metric(metric))


def _step(a: Candidate, b: Candidate, metric: str, axis: Axis) -> Step:
    usd, cpu = b.cost.usd - a.cost.usd, b.cost.cpu_s - a.cost.cpu_s
    ms = ms_per_text(b) - ms_per_text(a)
    quality = _quality(metric)
    gain = 100 * (quality(b) - quality(a))  # points of improvement, whatever the direction
    if axis == "train":
        price = f"{_signed(usd, '$')} ({_signed(cpu)} CPU-s)"
    else:
        price = f"{_signed(ms)} ms per text"
    sentence = f"{a.strategy} → {b.strategy}: {price} for {gain:+.1f} points of {metric}"
    return {
        "from": a.strategy,
        "to": b.strategy,
        "extra_usd": usd,
        "extra_cpu_s": cpu,
        "extra_ms_per_text": ms,
        "gain_points": gain,
        "sentence": sentence,
    }


def _signed(value: float, unit: str = "") -> str:
    """'+$0.0021', '-41', '+0.31': at least two significant digits, never scientific notation."""
    sign = "-" if value < 0 else "+"
    size = abs(value)
    if not math.isfinite(size):
        return f"{sign}{unit}inf"
    decimals = 0 if size == 0 else max(0, 1 - math.floor(math.log10(size)))
    return f"{sign}{unit}{size:.{decimals}f}"
