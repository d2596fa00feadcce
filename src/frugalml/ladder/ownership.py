"""Cost of ownership: training once plus serving N predictions, and where choices cross.

A model that costs more to build but less per prediction wins past a break-even volume.
Every option (a ladder candidate, or one shipped format of the chosen model) is a line:
`fixed_usd + volume * usd_per_prediction`. Training and compression are priced at the
wall time the machine was held (the cost card); serving at the CPU each prediction takes at
the throughput batch, which is what a busy server pays (`Prices.usd_per_cpu_s`, as the
server's own cost gauge counts it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from frugalml.costs import Prices
from frugalml.errors import ConfigError
from frugalml.metrics import Speed

# Volumes the report's table is drawn at (the user's own is added).
VOLUMES: tuple[float, ...] = (0.0, 1e4, 1e5, 1e6, 1e7, 1e8)
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}
_VOLUME = re.compile(
    r"^\s*([0-9][0-9_,]*(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)\s*([kmbg]?)\s*(?:/\s*month)?\s*$"
)


def parse_volume(text: str | float | int) -> float:
    """'1e6', '2.4M', '500k' or '1,000,000', optionally '/month': predictions served
    before the model is retrained or replaced."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _VOLUME.match(text.lower())
        if match is None:
            raise ConfigError(
                f"--volume must be a number of predictions like 1e6, 2.4M, 500k or 1e6/month; "
                f"got '{text}'"
            )
        value = float(match[1].replace(",", "").replace("_", "")) * _SUFFIX[match[2]]
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"--volume must be a finite number ≥ 0; got {text}")
    return value


def human(volume: float) -> str:
    """2400000 → '2.4M'."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if volume >= size:
            return f"{volume / size:.3g}{unit}"
    return f"{volume:.3g}"


def serving_cost(speed: Speed, prices: Prices) -> tuple[float, float]:
    """(USD, CPU-ms) per prediction. Bundles measured before CPU was recorded are priced at
    the wall time of the whole machine (every vCPU), an upper bound."""
    if speed.cpu_ms_per_text is not None:
        cpu_ms = speed.cpu_ms_per_text
    else:
        cpu_ms = 1000.0 * prices.vcpus / max(speed.throughput_per_s, 1e-9)
    return cpu_ms / 1000 * prices.usd_per_cpu_s, cpu_ms


@dataclass(frozen=True)
class Option:
    """One way to own a model: what building it cost once, and what each prediction costs."""

    name: str  # "frozen_probe", or "frozen_probe · int8" for a shipped format
    fixed_usd: float  # training, plus compression for a shipped format
    fixed_cpu_s: float
    usd_per_prediction: float
    cpu_ms_per_prediction: float

    @classmethod
    def of(
        cls, name: str, fixed_usd: float, fixed_cpu_s: float, speed: Speed, prices: Prices
    ) -> Option:
        usd, cpu_ms = serving_cost(speed, prices)
        return cls(name, fixed_usd, fixed_cpu_s, usd, cpu_ms)

    def total_usd(self, volume: float) -> float:
        return self.fixed_usd + volume * self.usd_per_prediction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cheapest(options: Sequence[Option], volume: float) -> Option:
    """The option with the least total at `volume` (ties: the cheaper to build, then the first)."""
    return min(options, key=lambda o: (o.total_usd(volume), o.fixed_usd))


@dataclass(frozen=True)
class BreakEven:
    """Above `volume` predictions, `to` costs less in total than `start` (the cheaper to build)."""

    volume: float
    start: str
    to: str
    extra_usd: float  # what `to` costs more to build
    extra_cpu_s: float
    saved_usd_per_1k: float  # what it saves per 1,000 predictions

    def sentence(self) -> str:
        cpu = f"{self.extra_cpu_s:.0f} CPU-s" if self.extra_cpu_s >= 0 else "its cost"
        return (
            f"above {human(self.volume)} predictions, {self.to}: it pays back its {cpu} "
            f"(${self.extra_usd:.4g}) over {self.start} at ${self.saved_usd_per_1k:.3g} less "
            "per 1,000 predictions"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sentence": self.sentence()}


def break_evens(options: Sequence[Option]) -> list[BreakEven]:
    """The volumes where the cheapest option changes, from 0 predictions up: the lower
    envelope of the options' cost lines."""
    if not options:
        return []
    current = cheapest(options, 0.0)
    crossings: list[BreakEven] = []
    while True:
        cheaper = [o for o in options if o.usd_per_prediction < current.usd_per_prediction]
        if not cheaper:
            return crossings

        def crossing(o: Option, at: Option = current) -> float:
            return (o.fixed_usd - at.fixed_usd) / (at.usd_per_prediction - o.usd_per_prediction)

        nxt = min(cheaper, key=lambda o: (crossing(o), o.usd_per_prediction))
        crossings.append(
            BreakEven(
                volume=max(0.0, crossing(nxt)),
                start=current.name,
                to=nxt.name,
                extra_usd=nxt.fixed_usd - current.fixed_usd,
                extra_cpu_s=nxt.fixed_cpu_s - current.fixed_cpu_s,
                saved_usd_per_1k=1000 * (current.usd_per_prediction - nxt.usd_per_prediction),
            )
        )
        current = nxt


def ownership_summary(
    options: Sequence[Option],
    volume: float | None,
    chosen: str | None = None,
    eligible: Sequence[str] | None = None,
) -> dict[str, Any]:
    """What the report shows: each option's total at the table's volumes (and the user's),
    and, among the `eligible` ones (default: all), the cheapest at each volume and the
    break-even volumes. A rung that misses the bar is listed but never "cheapest": TF-IDF is
    cheapest to build and to serve, so it would otherwise win at every volume."""
    volumes = sorted({*VOLUMES, *([volume] if volume is not None else [])})
    names = set(eligible) if eligible is not None else {o.name for o in options}
    choosable = [o for o in options if o.name in names]
    return {
        "volume": volume,
        "chosen": chosen,
        "volumes": volumes,
        "options": [
            {
                **o.to_dict(),
                "eligible": o.name in names,
                "totals_usd": [o.total_usd(v) for v in volumes],
            }
            for o in options
        ],
        "cheapest": [cheapest(choosable, v).name for v in volumes] if choosable else [],
        "break_evens": [b.to_dict() for b in break_evens(choosable)],
    }
