"""kill -9 mid-stream, restart: nothing lost, nothing counted twice (file and Redis sources).

`frugalml monitor run` is killed mid-stream in a subprocess; the restart is a fresh monitor on
the same store in this process (the CLI's own code path minus its start-up, which costs ~10 s
on a busy machine). The fast set kills a 300-event replay; the `slow` variants 1,500."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from frugalml.apps.monitor import demo, store
from frugalml.apps.monitor.config import MonitorConfig, build_monitor
from frugalml.apps.monitor.events import FileSource, Source
from frugalml.apps.monitor.pipeline import BatchReport, run
from tests.apps.monitor.conftest import write_events

SIZES = [300, pytest.param(1500, marks=pytest.mark.slow)]
RATE = "60"  # events/s of the paced first run: slow enough to be killed mid-stream


def _monitor_cmd(bundle: Path, db: Path, source: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "frugalml",
        "monitor",
        "run",
        "--model",
        str(bundle),
        "--source",
        source,
        "--store",
        str(db),
        "--batch-size",
        "8",
        *extra,
    ]


def _restart(bundle: Path, db: Path, source: Source) -> BatchReport:
    """A fresh monitor on the store the killed one left, resuming at its stored position."""
    monitor = build_monitor(MonitorConfig(model=str(bundle), store=str(db)))
    try:
        return run(monitor, source, batch_size=8)
    finally:
        monitor.engine.dispose()


def _counts(db: Path) -> tuple[int, int]:
    """(events stored, events counted in the '*' 5-minute windows)."""
    engine = create_engine(store.store_url(str(db)))  # no create_all: the monitor makes them
    with engine.connect() as c:
        stored = c.scalar(select(func.count()).select_from(store.events)) or 0
        w = store.windows
        counted = c.scalar(select(func.sum(w.c.n)).where(w.c.topic == "*", w.c.size_s == 300)) or 0
    engine.dispose()
    return int(stored), int(counted)


def _kill_when_stored(process: subprocess.Popen[bytes], db: Path, at_least: int) -> int:
    """Kill -9 once `at_least` events are stored; how many the store holds after the kill."""
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            log = (db.parent / "monitor.log").read_text()[-2000:]
            pytest.fail(f"the monitor ended before it could be killed: {log}")
        assert time.monotonic() < deadline, "the monitor stored nothing in time"
        if db.exists():
            try:
                stored = _counts(db)[0]
            except Exception:  # the tables may not exist yet
                stored = 0
            if stored >= at_least:
                process.send_signal(signal.SIGKILL)
                process.wait()
                stored, counted = _counts(db)
                assert stored == counted  # the store is at a batch boundary
                return stored
        time.sleep(0.05)


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(command, env=_env(), stdout=f, stderr=subprocess.STDOUT)


def _env() -> dict[str, str]:
    src = str(Path(__file__).parents[3] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.parametrize("n", SIZES)
def test_kill_9_mid_replay_then_restart_counts_every_event_exactly_once(
    sentiment_bundle: Path, tmp_path: Path, n: int
) -> None:
    events = write_events(tmp_path / "e.jsonl", demo.stream(n))
    db = tmp_path / "m.db"
    paced = _monitor_cmd(sentiment_bundle, db, str(events), "--replay-rate", RATE)
    process = _start(paced, db.parent / "monitor.log")
    killed_at = _kill_when_stored(process, db, n // 6)
    assert killed_at < n
    finish = _restart(sentiment_bundle, db, FileSource(events))
    assert _counts(db) == (n, n)
    # resumed at the stored byte offset: only what was not committed is read again
    assert (finish.new, finish.duplicates) == (n - killed_at, 0)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(10)


@pytest.mark.parametrize("n", SIZES)
def test_redis_consumer_group_kill_9_and_redelivery_count_once(
    sentiment_bundle: Path, tmp_path: Path, redis_url: str, n: int
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    rows = demo.stream(n)
    for row in rows + rows[:50]:  # the producer sent the first 50 twice
        client.xadd("news", {"id": row["id"], "time": str(row["time"]), "text": row["text"]})
    db = tmp_path / "m.db"
    command = _monitor_cmd(sentiment_bundle, db, redis_url, "--stream", "news", "--idle-exit", "1")
    paced = [*command, "--replay-rate", RATE]
    killed_at = _kill_when_stored(_start(paced, db.parent / "monitor.log"), db, n // 5)
    assert killed_at < n
    from frugalml.apps.monitor.redis_source import RedisSource

    finish = _restart(sentiment_bundle, db, RedisSource(redis_url, "news", idle_exit_s=1))
    assert _counts(db) == (n, n)
    # redelivered: the uncommitted batch (new), any committed one not yet acknowledged and
    # the producer's 50 copies (duplicates)
    assert finish.new == n - killed_at and finish.duplicates >= 50
    pending = client.xpending("news", "frugalml-monitor")
    assert pending["pending"] == 0  # everything acknowledged once stored
