"""Forecast what a rung will cost before paying for it, from the data and a short calibration.

A forecast times a small, real piece of the rung's work (a subsample fit, a few batches) and
scales it by the data profile (examples, tokens, classes). The ladder prints it, skips a rung
that would overrun the budget, and keeps forecast and actual side by side in the report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Forecast:
    wall_s: float
    cpu_s: float
    basis: str  # how it was made, in a few words

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, factor: float, basis: str) -> Forecast:
        return Forecast(self.wall_s * factor, self.cpu_s * factor, basis)

    def __add__(self, other: Forecast) -> Forecast:
        return Forecast(
            self.wall_s + other.wall_s, self.cpu_s + other.cpu_s, f"{self.basis}; {other.basis}"
        )


@dataclass
class Stopwatch:
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def forecast(self, basis: str) -> Forecast:
        return Forecast(self.wall_s, self.cpu_s, basis)


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """Wall and CPU seconds of a block (process and children)."""
    watch = Stopwatch()
    t0, c0 = time.perf_counter(), os.times()
    yield watch
    c1 = os.times()
    watch.wall_s = time.perf_counter() - t0
    watch.cpu_s = sum(c1[:4]) - sum(c0[:4])


def timed(fn: Callable[[], Any], basis: str) -> Forecast:
    with stopwatch() as watch:
        fn()
    return watch.forecast(basis)
