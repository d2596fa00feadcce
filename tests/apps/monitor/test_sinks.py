"""Alert sinks against a real HTTP receiver on 127.0.0.1: retries with backoff on errors and
5xx, an HMAC-SHA256 signature header, and a receiver that is down never stops the stream."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import frugalml
from frugalml.apps.monitor import demo, store
from frugalml.apps.monitor.detect import DetectorSettings
from frugalml.apps.monitor.events import Raw, RawBatch
from frugalml.apps.monitor.pipeline import Monitor, MonitorSettings
from frugalml.apps.monitor.scoring import Scorer, TopicRules, Watchlist
from frugalml.apps.monitor.sinks import SIGNATURE_HEADER, WebhookSink, make_sink
from frugalml.errors import ConfigError

ALERT = {"topic": "Kestrel Oyj", "kind": "negative_cusum", "message": "Kestrel Oyj: rising"}


@dataclass
class Receiver:
    """Answers each POST with the next of `statuses` (then 200), recording what came."""

    url: str
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver("")
    got.release.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.release.wait(60)
            got.received.append((time.monotonic(), dict(self.headers), body))
            self.send_response(got.statuses.pop(0) if got.statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield got
    got.release.set()
    server.shutdown()
    server.server_close()


def test_5xx_answers_are_retried_with_backoff_and_every_post_is_signed(
    receiver: Receiver,
) -> None:
    receiver.statuses = [503, 500]
    sink = WebhookSink(receiver.url, secret="s3cret", retries=3, backoff_s=0.05)
    sink(ALERT)
    sink.close()
    assert (sink.sent, sink.failed) == (1, 0)
    assert len(receiver.received) == 3  # two 5xx, then delivered
    times = [t for t, _, _ in receiver.received]
    assert times[1] - times[0] >= 0.05 and times[2] - times[1] >= 0.1  # exponential backoff
    for _, headers, body in receiver.received:
        assert json.loads(body) == ALERT
        expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
        assert headers["Content-Type"] == "application/json"


def test_a_4xx_answer_is_not_retried_and_no_secret_means_no_signature(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [400]
    sink = WebhookSink(receiver.url, retries=3, backoff_s=0.01)
    with caplog.at_level(logging.ERROR, "frugalml.monitor"):
        sink(ALERT)
        sink.close()
    assert (sink.sent, sink.failed, len(receiver.received)) == (0, 1, 1)
    assert SIGNATURE_HEADER not in receiver.received[0][1]
    assert "gave up" in caplog.text


def test_posting_never_blocks_the_caller(receiver: Receiver) -> None:
    receiver.release.clear()  # the receiver hangs until released
    sink = WebhookSink(receiver.url, backoff_s=0.01)
    for _ in range(3):
        sink(ALERT)  # returns at once: were it to wait, this test would hang
    assert receiver.received == []
    receiver.release.set()
    sink.close()
    assert (sink.sent, len(receiver.received)) == (3, 3)


def test_a_receiver_that_is_down_is_retried_then_logged_and_the_stream_goes_on(
    sentiment_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{down.server_address[1]}/hook"
    down.server_close()  # nothing listens there now
    sink = WebhookSink(url, retries=2, backoff_s=0.01)
    monitor = Monitor(
        store.open_store(str(tmp_path / "m.db")),
        Scorer(frugalml.load(sentiment_bundle)),
        topics=TopicRules(Watchlist(demo.watchlist())),
        settings=MonitorSettings(detectors=DetectorSettings(base_rate=0.1)),
        sinks=[sink],
    )
    rows = [
        {"id": f"n{i}", "time": 1_735_689_600 + i, "text": "Kestrel Oyj shares fell after a loss"}
        for i in range(60)
    ]
    with caplog.at_level(logging.WARNING, "frugalml.monitor"):
        report = monitor.process(RawBatch([Raw(r, f"n{i}") for i, r in enumerate(rows)]))
        assert report.new == 60 and report.alerts  # stored and alerted despite the sink
        sink.close()
    assert (sink.sent, sink.failed) == (0, len(report.alerts))
    assert caplog.text.count("ConnectError") == 3 * len(report.alerts)  # 1 try + 2 retries
    with monitor.engine.connect() as c:
        assert store.counts(c) == {"events": 60, "alerts": len(report.alerts)}


def test_sink_specs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FRUGALML_WEBHOOK_SECRET", "k")
    hook = make_sink("webhook:http://127.0.0.1:9/x")
    assert isinstance(hook, WebhookSink) and hook.secret == "k"
    hook.close()
    make_sink(f"jsonl:{tmp_path / 'a.jsonl'}")(ALERT)
    assert json.loads((tmp_path / "a.jsonl").read_text()) == ALERT
    with pytest.raises(ConfigError, match="webhook:https://HOST/PATH"):
        make_sink("webhook:ftp://x")
