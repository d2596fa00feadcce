"""Typed, strict settings shared by the API, the CLI and YAML files."""

from __future__ import annotations

import math
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base for every config: immutable, and unknown keys are errors rather than ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Budget(Frozen):
    """Hard caps for a whole search; None means no cap."""

    max_wall_s: float | None = Field(None, gt=0, description="Wall-clock seconds.")
    max_usd: float | None = Field(None, gt=0, description="Money at the configured price.")
    max_kwh: float | None = Field(None, gt=0, description="Energy in kWh.")


class SplitConfig(Frozen):
    val_frac: float = Field(0.15, gt=0, lt=0.5)
    test_frac: float = Field(0.15, ge=0, lt=0.5)
    seed: int = 0


class SpeedConfig(Frozen):
    """How inference speed is measured on the reloaded bundle."""

    latency_calls: int = Field(50, ge=5, description="Batch-1 calls timed for p50/p95.")
    throughput_batch: int = Field(32, ge=1)
    throughput_texts: int = Field(256, ge=1, description="Texts timed at throughput_batch.")


_DURATION = {"s": 1.0, "m": 60.0, "h": 3600.0}
_ENERGY = {"kwh": 1.0, "wh": 1e-3}


def parse_budget(text: str) -> Budget:
    """'10m', '90s', '1.5h', '$0.05', '0.01kWh', '5Wh', or several joined by commas."""
    from frugalml.errors import ConfigError

    caps: dict[str, float] = {}
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        try:
            if part.startswith("$"):
                caps["max_usd"] = float(part[1:])
            elif part.endswith(("kwh", "wh")):
                unit = "kwh" if part.endswith("kwh") else "wh"
                caps["max_kwh"] = float(part[: -len(unit)]) * _ENERGY[unit]
            elif part[-1] in _DURATION:
                caps["max_wall_s"] = float(part[:-1]) * _DURATION[part[-1]]
            else:
                caps["max_wall_s"] = float(part)
        except ValueError:
            raise ConfigError(
                f"--budget: cannot read '{part}'",
                [
                    "write a duration (90s, 10m, 1.5h), money ($0.05) or energy (0.01kWh, 5Wh), "
                    "or several joined by commas"
                ],
            ) from None
    if not caps or any(v <= 0 for v in caps.values()):
        raise ConfigError(f"--budget must name a positive amount; got '{text}'")
    return Budget(**caps)


def parse_target(text: str) -> tuple[str, float]:
    """'macro_f1=0.90', 'brier=0.1' or 'recall@5=0.8' → (metric name, bar)."""
    from frugalml.errors import ConfigError
    from frugalml.metrics import get_metric

    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not name.strip() or math.isnan(number):
        raise ConfigError(
            f"--target must look like macro_f1=0.90 or brier=0.1 (a metric and a number); "
            f"got '{text}'"
        )
    metric = get_metric(name)  # an unknown name lists the known ones
    low, high = metric.bounds
    if not low <= number <= high:
        raise ConfigError(
            f"--target {metric.name} must lie between {low:g} and {high:g}; got '{text}'"
        )
    return metric.name, number


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """`--set full.train.epochs=5` → {'full': {'train': {'epochs': 5}}}; values read as YAML."""
    from frugalml.errors import ConfigError

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        path, sep, raw = item.partition("=")
        keys = path.strip().split(".")
        if not sep or len(keys) < 2 or not all(keys):
            raise ConfigError(
                f"--set must look like STRATEGY.FIELD=VALUE "
                f"(e.g. lora.r=16, full.train.epochs=5); got '{item}'"
            )
        node: dict[str, Any] = out.setdefault(keys[0], {})
        for key in keys[1:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(raw)
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merge key by key: `train.epochs` keeps the strategy's other train settings."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
