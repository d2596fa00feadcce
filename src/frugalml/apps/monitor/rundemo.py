"""The demo: a small model on built-in sentences, a replayed stream with a shock, the report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def run_demo(out: Path, n_events: int = 3000) -> Iterator[str]:
    import frugalml
    from frugalml.apps.monitor import demo
    from frugalml.apps.monitor.config import MonitorConfig, build_monitor
    from frugalml.apps.monitor.events import FileSource
    from frugalml.apps.monitor.pipeline import run
    from frugalml.apps.monitor.report import write_report
    from frugalml.data import Dataset

    out.mkdir(parents=True, exist_ok=True)
    rows = demo.training_rows()
    data = Dataset.from_lists(
        [r["text"] for r in rows], [r["label"] for r in rows], name="monitor-demo"
    )
    if not (out / "run" / "bundle").exists():
        yield "training a TF-IDF sentiment model on the built-in sentences…"
        frugalml.fit(data, out=out / "run", strategies=["tfidf"], ship="none", force=True)
    (out / "watchlist.json").write_text(json.dumps(demo.watchlist(), indent=1))
    events = demo.write_jsonl(demo.stream(n_events), out / "events.jsonl")
    store = out / "monitor.db"
    store.unlink(missing_ok=True)
    config = MonitorConfig(
        model=str(out / "run"),
        watchlist=str(out / "watchlist.json"),
        store=str(store),
        alerts=(f"jsonl:{out / 'alerts.jsonl'}",),
    )
    monitor = build_monitor(config)
    yield f"replaying {n_events} events (a negative shock on Kestrel Oyj from 70% of the stream)"
    total = run(monitor, FileSource(events))
    for alert in total.alerts:
        yield f"ALERT {alert['message']}"
        for text in alert["evidence"].get("texts", [])[:3]:
            yield f"    {text['negative']:.2f}  {text['text']}"
    report = write_report(monitor.engine, out / "report.html", config_window(config))
    yield f"{total.new} events, {len(total.alerts)} alerts; report: {report}"


def config_window(config: object) -> int:
    return int(getattr(config, "windows", (300,))[0])
