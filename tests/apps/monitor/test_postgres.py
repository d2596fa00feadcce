"""The monitor's store on a real PostgreSQL server started on 127.0.0.1 (skipped, with the
reason, where the binary or a non-root user to run it is missing)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import frugalml
from frugalml.apps.monitor import demo, store
from frugalml.apps.monitor.detect import DetectorSettings
from frugalml.apps.monitor.events import FileSource
from frugalml.apps.monitor.pipeline import Monitor, MonitorSettings, run
from frugalml.apps.monitor.scoring import Scorer, TopicRules, Watchlist
from tests.apps.monitor import postgres
from tests.apps.monitor.conftest import write_events

N = 1200
_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    reason = postgres.absent()
    if reason:
        pytest.skip(reason)
    with postgres.running_postgres() as url:
        yield url


@pytest.fixture
def database(server: str) -> str:
    """A fresh database on the module's server."""
    import psycopg

    name = f"monitor_{next(_names)}"
    dsn = server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + "/" + name


def _monitor(bundle: Path, url: str, alerts: list[dict[str, Any]]) -> Monitor:
    return Monitor(
        store.open_store(url),
        Scorer(frugalml.load(bundle)),
        topics=TopicRules(Watchlist(demo.watchlist())),
        settings=MonitorSettings(detectors=DetectorSettings(warmup=100)),
        sinks=[alerts.append],
    )


def _counted(monitor: Monitor) -> int:
    w = store.windows
    with monitor.engine.connect() as c:
        query = select(func.sum(w.c.n)).where(w.c.topic == "*", w.c.size_s == 300)
        return int(c.scalar(query) or 0)


def test_postgres_store_counts_once_resumes_and_alerts_with_evidence(
    sentiment_bundle: Path, database: str, tmp_path: Path
) -> None:
    events = write_events(tmp_path / "e.jsonl", demo.stream(N))
    alerts: list[dict[str, Any]] = []
    first = _monitor(sentiment_bundle, database, alerts)
    assert first.engine.dialect.name == "postgresql"
    source = FileSource(events)
    half = next(source.batches(None, N // 2))
    assert first.process(half, source.name).new == N // 2
    first.engine.dispose()
    # a restart: a new monitor on the same database resumes after the committed batch
    again = _monitor(sentiment_bundle, database, alerts)
    total = run(again, FileSource(events))
    assert (total.new, total.duplicates) == (N - N // 2, 0)
    assert _counted(again) == N
    copy = run(again, FileSource(write_events(tmp_path / "copy.jsonl", demo.stream(N))))
    assert (copy.new, copy.duplicates) == (0, N)
    assert _counted(again) == N
    kestrel = [a for a in alerts if a["topic"] == "Kestrel Oyj"]
    assert kestrel and all(a["time"] >= 1_735_689_600 + 0.7 * N * 6 for a in kestrel)
    texts = kestrel[0]["evidence"]["texts"]
    assert texts and all("Kestrel" in t["text"] or "$KEST" in t["text"] for t in texts)
    with again.engine.connect() as c:
        stored = c.scalar(select(func.count()).select_from(store.alerts))
    assert stored == len(alerts)
    again.engine.dispose()
