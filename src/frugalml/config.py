"""Typed, strict settings shared by the API, the CLI and YAML files."""

from __future__ import annotations

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
