"""Typed, strict settings shared by the API, the CLI and YAML files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from frugalml.costs import Prices


class Frozen(BaseModel):
    """Base for every config: immutable, and unknown keys are errors rather than ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Budget(Frozen):
    """Hard caps for a whole search; None means no cap."""

    max_wall_s: float | None = Field(None, gt=0, description="Wall-clock seconds.")
    max_usd: float | None = Field(None, gt=0, description="Money at the configured price.")
    max_kwh: float | None = Field(None, gt=0, description="Energy in kWh.")


class SplitConfig(Frozen):
    """How labeled data is split, stratified by class."""

    val_frac: float = Field(0.15, gt=0, lt=0.5, description="Share held out for validation.")
    test_frac: float = Field(
        0.15, ge=0, lt=0.5, description="Share held out for testing (0 when a test file is given)."
    )
    seed: int = Field(0, description="Seed of the split: the same seed gives the same split.")


class SpeedConfig(Frozen):
    """How inference speed is measured on the reloaded bundle."""

    latency_calls: int = Field(50, ge=5, description="Batch-1 calls timed for p50/p95.")
    throughput_batch: int = Field(32, ge=1, description="Texts per call when timing throughput.")
    throughput_texts: int = Field(256, ge=1, description="Texts timed at throughput_batch.")


class Scale(Frozen):
    """How torch rungs train: data-parallel under torchrun when `nproc` or `nnodes` asks for
    more than one process (gloo on CPU, NCCL on GPU); every other rung runs once."""

    nproc: int = Field(1, ge=1, description="Training processes per node (ranks).")
    nnodes: str = Field(
        "1",
        pattern=r"^[1-9][0-9]*(:[1-9][0-9]*)?$",
        description="Nodes, or MIN:MAX for an elastic job that a node may join or leave.",
    )
    node_rank: int = Field(0, ge=0, description="This node's rank; node 0 runs the ladder.")
    rdzv_endpoint: str | None = Field(
        None,
        pattern=r"^[^\s:]+:[0-9]+$",
        description="HOST:PORT of the c10d rendezvous (node 0's address); needed for nnodes > 1.",
    )
    max_restarts: int = Field(
        0, ge=0, description="Times torchrun restarts a failed group; it resumes from a checkpoint."
    )
    threads: int | None = Field(
        None, ge=1, description="Torch threads per rank [default: usable CPUs / nproc]."
    )

    @model_validator(mode="after")
    def _endpoint_for_nodes(self) -> Scale:
        if self.max_nodes > 1 and self.rdzv_endpoint is None:
            raise ValueError("more than one node needs rdzv_endpoint (node 0's HOST:PORT)")
        if self.node_rank >= self.max_nodes:
            raise ValueError(f"node_rank {self.node_rank} is not below nnodes {self.nnodes}")
        return self

    @property
    def max_nodes(self) -> int:
        return int(self.nnodes.split(":")[-1])

    @property
    def parallel(self) -> bool:
        """Whether torch rungs go through torchrun at all."""
        return self.nproc * self.max_nodes > 1 or self.max_restarts > 0


# The whole ladder, cheapest first; with a target it stops at the first rung meeting it.
DEFAULT_STRATEGIES = ("tfidf", "frozen_probe", "hybrid", "top_layers", "setfit", "lora", "full")


class RunSettings(Frozen):
    """The options of one `fit`, in one place: `frugalml.fit(...)` and the CLI build one,
    `run.json` is written from it and read back into it, and resume, compress, MLflow logging
    (and, later, each training rank) read it rather than passing options along one by one."""

    data: str | None = Field(
        None, description="Training data as given (path or hub id); null for an in-memory Dataset."
    )
    test: str | None = Field(
        None, description="A separate test set as given; null when it is split off `data`."
    )
    val: str | None = Field(
        None,
        description="A separate validation set (data like what the model will see) as given; "
        "null when it is split off `data`.",
    )
    text_col: str | None = Field(None, description="Column with the text; null to detect it.")
    label_col: str | None = Field(None, description="Column with the label; null to detect it.")
    strategies: tuple[str, ...] = Field(
        DEFAULT_STRATEGIES, min_length=1, description="Rungs to climb, by registry name."
    )
    metric: str = Field("macro_f1", description="Validation metric the ladder chooses by.")
    target: float | None = Field(
        None, description="Quality bar on `metric`: the ladder stops at the first rung meeting it."
    )
    strict: bool = Field(
        True,
        description="Meet `target` only with the pessimistic end of the 95% interval (a "
        "run.json without this field is from before it was the default, and reads false).",
    )
    budget: Budget = Field(default_factory=Budget, description="Hard caps for the whole ladder.")
    split: SplitConfig = Field(
        default_factory=SplitConfig, description="Validation/test fractions and the seed."
    )
    drop_invalid: bool = Field(False, description="Drop invalid rows instead of failing.")
    delimiter: str | None = Field(None, description="Field separator for .txt files.")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-rung setting overrides, e.g. {'lora': {'r': 16}}."
    )
    ship: str = Field(
        "int8",
        description="Last compression step for the chosen model: none, onnx, int8 or "
        "distilled; or auto: the accepted step cheapest to own at `volume`.",
    )
    volume: float | None = Field(
        None,
        ge=0,
        description="Predictions the model will serve (e.g. a month's worth): the ladder and "
        "the shipping step minimise training + volume × serving cost; null: training cost only.",
    )
    max_drop: float = Field(
        1.0, ge=0, description="Points of validation quality a compression step may lose."
    )
    speed: SpeedConfig = Field(
        default_factory=SpeedConfig, description="How inference speed is measured."
    )
    prices: Prices = Field(
        default_factory=Prices, description="What compute costs, for every cost card of the run."
    )
    scale: Scale = Field(
        default_factory=Scale, description="Data-parallel training of torch rungs (torchrun)."
    )
    fingerprint: str | None = Field(
        None,
        description="sha256 of the training split, recorded when the run starts; a resume "
        "refuses data that changed.",
    )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")


def build_settings(**values: Any) -> RunSettings:
    """`RunSettings(**values)`, with invalid values reported as a `ConfigError`."""
    from frugalml.errors import ConfigError

    try:
        return RunSettings(**values)
    except ValidationError as err:
        problems = validation_problems(err)
        raise ConfigError(f"invalid fit settings, {_count(problems)}:", problems) from None


def read_run_settings(path: Path) -> RunSettings:
    """A run folder's `run.json`, validated; older files (without `speed` or `prices`) read
    with those at their defaults, which is what their runs used (`strict` as false)."""
    from frugalml.errors import ConfigError

    hint = "the file was edited or damaged: fix it, or start a new run with another --out"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data.setdefault("strict", False)  # the default of the versions that omitted it
        return RunSettings.model_validate(data)
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err})", [hint]) from None
    except ValidationError as err:
        problems = validation_problems(err)
        raise ConfigError(
            f"{path} holds invalid run settings, {_count(problems)}:", [*problems, hint]
        ) from None


def _count(problems: list[str]) -> str:
    from frugalml.errors import plural

    return plural(len(problems), "problem")


# What pydantic calls a type, as JSON names it (messages are about JSON files and options).
_NAMES = {
    "a valid dictionary": "a JSON object",
    "a valid list": "a list",
    "a valid tuple": "a list",
}
_SHOULD = re.compile(r"^(Input|List|Tuple|String|Dictionary|Value) should (be|have)")
_KINDS = {
    dict: "an object",
    list: "a list",
    tuple: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
}


def validation_problems(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: the dotted field path, what was expected, what was found."""
    problems = []
    for e in error.errors(include_url=False):
        path = ".".join(str(p) for p in ((prefix,) if prefix else ()) + e["loc"]) or "(top level)"
        if e["type"] == "missing":
            problems.append(f"{path}: required, but missing")
        elif e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            problems.append(f"{path}: not a known field")
        else:
            message = _SHOULD.sub("expected", e["msg"].removeprefix("Value error, "))
            message = message.replace(" after validation", "")
            for pydantic_name, json_name in _NAMES.items():
                message = message.replace(pydantic_name, json_name)
            problems.append(f"{path}: {message}; got {_describe(e['input'])}")
    return problems


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    kind = _KINDS.get(type(value), "a number" if isinstance(value, float) else type(value).__name__)
    text = json.dumps(value, default=str, ensure_ascii=False)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


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
    import yaml  # here, not at the top: loading a bundle needs this module but not YAML

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
