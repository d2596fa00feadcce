"""`frugalml monitor run | report | demo`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from frugalml.apps.monitor.events import Source

app = typer.Typer(help="Watch a stream of texts for shifts in negative sentiment, per topic.")


@app.command()
def run(
    model: str = typer.Option(..., help="Sentiment bundle, or a run folder (its bundle)."),
    source: str = typer.Option(
        ..., help="Events: a .jsonl/.csv file, '-' for stdin, or redis://HOST:PORT/DB."
    ),
    stream: str = typer.Option("events", help="Redis: the stream to read."),
    group: str = typer.Option("frugalml-monitor", help="Redis: the consumer group."),
    consumer: str = typer.Option("monitor-1", help="Redis: this consumer's name."),
    topics: str = typer.Option(None, "--topics", help="A topic classifier bundle."),
    watchlist: str = typer.Option(None, help="JSON/YAML file: entity → list of aliases."),
    store: str = typer.Option("monitor.db", help="SQLite path or postgresql+psycopg:// URL."),
    alerts: list[str] = typer.Option(["log"], help="log, jsonl:PATH, webhook:URL (repeat)."),
    follow: bool = typer.Option(False, help="Keep reading the file as it grows."),
    idle_exit: float = typer.Option(None, help="With --follow or Redis: stop after N idle s."),
    replay_rate: float = typer.Option(None, help="Replay at most N events per second."),
    window: str = typer.Option("5m,1h", help="Tumbling windows; the first is the primary."),
    lateness: str = typer.Option("10m", help="How late an event may arrive and still count."),
    cooldown: str = typer.Option("1h", help="Quiet time after an alert, per topic and kind."),
    false_alarms: float = typer.Option(1.0, help="Target false alarms per 10,000 texts."),
    shift: float = typer.Option(1.5, help="Rise of the negative share to detect fastest (×)."),
    warmup: int = typer.Option(200, help="Texts per topic that estimate its base rate."),
    base_rate: float = typer.Option(
        None, help="The negative share in control, when known: no warm-up, exact false alarms."
    ),
    store_text: bool = typer.Option(True, help="--no-store-text keeps ids, times, scores."),
    retention: str = typer.Option(None, help="Keep events this long (e.g. 30d)."),
    reference: str = typer.Option(None, help="The model's training data (model monitoring)."),
    negative_label: str = typer.Option(None, help="The label that means negative."),
    batch_size: int = typer.Option(64, help="Events scored per model call."),
) -> None:
    """Score events, store them, watch each topic, raise alerts with their evidence."""
    import logging

    from frugalml.apps.monitor.config import MonitorConfig, build_monitor, seconds
    from frugalml.apps.monitor.pipeline import run as run_monitor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = MonitorConfig(
        model=model,
        topics_model=topics,
        watchlist=watchlist,
        store=store,
        windows=tuple(seconds(w, "--window") for w in window.split(",")),
        lateness_s=seconds(lateness, "--lateness"),
        cooldown_s=seconds(cooldown, "--cooldown"),
        rate_per_10k=false_alarms,
        shift=shift,
        warmup=warmup,
        base_rate=base_rate,
        store_text=store_text,
        retention_s=seconds(retention, "--retention") if retention else None,
        reference=reference,
        negative_label=negative_label,
        alerts=tuple(alerts),
        batch_size=batch_size,
    )
    monitor = build_monitor(config)
    events = _source(source, stream, group, consumer, follow, idle_exit)
    total = run_monitor(monitor, events, batch_size, rate=replay_rate)
    typer.echo(
        f"{total.new} new events, {total.duplicates} duplicates, {len(total.bad)} bad, "
        f"{len(total.late)} late, {len(total.alerts)} alerts ({total.suppressed} in cooldown)"
    )


def _source(
    spec: str,
    stream: str,
    group: str,
    consumer: str,
    follow: bool,
    idle_exit: float | None,
) -> Source:
    from frugalml.apps.monitor.events import FileSource, StdinSource

    if spec == "-":
        return StdinSource()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from frugalml.apps.monitor.redis_source import RedisSource

        return RedisSource(spec, stream, group=group, consumer=consumer, idle_exit_s=idle_exit)
    return FileSource(Path(spec), follow=follow, idle_exit_s=idle_exit)


@app.command()
def report(
    store: str = typer.Option("monitor.db", help="The monitor's store."),
    out: Path = typer.Option(Path("monitor-report.html"), help="The HTML file to write."),
    window: str = typer.Option("5m", help="Which window size to chart."),
    topics: int = typer.Option(6, help="Chart the N topics with most texts."),
) -> None:
    """A self-contained HTML page: negative share and volume per topic, alerts, evidence."""
    from frugalml.apps.monitor.config import seconds
    from frugalml.apps.monitor.report import write_report
    from frugalml.apps.monitor.store import open_store

    path = write_report(open_store(store), out, int(seconds(window, "--window")), topics)
    typer.echo(f"wrote {path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("monitor-demo"), help="Folder for the model, store, report."),
    events: int = typer.Option(3000, help="Events to replay."),
) -> None:
    """Train a small model on built-in sentences, replay a stream with a negative shock on one
    company, print the alerts and write the report."""
    from frugalml.apps.monitor.rundemo import run_demo

    for line in run_demo(out, events):
        typer.echo(line)
