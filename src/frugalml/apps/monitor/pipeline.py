"""The monitor: events → scores and topics → store → windows → detectors → alerts with evidence.

`Monitor.process(batch)` handles one micro-batch end to end: `prepare` parses and drops what
was seen before, the texts are scored in one call, and `commit` writes events, window counts,
detector state, alerts and the source's position in one transaction. Dedup is by event id and
is decided inside that transaction, so a replay or a broker's redelivery is never counted
twice, and a crash at any point leaves the store consistent with some batch boundary.

Time is event time: an event older than the newest one minus `lateness_s` is late; it is
stored (flagged) and reported, but no longer counted in windows or detectors. Per-text
detectors (CUSUM, EWMA) see each topic's events in arrival order; a window's volume is judged
once the watermark has passed its end.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from frugalml.apps.monitor import store
from frugalml.apps.monitor.detect import (
    DetectorSettings,
    TopicDetectors,
    negative_share,
    rates_from_confusion,
)
from frugalml.apps.monitor.drift import Limits, ModelWatch
from frugalml.apps.monitor.events import Event, EventError, RawBatch, Source, parse_event
from frugalml.apps.monitor.scoring import ALL, Scorer, Scores, TopicModel, TopicRules

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

log = logging.getLogger("frugalml.monitor")
KINDS = ("negative_cusum", "negative_ewma", "volume_surge", "model_stale")


@dataclass
class MonitorSettings:
    windows: tuple[int, ...] = (300, 3600)  # tumbling window sizes, seconds; the first is primary
    lateness_s: float = 600.0
    cooldown_s: float = 3600.0  # per topic and kind
    store_text: bool = True
    retention_s: float | None = None  # keep events this long (by event time); None: forever
    evidence: int = 5  # most negative texts kept with an alert
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    model: Limits = field(default_factory=Limits)


@dataclass
class Prepared:
    events: list[Event]
    bad: list[tuple[str, str]]  # (where, problem)
    duplicates: int
    batch: RawBatch


@dataclass
class BatchReport:
    new: int = 0
    duplicates: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    suppressed: int = 0  # alerts held back by the cooldown
    latest: float | None = None  # newest event time seen
    shares: dict[str, float] = field(default_factory=dict)  # topic → negative share, open window


class Monitor:
    """One writer of one store. Thread-safe: `commit` holds a lock."""

    def __init__(
        self,
        engine: Engine,
        scorer: Scorer,
        *,
        topics: TopicRules | TopicModel | None = None,
        settings: MonitorSettings | None = None,
        sinks: Sequence[Callable[[dict[str, Any]], None]] = (),
        watch: ModelWatch | None = None,
    ) -> None:
        self.engine, self.scorer, self.topics = engine, scorer, topics or TopicRules()
        self.settings = settings or MonitorSettings()
        self.sinks = list(sinks)
        self.watch = watch or ModelWatch(self.settings.model)
        self.rates = self._rates()
        self._lock = threading.Lock()
        self._reload()

    def _rates(self) -> tuple[float, float] | None:
        metrics = self.scorer.bundle.manifest.metrics
        confusion = metrics.val.get("confusion") if metrics else None
        return rates_from_confusion(confusion, self.scorer.negative) if confusion else None

    def _reload(self) -> None:
        """Detector state lives in the store; the memory copy is a cache of it."""
        self._detectors: dict[str, TopicDetectors] = {}
        with self.engine.connect() as c:
            self.latest: float | None = store.get_state(c, "latest")
            self.watch.restore(
                store.get_state(c, "model_reference"), store.get_state(c, "model_block")
            )

    # --- the pipeline -------------------------------------------------------------------

    def process(self, batch: RawBatch, source: str | None = None) -> BatchReport:
        prepared = self.prepare(batch)
        texts = [e.text for e in prepared.events]
        proba = np.asarray(self.scorer.bundle.predict_proba(texts)) if texts else None
        return self.commit(prepared, proba, source)

    def prepare(self, batch: RawBatch) -> Prepared:
        """Parse, report bad records, drop ids seen in this batch or stored before."""
        parsed, bad, seen = [], [], set()
        for raw in batch.records:
            if raw.data is None:
                bad.append((raw.where, raw.problem))
                continue
            try:
                event = parse_event(raw.data)
            except EventError as err:
                bad.append((raw.where, str(err)))
                continue
            if event.id not in seen:
                seen.add(event.id)
                parsed.append(event)
        with self.engine.connect() as c:
            known = store.known_ids(c, [e.id for e in parsed])
        fresh = [e for e in parsed if e.id not in known]
        duplicates = len(batch.records) - len(bad) - len(fresh)
        return Prepared(fresh, bad, duplicates, batch)

    def commit(
        self, prepared: Prepared, proba: np.ndarray | None, source: str | None = None
    ) -> BatchReport:
        """Write the batch; `proba` holds the sentiment model's rows for `prepared.events`."""
        with self._lock:
            try:
                with self.engine.begin() as c:
                    report = self._commit(c, prepared, proba, source)
            except BaseException:
                self._reload()  # the cached state may be ahead of what the store kept
                raise
        for alert in report.alerts:
            for sink in self.sinks:
                sink(alert)
        for where, problem in report.bad:
            log.warning("bad event at %s: %s", where, problem)
        if report.late:
            log.warning(
                "%d late event(s) stored but not counted: %s",
                len(report.late),
                ", ".join(report.late[:5]),
            )
        return report

    def _commit(
        self, c: Connection, prepared: Prepared, proba: np.ndarray | None, source: str | None
    ) -> BatchReport:
        known = store.known_ids(c, [e.id for e in prepared.events])
        keep = [i for i, e in enumerate(prepared.events) if e.id not in known]
        events = [prepared.events[i] for i in keep]
        report = BatchReport(
            new=len(events), duplicates=prepared.duplicates + len(known), bad=prepared.bad
        )
        if events:
            assert proba is not None
            scores = self.scorer.from_proba(proba[keep])
            topic_sets = self._topics(events)
            self._record(c, events, scores, topic_sets, report)
        if prepared.batch.position is not None and source is not None:
            store.put_state(c, f"position:{source}", prepared.batch.position)
        report.latest = self.latest
        return report

    def _topics(self, events: list[Event]) -> list[set[str]]:
        found = self.topics.topics([e.text for e in events])
        return [{ALL, *e.entities, *t} for e, t in zip(events, found, strict=True)]

    def _record(
        self,
        c: Connection,
        events: list[Event],
        scores: Scores,
        topic_sets: list[set[str]],
        report: BatchReport,
    ) -> None:
        s = self.settings
        rows: list[dict[str, Any]] = []
        topic_rows: list[dict[str, str]] = []
        counts: defaultdict[tuple[str, int, float], list[float]] = defaultdict(lambda: [0, 0, 0.0])
        fired: list[tuple[str, str, Event, TopicDetectors]] = []
        touched: dict[str, TopicDetectors] = {}
        for i, event in enumerate(events):
            watermark = None if self.latest is None else self.latest - s.lateness_s
            late = watermark is not None and event.time < watermark
            self.latest = event.time if self.latest is None else max(self.latest, event.time)
            negative = bool(scores.is_negative[i])
            rows.append(self._row(event, scores, i, late))
            topic_rows += [{"event_id": event.id, "topic": t} for t in topic_sets[i]]
            if late:
                report.late.append(event.id)
                continue
            for topic in topic_sets[i]:
                for size in s.windows:
                    cell = counts[(topic, size, _start(event.time, size))]
                    cell[0] += 1
                    cell[1] += int(negative)
                    cell[2] += float(scores.negative[i])
                detectors = touched.setdefault(topic, self._detector(c, topic))
                for name in detectors.update(negative):
                    fired.append((topic, f"negative_{name}", event, detectors))
        store.add_events(c, rows, topic_rows)
        store.add_window_counts(
            c,
            (
                {"topic": t, "size_s": z, "start": st, "n": n, "negatives": k, "score_sum": m}
                for (t, z, st), (n, k, m) in counts.items()
            ),
        )
        late_ids = set(report.late)
        fresh = [i for i, e in enumerate(events) if e.id not in late_ids]
        for topic, kind, event, detectors in fired:
            self._alert(c, topic, kind, event.time, detectors, report)
        for topic, detectors in touched.items():
            self._volume(c, topic, detectors, report)
            store.put_state(c, f"topic:{topic}", detectors.to_dict())
        self._model(
            c,
            [scores.labels[i] for i in fresh],
            [float(scores.confidence[i]) for i in fresh],
            [events[i].text for i in fresh],
            report,
        )
        store.put_state(c, "latest", self.latest)
        for topic in touched:
            row = store.window_row(c, topic, s.windows[0], _start(self.latest or 0, s.windows[0]))
            if row["n"]:
                report.shares[topic] = row["negatives"] / row["n"]
        if s.retention_s is not None and self.latest is not None:
            store.purge(c, self.latest - s.retention_s)

    def _row(self, event: Event, scores: Scores, i: int, late: bool) -> dict[str, Any]:
        return {
            "id": event.id,
            "time": event.time,
            "source": event.source,
            "text": event.text if self.settings.store_text else None,
            "label": scores.labels[i],
            "negative": float(scores.negative[i]),
            "confidence": float(scores.confidence[i]),
            "late": late,
        }

    def _detector(self, c: Connection, topic: str) -> TopicDetectors:
        if topic not in self._detectors:
            saved = store.get_state(c, f"topic:{topic}")
            settings = self.settings.detectors
            self._detectors[topic] = (
                TopicDetectors.from_dict(settings, saved) if saved else TopicDetectors(settings)
            )
        return self._detectors[topic]

    # --- alerts -------------------------------------------------------------------------

    def _alert(
        self,
        c: Connection,
        topic: str,
        kind: str,
        moment: float,
        detectors: TopicDetectors,
        report: BatchReport,
        statistic: float | None = None,
        threshold: float | None = None,
    ) -> None:
        last = detectors.extra.get(f"last:{kind}")
        if last is not None and moment - last < self.settings.cooldown_s:
            report.suppressed += 1
            return
        detectors.extra[f"last:{kind}"] = moment
        size = self.settings.windows[0]
        start = _start(moment, size)
        window = self._window(c, topic, size, start)
        if statistic is None:
            statistic, threshold = self._statistic(kind, detectors)
        message = _message(topic, kind, window)
        evidence = {
            "window": window,
            "texts": store.most_negative(c, topic, start, start + size, self.settings.evidence),
        }
        if kind.startswith("negative_"):
            evidence["detector"] = detectors.to_dict()[kind.removeprefix("negative_")]
        row = {
            "topic": topic,
            "kind": kind,
            "window_start": start,
            "time": moment,
            "statistic": statistic,
            "threshold": threshold,
            "message": message,
            "evidence": json.dumps(evidence, default=float),
        }
        if store.add_alert(c, row):
            report.alerts.append({**row, "evidence": evidence})

    def _statistic(self, kind: str, detectors: TopicDetectors) -> tuple[float, float]:
        if kind == "negative_cusum" and detectors.cusum:
            return detectors.cusum.h, detectors.cusum.h  # it fired at h and reset to 0
        if kind == "negative_ewma" and detectors.ewma:
            return detectors.ewma.limit, detectors.ewma.limit
        return math.nan, math.nan

    def _window(self, c: Connection, topic: str, size: int, start: float) -> dict[str, Any]:
        row = store.window_row(c, topic, size, start)
        tpr, fpr = self.rates or (None, None)
        share = negative_share(row["negatives"], row["n"], tpr, fpr)
        return {
            "start": start,
            "end": start + size,
            "size_s": size,
            "n": row["n"],
            "negatives": row["negatives"],
            "mean_negative_score": row["score_sum"] / row["n"] if row["n"] else None,
            "share": share.__dict__,
        }

    def _volume(
        self, c: Connection, topic: str, detectors: TopicDetectors, report: BatchReport
    ) -> None:
        """Judge the topic's primary windows the watermark has closed since last time."""
        size = self.settings.windows[0]
        if self.latest is None:
            return
        closed_before = _start(self.latest - self.settings.lateness_s, size)  # exclusive
        done = detectors.extra.get("volume_through")
        start = (
            closed_before - size if done is None else max(done + size, closed_before - 50 * size)
        )
        while start < closed_before:
            n = store.window_row(c, topic, size, start)["n"]
            assert detectors.volume is not None
            surge, limit = detectors.volume.update(n)
            detectors.extra["volume_through"] = start
            if surge:
                moment = start + size - 1e-6
                self._alert(c, topic, "volume_surge", moment, detectors, report, float(n), limit)
            start += size

    def _model(
        self,
        c: Connection,
        labels: list[str],
        confidence: list[float],
        texts: list[str],
        report: BatchReport,
    ) -> None:
        """Feed the model watch in blocks of exactly `every` texts."""
        while labels:
            room = self.settings.model.every - int(self.watch.block.get("n", 0))
            self.watch.add(labels[:room], confidence[:room], texts[:room])
            labels, confidence, texts = labels[room:], confidence[room:], texts[room:]
            self._close_block(c, report)
        store.put_state(c, "model_block", self.watch.block)

    def _close_block(self, c: Connection, report: BatchReport) -> None:
        if self.watch.full():
            incomplete = self.watch.labels is None or self.watch.confidence is None
            figures = self.watch.close()
            if incomplete and self.watch.confidence is not None:  # the reference is now whole
                store.put_state(c, "model_reference", self.watch.to_dict())
            if figures and figures["stale"]:
                moment = self.latest or time.time()
                detectors = self._detector(c, "*model*")
                figures_alert = {"figures": figures}
                self._alert_model(c, moment, detectors, figures_alert, report)
                store.put_state(c, "topic:*model*", detectors.to_dict())

    def _alert_model(
        self,
        c: Connection,
        moment: float,
        detectors: TopicDetectors,
        evidence: dict[str, Any],
        report: BatchReport,
    ) -> None:
        last = detectors.extra.get("last:model_stale")
        if last is not None and moment - last < self.settings.cooldown_s:
            report.suppressed += 1
            return
        detectors.extra["last:model_stale"] = moment
        figures = evidence["figures"]
        row = {
            "topic": "*model*",
            "kind": "model_stale",
            "window_start": _start(moment, self.settings.windows[0]),
            "time": moment,
            "statistic": figures["psi"],
            "threshold": self.settings.model.psi,
            "message": "model may be stale: " + "; ".join(figures["stale"]),
            "evidence": json.dumps(evidence, default=float),
        }
        if store.add_alert(c, row):
            report.alerts.append({**row, "evidence": evidence})

    def set_reference(self, watch: ModelWatch) -> None:
        """A training-data reference for model monitoring (replaces the stream's own)."""
        with self.engine.begin() as c:
            store.put_state(c, "model_reference", watch.to_dict())
        self.watch.restore(watch.to_dict(), self.watch.block)

    def position(self, source: str) -> str | None:
        with self.engine.connect() as c:
            value = store.get_state(c, f"position:{source}")
        return None if value is None else str(value)


def _start(moment: float, size: int) -> float:
    return float(math.floor(moment / size) * size)


def _message(topic: str, kind: str, window: dict[str, Any]) -> str:
    share = window["share"]
    what = {
        "negative_cusum": "negative share rising (CUSUM)",
        "negative_ewma": "negative share above its EWMA limit",
        "volume_surge": "volume surge",
    }.get(kind, kind)
    return (
        f"{topic}: {what}; window of {window['n']} texts, {share['observed']:.0%} negative "
        f"(95% CI {share['low']:.0%}–{share['high']:.0%})"
    )


def run(
    monitor: Monitor,
    source: Source,
    batch_size: int = 64,
    on_batch: Callable[[BatchReport], None] | None = None,
    rate: float | None = None,
) -> BatchReport:
    """Feed `source` through `monitor` from its stored position, at most `rate` records a
    second when given (a replay at a chosen speed); totals of what happened."""
    total = BatchReport()
    started, handed = time.monotonic(), 0
    for batch in source.batches(monitor.position(source.name), batch_size):
        if rate:
            handed += len(batch.records)
            time.sleep(max(0.0, handed / rate - (time.monotonic() - started)))
        report = monitor.process(batch, source.name)
        source.committed(batch)  # acknowledged only once the store holds it
        total.new += report.new
        total.duplicates += report.duplicates
        total.bad += report.bad
        total.late += report.late
        total.alerts += report.alerts
        total.suppressed += report.suppressed
        total.latest = report.latest
        if on_batch:
            on_batch(report)
    return total
