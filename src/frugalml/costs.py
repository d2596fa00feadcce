"""Measure what a piece of work cost: time, CPU, memory, energy, money and FLOPs.

`CostMeter` is a context manager with fixed, sub-millisecond overhead (no sampling thread):
peak memory comes from the kernel's high-water mark, reset on entry; energy from RAPL or
NVML counters when readable, else an estimate that says so on the card.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

_RAPL_ROOT = Path("/sys/class/powercap")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class Prices:
    """What compute costs. The default is a 2-vCPU on-demand cloud VM (e.g. AWS m5.large).

    Every conversion between seconds, dollars and joules goes through these methods, so a
    budget, a cost card, a forecast and the serving cost gauge all use one set of prices.
    """

    usd_per_hour: float = 0.096
    basis: str = "2 vCPU on-demand VM at $0.096/h"
    watts_per_core: float = 10.0  # busy x86 server core incl. its share of uncore and DRAM
    gpu_usd_per_hour: float = 2.50
    gpu_watts: float = 300.0
    vcpus: int = 2  # the vCPUs `usd_per_hour` pays for: one CPU-second costs 1/vcpus of it

    def usd_for(self, wall_s: float, device_s: float | None = None) -> float:
        """What holding the machine for `wall_s` (and a GPU for `device_s`) costs."""
        usd = wall_s / 3600 * self.usd_per_hour
        if device_s:
            usd += device_s / 3600 * self.gpu_usd_per_hour
        return usd

    def wall_s_for(self, usd: float) -> float:
        """How long `usd` holds the machine (no GPU): how a money budget becomes a deadline."""
        return usd / self.usd_per_hour * 3600

    def kwh_for(self, cpu_s: float, device_s: float | None = None) -> float:
        """Energy estimated from busy CPU-seconds (and GPU-seconds), where no counter reads it."""
        joules = cpu_s * self.watts_per_core
        if device_s:
            joules += device_s * self.gpu_watts
        return joules / 3.6e6

    def cpu_s_for(self, kwh: float) -> float:
        """Busy CPU-seconds that `kwh` lasts at `watts_per_core`: an energy budget in time."""
        return kwh * 3.6e6 / self.watts_per_core

    @property
    def usd_per_cpu_s(self) -> float:
        """The price of one busy CPU-second: what inference cost per prediction is counted in."""
        return self.usd_per_hour / 3600 / self.vcpus

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Prices:
        """Prices a bundle recorded; the defaults for one that recorded none (older bundles)."""
        return cls(**data) if data else cls()


@dataclass
class CostCard:
    """What one run cost. `energy_source` says whether energy was measured or estimated."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    energy_kwh: float
    energy_source: str
    usd: float
    price_basis: str
    device_s: float | None = None
    peak_device_mb: float | None = None
    flops: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    processes: int = 1  # > 1 for a card combined from parallel ranks or clients

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostCard:
        return cls(**data)

    @classmethod
    def combine(cls, cards: Sequence[CostCard]) -> CostCard:
        """One card for processes that ran at the same time (DDP ranks, federated clients).

        Wall time is the longest: they ran side by side. CPU and GPU seconds, energy, money
        and FLOPs add up: each process spent its own. Peak memory adds up too, because each
        process held its peak in its own address space while the others held theirs: the sum
        is what the job needed provisioned (an upper bound when peaks did not coincide).
        Each card prices and meters what its process ran on, so sums are right for processes
        on separate machines or slices; ranks sharing one machine, whose RAPL counters and
        VM price cover it all, are better metered by one card around all of them.
        `energy_source` and `price_basis` are kept when all agree, else joined; `extra` keeps
        the largest value of each key (today only flags).
        """
        if not cards:
            raise ValueError("CostCard.combine needs at least one card")
        extra: dict[str, float] = {}
        for card in cards:
            for key, value in card.extra.items():
                extra[key] = max(value, extra.get(key, value))
        return cls(
            wall_s=max(c.wall_s for c in cards),
            cpu_s=sum(c.cpu_s for c in cards),
            peak_rss_mb=sum(c.peak_rss_mb for c in cards),
            energy_kwh=sum(c.energy_kwh for c in cards),
            energy_source=_joined(c.energy_source for c in cards),
            usd=sum(c.usd for c in cards),
            price_basis=_joined(c.price_basis for c in cards),
            device_s=_sum_known(c.device_s for c in cards),
            peak_device_mb=_sum_known(c.peak_device_mb for c in cards),
            flops=_sum_known(c.flops for c in cards),
            extra=extra,
            processes=sum(c.processes for c in cards),
        )

    def summary(self) -> str:
        """One line for tables and logs."""
        flops = f", {self.flops:.2g} FLOPs" if self.flops else ""
        processes = f", {self.processes} processes" if self.processes > 1 else ""
        return (
            f"{self.wall_s:.1f}s wall, {self.cpu_s:.1f} CPU-s, {self.peak_rss_mb:.0f} MB peak, "
            f"{self.energy_kwh * 1000:.3f} Wh ({self.energy_source}), ${self.usd:.5f}{flops}"
            f"{processes}"
        )


def _joined(values: Iterable[str]) -> str:
    """The one value when all agree, else each distinct value once, in order, joined (a
    value that was itself joined counts as its parts, so combining combined cards works)."""
    return "; ".join(dict.fromkeys(part for value in values for part in value.split("; ")))


def _sum_known(values: Iterable[float | None]) -> float | None:
    """The sum of the values that were measured; None when none was."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def transformer_flops(n_params: int, n_tokens: int, *, training: bool = False) -> float:
    """The standard 2·N·T (forward) or 6·N·T (forward + backward) estimate."""
    return (6.0 if training else 2.0) * n_params * n_tokens


class CostMeter:
    """`with CostMeter() as meter: ...` then `meter.card`; nests correctly (ladder and rung)."""

    _active: list[CostMeter] = []  # noqa: RUF012 - shared stack of open meters, by design

    def __init__(self, prices: Prices | None = None) -> None:
        self.prices = prices or Prices()
        self._flops = 0.0
        self._peak_kb = 0
        self._parallel: list[CostCard] = []
        self._card: CostCard | None = None

    # -- public -----------------------------------------------------------------
    def add_flops(self, flops: float) -> None:
        """Strategies report the FLOPs of their transformer work here; outer meters see them too."""
        self._flops += flops
        for meter in CostMeter._active:
            if meter is not self:
                meter._flops += flops

    def add_parallel(self, unseen: CostCard) -> None:
        """Account for processes this one launched and ran beside itself (DDP ranks).

        `unseen` holds what this process's own readings miss: the ranks' summed peak memory
        (the kernel reports only the largest child's), and the CPU-seconds, energy and money of
        ranks on other machines (local ranks' CPU is already counted once they are waited
        for). Its `processes` and `extra` (nodes, restarts) go onto the card as they are.
        Outer meters see it too.
        """
        for meter in [self, *(m for m in CostMeter._active if m is not self)]:
            meter._parallel.append(unseen)

    @property
    def card(self) -> CostCard:
        if self._card is None:
            raise RuntimeError("the cost card exists once the `with CostMeter()` block has ended")
        return self._card

    # -- context manager ---------------------------------------------------------
    def __enter__(self) -> CostMeter:
        for outer in CostMeter._active:  # keep their peak before we reset the high-water mark
            outer._peak_kb = max(outer._peak_kb, _read_hwm_kb())
        self._hwm_reset = _reset_hwm()
        self._peak_kb = _read_hwm_kb()
        # The children's figure is the largest child this process ever waited for: it counts
        # for this block only if a child inside the block raised it.
        self._children_kb0 = _children_peak_kb()
        self._times0 = os.times()
        self._energy0 = _read_energy()
        _gpu_reset_peak()
        CostMeter._active.append(self)
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        wall = time.perf_counter() - self._t0
        times = os.times()
        CostMeter._active.remove(self)
        cpu = sum(times[:4]) - sum(self._times0[:4])
        children_kb = _children_peak_kb()
        grew = children_kb if children_kb > self._children_kb0 else 0
        peak_kb = max(self._peak_kb, _read_hwm_kb(), grew)
        device_s, device_mb = _gpu_stop(wall)
        energy, source = self._energy(cpu, device_s)
        usd = self.prices.usd_for(wall, device_s)
        self._card = CostCard(
            wall_s=wall,
            cpu_s=cpu,
            peak_rss_mb=peak_kb / 1024,
            energy_kwh=energy,
            energy_source=source,
            usd=usd,
            price_basis=self._basis(device_s),
            device_s=device_s,
            peak_device_mb=device_mb,
            flops=self._flops or None,
        )
        if not self._hwm_reset:
            self._card.extra["peak_rss_is_process_lifetime"] = 1.0
        for unseen in self._parallel:
            self._add_unseen(self._card, unseen, max(self._peak_kb, _read_hwm_kb()) / 1024)

    @staticmethod
    def _add_unseen(card: CostCard, unseen: CostCard, own_peak_mb: float) -> None:
        """The launcher held its own memory while its ranks held theirs: the peak is the sum."""
        card.peak_rss_mb = max(card.peak_rss_mb, own_peak_mb + unseen.peak_rss_mb)
        card.cpu_s += unseen.cpu_s
        card.energy_kwh += unseen.energy_kwh
        card.usd += unseen.usd
        card.processes = max(card.processes, unseen.processes)
        card.extra.update(unseen.extra)

    def _energy(self, cpu_s: float, device_s: float | None) -> tuple[float, str]:
        measured = _read_energy()
        if self._energy0 is not None and measured is not None:
            joules = _counter_delta(self._energy0, measured)
            return joules / 3.6e6, "rapl" if "rapl" in measured[0] else measured[0]
        label = f"estimate({self.prices.watts_per_core:g} W per busy core"
        if device_s:
            label += f", {self.prices.gpu_watts:g} W per GPU"
        return self.prices.kwh_for(cpu_s, device_s), label + ")"

    def _basis(self, device_s: float | None) -> str:
        if device_s:
            return f"{self.prices.basis} + GPU at ${self.prices.gpu_usd_per_hour:g}/h"
        return self.prices.basis


# -- readings ---------------------------------------------------------------------
def _reset_hwm() -> bool:
    """Linux resets the peak-RSS counter when '5' is written to clear_refs."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _read_hwm_kb() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def _children_peak_kb() -> int:
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


# Energy counters: (source label, {counter: (value_joules, wrap_joules)})
_Counters = tuple[str, dict[str, tuple[float, float]]]


def _read_energy() -> _Counters | None:
    counters: dict[str, tuple[float, float]] = {}
    for domain in sorted(_RAPL_ROOT.glob("intel-rapl:[0-9]*")):
        if domain.name.count(":") != 1:  # package domains only; sub-domains are inside them
            continue
        try:
            value = int((domain / "energy_uj").read_text()) / 1e6
            wrap = int((domain / "max_energy_range_uj").read_text()) / 1e6
        except (OSError, ValueError):
            return None
        counters[domain.name] = (value, wrap)
    gpu = _nvml_energy()
    if gpu:
        counters.update(gpu)
    if not counters:
        return None
    label = "+".join(sorted({"rapl" if k.startswith("intel") else "nvml" for k in counters}))
    return label, counters


def _nvml_energy() -> dict[str, tuple[float, float]]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    try:
        import pynvml

        pynvml.nvmlInit()
        out = {}
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            out[f"gpu{i}"] = (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3, 2.0**64)
        return out
    except Exception:  # NVML missing or not permitted: fall back to the estimate
        return {}


def _counter_delta(before: _Counters, after: _Counters) -> float:
    total = 0.0
    for key, (value, wrap) in after[1].items():
        start = before[1].get(key, (value, wrap))[0]
        total += value - start if value >= start else value + wrap - start
    return total


def _gpu_reset_peak() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def _gpu_stop(wall: float) -> tuple[float | None, float | None]:
    """GPU seconds are the wall time the device was held; a block that first used CUDA counts."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None, None
    torch.cuda.synchronize()
    return wall, torch.cuda.max_memory_allocated() / 2**20
