"""The pipeline on a real SQLite store: counts once, reports bad and late events, alerts with
evidence, keeps no text when told, purges old events, watches the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

import frugalml
from frugalml.apps.monitor import demo, store
from frugalml.apps.monitor.detect import DetectorSettings
from frugalml.apps.monitor.drift import Limits
from frugalml.apps.monitor.events import FileSource, Raw, RawBatch
from frugalml.apps.monitor.pipeline import Monitor, MonitorSettings, run
from frugalml.apps.monitor.scoring import Scorer, TopicRules, Watchlist
from tests.apps.monitor.conftest import write_events

N = 1200  # events of a demo replay: ~200 per company, the shock from event 840
WARMUP = DetectorSettings(warmup=100)  # texts that estimate a topic's base rate (default 200)


def _monitor(bundle: Path, db: Path, **settings: Any) -> tuple[Monitor, list[dict[str, Any]]]:
    settings.setdefault("detectors", WARMUP)
    alerts: list[dict[str, Any]] = []
    monitor = Monitor(
        store.open_store(str(db)),
        Scorer(frugalml.load(bundle)),
        topics=TopicRules(Watchlist(demo.watchlist())),
        settings=MonitorSettings(**settings),
        sinks=[alerts.append],
    )
    return monitor, alerts


def _window_total(monitor: Monitor, topic: str = "*") -> int:
    with monitor.engine.connect() as c:
        w = store.windows
        query = select(func.sum(w.c.n)).where(w.c.topic == topic, w.c.size_s == 300)
        return int(c.scalar(query) or 0)


def test_a_replay_counts_each_event_once_and_alerts_on_the_shock_with_evidence(
    sentiment_bundle: Path, tmp_path: Path
) -> None:
    events = write_events(tmp_path / "events.jsonl", demo.stream(N))
    monitor, alerts = _monitor(sentiment_bundle, tmp_path / "m.db")
    total = run(monitor, FileSource(events))
    assert (total.new, total.duplicates) == (N, 0)
    assert _window_total(monitor) == N
    kestrel = [a for a in alerts if a["topic"] == "Kestrel Oyj"]
    assert kestrel and {a["kind"] for a in kestrel} <= {"negative_cusum", "negative_ewma"}
    shock = 1_735_689_600 + 0.7 * N * 6
    assert all(a["time"] >= shock for a in kestrel)  # none before the shock
    evidence = kestrel[0]["evidence"]
    assert evidence["window"]["n"] >= evidence["window"]["negatives"] > 0
    assert evidence["texts"] and all(t["negative"] > 0.5 for t in evidence["texts"])
    # a second replay of the same file, and a copy of it, add nothing
    assert run(monitor, FileSource(events)).new == 0
    copy = write_events(tmp_path / "copy.jsonl", demo.stream(N))
    again = run(monitor, FileSource(copy))
    assert (again.new, again.duplicates) == (0, N)
    assert _window_total(monitor) == N


def test_bad_records_are_reported_and_the_stream_goes_on(
    sentiment_bundle: Path, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"id": "1", "time": "2025-01-01T00:00:00Z", "text": "Kestrel Oyj profit fell"}\n'
        '{"id": "2", "text": "no time"}\n'
        '{"id": "3", "time": "yesterday", "text": "bad time"}\n'
        '{"id": "4", "time": 1735689600}\n'
        "not json\n"
        '{"id": "5", "time": 1735689601, "text": "Lantern Bank sales rose"}\n'
    )
    monitor, _ = _monitor(sentiment_bundle, tmp_path / "m.db")
    total = run(monitor, FileSource(path))
    assert total.new == 2
    problems = dict(total.bad)
    assert "'time' is missing" in problems["events.jsonl:2"]
    assert "not ISO 8601" in problems["events.jsonl:3"]
    assert "'text' is missing" in problems["events.jsonl:4"]
    assert "not JSON" in problems["events.jsonl:5"]


def test_late_events_within_the_bound_count_and_later_ones_are_kept_and_reported(
    sentiment_bundle: Path, tmp_path: Path
) -> None:
    t0 = 1_735_689_600
    rows = [
        {"id": "a", "time": t0 + 3600, "text": "Kestrel Oyj shares fell"},
        {"id": "b", "time": t0 + 3600 - 300, "text": "Kestrel Oyj sales rose"},  # 5 min late
        {"id": "c", "time": t0, "text": "Kestrel Oyj appoints a CFO"},  # an hour late
    ]
    monitor, _ = _monitor(sentiment_bundle, tmp_path / "m.db", lateness_s=600)
    total = run(monitor, FileSource(write_events(tmp_path / "e.jsonl", rows)), batch_size=1)
    assert total.new == 3 and total.late == ["c"]
    assert _window_total(monitor) == 2
    with monitor.engine.connect() as c:
        late = dict(c.execute(select(store.events.c.id, store.events.c.late)).all())
    assert late == {"a": False, "b": False, "c": True}


def test_no_store_text_keeps_only_ids_times_labels_and_scores(
    sentiment_bundle: Path, tmp_path: Path
) -> None:
    monitor, alerts = _monitor(sentiment_bundle, tmp_path / "m.db", store_text=False)
    run(monitor, FileSource(write_events(tmp_path / "e.jsonl", demo.stream(N))))
    with monitor.engine.connect() as c:
        texts = set(c.scalars(select(store.events.c.text)))
        assert texts == {None}
    assert alerts and all(t["text"] is None for a in alerts for t in a["evidence"]["texts"])


def test_retention_drops_old_events_but_keeps_aggregates(
    sentiment_bundle: Path, tmp_path: Path
) -> None:
    monitor, _ = _monitor(sentiment_bundle, tmp_path / "m.db", retention_s=1800)
    run(monitor, FileSource(write_events(tmp_path / "e.jsonl", demo.stream(600))))  # an hour
    with monitor.engine.connect() as c:
        oldest = c.scalar(select(func.min(store.events.c.time)))
        kept = c.scalar(select(func.count()).select_from(store.events))
    assert oldest >= monitor.latest - 1800 and kept < 600  # type: ignore[operator]
    assert _window_total(monitor) == 600


def test_a_stream_unlike_the_training_data_raises_model_may_be_stale(
    sentiment_bundle: Path, tmp_path: Path
) -> None:
    monitor, alerts = _monitor(
        sentiment_bundle,
        tmp_path / "m.db",
        model=Limits(every=200),
        detectors=DetectorSettings(warmup=10_000),
    )
    normal = demo.stream(200)
    odd = [
        {"id": f"x{i}", "time": 1_735_700_000 + i, "text": f"zorblax quux {i} frobnicate"}
        for i in range(200)
    ]
    batch = RawBatch([Raw(r, "test") for r in normal + odd])
    monitor.process(batch)
    stale = [a for a in alerts if a["kind"] == "model_stale"]
    assert len(stale) == 1 and "model may be stale" in stale[0]["message"]
    figures = stale[0]["evidence"]["figures"]
    assert figures["unknown_rate"] > 0.5


def test_topics_come_from_cashtags_and_the_watchlist(sentiment_bundle: Path) -> None:
    rules = TopicRules(Watchlist({"Apple": ["Apple Inc", "AAPL"]}))
    found = rules.topics(["Apple Inc beats", "$AAPL up, $MSFT down", "pineapple prices"])
    assert found == [{"Apple"}, {"Apple", "$MSFT"}, set()]


def test_report_is_written_with_the_charts_inline(sentiment_bundle: Path, tmp_path: Path) -> None:
    from frugalml.apps.monitor.report import write_report

    monitor, _ = _monitor(sentiment_bundle, tmp_path / "m.db")
    run(monitor, FileSource(write_events(tmp_path / "e.jsonl", demo.stream(N))))
    page = write_report(monitor.engine, tmp_path / "r.html", 300).read_text()
    assert "Kestrel Oyj" in page and "negative_cusum" in page
    assert "cdn" not in page.split("<script>")[0].lower() and len(page) > 1_000_000


def test_a_file_source_resumes_at_its_committed_position(tmp_path: Path) -> None:
    path = write_events(tmp_path / "e.jsonl", demo.stream(10))
    first = next(FileSource(path).batches(None, 4))
    rest = [r.data["id"] for b in FileSource(path).batches(first.position, 4) for r in b.records]
    assert [r.data["id"] for r in first.records] + rest == [f"demo-{i}" for i in range(10)]
    assert json.loads(first.position or "")[1] == 4
