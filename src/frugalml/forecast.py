"""Forecast what a rung will cost before paying for it, from the data and a short calibration.

A forecast times a small, real piece of the rung's work (a subsample fit, a few batches) and
scales it by the data profile (examples, tokens, classes). Memory is forecast the same way:
what the calibration's peak grew by (model weights, optimizer state, a batch's activations)
plus what grows with the data (features, cached embeddings or layer states, the head's
solver). The ladder prints it, skips a rung that would overrun the budget or the memory
available, and keeps forecast and actual side by side in the report.

Rungs share calibration work through `remembered`: the hybrid rung reuses the n-gram and
encoder timings the tfidf and frozen_probe forecasts made on the same data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from frugalml.costs import CostMeter
from frugalml.errors import OutOfMemoryError


@dataclass(frozen=True)
class Forecast:
    wall_s: float
    cpu_s: float
    basis: str  # how it was made, in a few words
    memory_bytes: int | None = None  # bytes the rung needs above the RSS it starts at
    peak_rss_bytes: int | None = None  # the process's peak RSS while the rung runs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_memory(self, need: int, base: int) -> Forecast:
        """This forecast with the memory the whole rung needs above `base`, the RSS it will
        start from (parts' needs overlap: the model a first part loads is still held while a
        later part runs)."""
        return Forecast(self.wall_s, self.cpu_s, self.basis, need, base + need)

    def scaled(self, factor: float, basis: str) -> Forecast:
        """Time scales with the work; memory does not (the parts run one after another)."""
        return Forecast(
            self.wall_s * factor, self.cpu_s * factor, basis, self.memory_bytes, self.peak_rss_bytes
        )

    def __add__(self, other: Forecast) -> Forecast:
        return Forecast(
            self.wall_s + other.wall_s,
            self.cpu_s + other.cpu_s,
            f"{self.basis}; {other.basis}",
            _larger(self.memory_bytes, other.memory_bytes),
            _larger(self.peak_rss_bytes, other.peak_rss_bytes),
        )


def _larger(a: int | None, b: int | None) -> int | None:
    known = [m for m in (a, b) if m is not None]
    return max(known) if known else None


_WARM: set[tuple[Any, ...]] = set()
_STARTUP = [0.0, 0.0]  # wall and CPU seconds of start-up that forecasts ran


def warm_up(key: tuple[Any, ...], start: Callable[[], Any]) -> None:
    """Run one-off start-up (imports, a first model load: 4 CPU-s for MiniLM, 0.1 s a load
    after it) once per process, before a forecast times anything: scaled up with a
    calibration it over-forecast the rung, and the rung would have paid it without a
    forecast. Its cost is counted apart (`startup_seconds`)."""
    if key in _WARM:
        return
    with stopwatch() as watch:
        start()
    _WARM.add(key)
    _STARTUP[0] += watch.wall_s
    _STARTUP[1] += watch.cpu_s


def startup_seconds() -> tuple[float, float]:
    """Wall and CPU seconds of start-up that forecasts ran in this process so far."""
    return _STARTUP[0], _STARTUP[1]


def rss_bytes() -> int:
    """This process's resident memory now: what a rung's peak is forecast above."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.Process().memory_info().rss)


@dataclass
class Growth:
    """How far a block raised this process's peak resident memory above where it began."""

    bytes: int = 0


@contextmanager
def memory_growth() -> Iterator[Growth]:
    """The peak RSS growth of a block, read from the kernel's high-water mark (through a
    `CostMeter`, which keeps outer meters' peaks right)."""
    growth, start = Growth(), rss_bytes()
    with CostMeter() as meter:
        yield growth
    growth.bytes = max(0, int(meter.card.peak_rss_mb * 2**20) - start)


_MEMO: dict[tuple[Any, ...], Any] = {}
_MEMO_SIZE = 16


def remembered(key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    """`compute()`, once per key in this process: a calibration one rung's forecast made on
    the same data and settings (n-gram timings, an encoder's load and token rate) is reused by
    the next rung that needs it instead of being paid for twice."""
    if key not in _MEMO:
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = compute()
    return _MEMO[key]


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
    # process_time counts in nanoseconds where os.times counts 10 ms ticks: a calibration
    # of 0.1 s, scaled 4x, was off by up to 40% from the tick alone. Children: os.times.
    t0, p0, c0 = time.perf_counter(), time.process_time(), os.times()
    yield watch
    p1, c1 = time.process_time(), os.times()
    watch.wall_s = time.perf_counter() - t0
    watch.cpu_s = p1 - p0 + sum(c1[2:4]) - sum(c0[2:4])


def timed(fn: Callable[[], Any], basis: str) -> Forecast:
    with stopwatch() as watch:
        fn()
    return watch.forecast(basis)


def timed_mean(fn: Callable[[], Any], basis: str, *, at_least_s: float = 0.5) -> Forecast:
    """The mean of 1 to 3 timings, repeated while they add up to less than `at_least_s` of
    CPU: a 0.1 s calibration scaled 5x moves by a third with the machine's load, and
    repeating it costs little; a long one is timed once."""
    runs = [timed(fn, basis)]
    while len(runs) < 3 and sum(r.cpu_s for r in runs) < at_least_s:
        runs.append(timed(fn, basis))
    n = len(runs)
    return Forecast(sum(r.wall_s for r in runs) / n, sum(r.cpu_s for r in runs) / n, basis)
