"""The monitor's settings, one typed model for the CLI and for an application folder's
`app.json` (`frugalml serve FOLDER`), and the one function that builds a `Monitor` from them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from frugalml.errors import ConfigError

if TYPE_CHECKING:
    from frugalml.apps.monitor.pipeline import Monitor
    from frugalml.apps.monitor.sinks import Sink

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def seconds(text: str, what: str) -> float:
    """'90s', '5m', '1h', '30d' or plain seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{what} must be a duration like 90s, 5m, 1h or 30d; got {text!r}")
    return float(match.group(1)) * _UNIT[match.group(2)]


class MonitorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Sentiment bundle, or a run folder (its shipped bundle).")
    topics_model: str | None = Field(None, description="A topic classifier bundle.")
    watchlist: str | None = Field(None, description="JSON/YAML: entity → aliases.")
    cashtags: bool = True
    store: str = Field("monitor.db", description="SQLite path or a SQLAlchemy URL.")
    windows: tuple[float, ...] = (300, 3600)
    lateness_s: float = Field(600, ge=0)
    cooldown_s: float = Field(3600, ge=0)
    rate_per_10k: float = Field(1.0, gt=0, description="Target false alarms per 10,000 texts.")
    shift: float = Field(1.5, gt=1, description="Rise of the negative share CUSUM is tuned to.")
    warmup: int = Field(200, ge=10)
    base_rate: float | None = Field(None, gt=0, lt=1)
    min_volume: int = Field(20, ge=1)
    store_text: bool = True
    retention_s: float | None = Field(None, gt=0)
    negative_label: str | None = None
    reference: str | None = Field(None, description="Training data: model monitoring reference.")
    alerts: tuple[str, ...] = ("log",)
    batch_size: int = Field(64, ge=1)


def resolve_bundle(path: str | Path) -> Path:
    """A bundle folder, or a run folder's shipped `bundle/` (the int8 one when `fit` shipped it)."""
    folder = Path(path)
    if (folder / "manifest.json").is_file():
        return folder
    if (folder / "bundle" / "manifest.json").is_file():
        return folder / "bundle"
    raise ConfigError(f"{folder} is neither a bundle nor a run folder with a bundle/")


def build_monitor(config: MonitorConfig, *, base: Path | None = None) -> Monitor:
    """Load the bundles and the store named by `config` (relative paths from `base`)."""
    import frugalml
    from frugalml.apps.monitor.detect import DetectorSettings
    from frugalml.apps.monitor.drift import Limits, ModelWatch
    from frugalml.apps.monitor.pipeline import Monitor, MonitorSettings
    from frugalml.apps.monitor.scoring import Scorer, TopicModel, TopicRules, Watchlist
    from frugalml.apps.monitor.store import open_store

    def where(p: str) -> Path:
        return (base / p) if base and not Path(p).is_absolute() else Path(p)

    scorer = Scorer(frugalml.load(resolve_bundle(where(config.model))), config.negative_label)
    if config.topics_model:
        topics: TopicRules | TopicModel = TopicModel(
            frugalml.load(resolve_bundle(where(config.topics_model)))
        )
    else:
        watch = Watchlist.read(where(config.watchlist)) if config.watchlist else None
        topics = TopicRules(watch, config.cashtags)
    store = config.store if "://" in config.store else str(where(config.store))
    settings = MonitorSettings(
        windows=tuple(int(w) for w in config.windows),
        lateness_s=config.lateness_s,
        cooldown_s=config.cooldown_s,
        store_text=config.store_text,
        retention_s=config.retention_s,
        detectors=DetectorSettings(
            rate_per_10k=config.rate_per_10k,
            shift=config.shift,
            warmup=config.warmup,
            base_rate=config.base_rate,
            min_volume=config.min_volume,
        ),
    )
    monitor = Monitor(
        open_store(store), scorer, topics=topics, settings=settings, sinks=sinks(config.alerts)
    )
    if config.reference:
        data = frugalml.load_dataset(where(config.reference), drop_invalid=True)
        labels = [data.labels[i] for i in data.y]
        monitor.set_reference(ModelWatch.from_training(Limits(), list(data.texts), labels))
    return monitor


def sinks(specs: tuple[str, ...]) -> list[Sink]:
    from frugalml.apps.monitor.sinks import make_sink

    return [make_sink(spec) for spec in specs]
