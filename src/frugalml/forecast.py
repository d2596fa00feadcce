"""Forecast what a rung will cost before paying for it, from the data and a short calibration.

A forecast times a small, real piece of the rung's work (a subsample fit, a few batches) and
scales it by the data profile (examples, tokens, classes). The ladder prints it, skips a rung
that would overrun the budget or the memory available, and keeps forecast and actual side by
side in the report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from frugalml.errors import OutOfMemoryError


@dataclass(frozen=True)
class Forecast:
    wall_s: float
    cpu_s: float
    basis: str  # how it was made, in a few words
    memory_bytes: int | None = None  # the most the rung needs at once, where it is known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, factor: float, basis: str) -> Forecast:
        """Time scales with the work; memory does not (the parts run one after another)."""
        return Forecast(self.wall_s * factor, self.cpu_s * factor, basis, self.memory_bytes)

    def __add__(self, other: Forecast) -> Forecast:
        known = [m for m in (self.memory_bytes, other.memory_bytes) if m is not None]
        return Forecast(
            self.wall_s + other.wall_s,
            self.cpu_s + other.cpu_s,
            f"{self.basis}; {other.basis}",
            max(known) if known else None,
        )


def available_memory() -> int:
    """Bytes this process can still allocate: what the machine has available, or less under
    a container's cgroup limit, which psutil does not see."""
    import psutil

    room = int(psutil.virtual_memory().available)
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return room
    return room if limit == "max" else max(0, min(room, int(limit) - used))


def memory_shortage(need: int, what: str) -> str | None:
    """Why `what` cannot have `need` bytes now, or None when it can."""
    room = available_memory()
    if need <= room:
        return None
    return f"{what} needs about {_size(need)} of memory; {_size(room)} are available"


def require_memory(need: int, what: str) -> None:
    """Refuse work before it allocates what the machine lacks: an error, not a killed process."""
    reason = memory_shortage(need, what)
    if reason:
        raise OutOfMemoryError(
            reason, ["free memory, use fewer classes, or leave this rung out (--strategies)"]
        )


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


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
