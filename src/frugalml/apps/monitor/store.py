"""Where the monitor keeps events, predictions, window aggregates, alerts and its own state.

SQLAlchemy Core over SQLite (one file, WAL mode; the default) or PostgreSQL (a URL). A batch
is one transaction: its new events, their window counts, the detectors' state, the alerts and
the source's position commit together, so a crash leaves the store at a batch boundary and a
restart neither loses nor double-counts an event. The monitor is the one writer of its store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
)

from frugalml.errors import ConfigError

metadata = MetaData()

events = Table(
    "monitor_events",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("time", Float, nullable=False, index=True),
    Column("source", String(200), nullable=False, default=""),
    Column("text", Text, nullable=True),  # null with --no-store-text
    Column("label", String(200), nullable=False),
    Column("negative", Float, nullable=False),  # probability of the negative class
    Column("confidence", Float, nullable=False),
    Column("late", Boolean, nullable=False, default=False),
)
event_topics = Table(
    "monitor_event_topics",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("topic", String(200), primary_key=True, index=True),
)
windows = Table(
    "monitor_windows",
    metadata,
    Column("topic", String(200), primary_key=True),
    Column("size_s", Integer, primary_key=True),
    Column("start", Float, primary_key=True),
    Column("n", Integer, nullable=False),
    Column("negatives", Integer, nullable=False),
    Column("score_sum", Float, nullable=False),  # sum of negative probabilities
)
alerts = Table(
    "monitor_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(200), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("window_start", Float, nullable=False),
    Column("time", Float, nullable=False),
    Column("statistic", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("message", Text, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON
    UniqueConstraint("topic", "kind", "window_start", name="monitor_alert_once"),
)
state = Table(
    "monitor_state",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("value", Text, nullable=False),  # JSON
)


def store_url(store: str) -> str:
    """A SQLAlchemy URL from a URL or a plain path (SQLite)."""
    return store if "://" in store else f"sqlite:///{Path(store).resolve()}"


def open_store(store: str) -> Engine:
    """Connect and create the tables; SQLite in WAL mode with a busy timeout."""
    url = store_url(store)
    try:
        engine = create_engine(url, future=True)
    except Exception as err:  # unknown dialect or driver
        raise ConfigError(
            f"cannot open the store {url!r}: {err}; give a SQLite path or a "
            "postgresql+psycopg://user@host/db URL (pip install 'frugalml[monitor]')"
        ) from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at each checkpoint
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    elif engine.dialect.name != "postgresql":
        raise ConfigError(f"the store must be SQLite or PostgreSQL; got {engine.dialect.name}")
    metadata.create_all(engine)
    return engine


def _insert(connection: Connection, table: Table) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def known_ids(connection: Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        found.update(connection.scalars(select(events.c.id).where(events.c.id.in_(chunk))))
    return found


def add_events(
    connection: Connection, rows: list[dict[str, Any]], topics: list[dict[str, str]]
) -> None:
    if rows:
        connection.execute(_insert(connection, events).on_conflict_do_nothing(), rows)
    if topics:
        connection.execute(_insert(connection, event_topics).on_conflict_do_nothing(), topics)


def add_window_counts(connection: Connection, counts: Iterable[dict[str, Any]]) -> None:
    """Add to (topic, size_s, start) rows, creating them at zero."""
    rows = list(counts)
    if not rows:
        return
    statement = _insert(connection, windows)
    statement = statement.on_conflict_do_update(
        index_elements=["topic", "size_s", "start"],
        set_={
            "n": windows.c.n + statement.excluded.n,
            "negatives": windows.c.negatives + statement.excluded.negatives,
            "score_sum": windows.c.score_sum + statement.excluded.score_sum,
        },
    )
    connection.execute(statement, rows)


def add_alert(connection: Connection, row: dict[str, Any]) -> bool:
    """Insert unless an alert of that topic, kind and window exists; whether it was new."""
    statement = _insert(connection, alerts).on_conflict_do_nothing()
    return bool(connection.execute(statement, row).rowcount)


def get_state(connection: Connection, key: str) -> Any:
    value = connection.scalar(select(state.c.value).where(state.c.key == key))
    return None if value is None else json.loads(value)


def put_state(connection: Connection, key: str, value: Any) -> None:
    statement = _insert(connection, state).values(key=key, value=json.dumps(value))
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["key"], set_={"value": statement.excluded.value}
        )
    )


def window_row(connection: Connection, topic: str, size_s: int, start: float) -> dict[str, Any]:
    row = (
        connection.execute(
            select(windows).where(
                windows.c.topic == topic, windows.c.size_s == size_s, windows.c.start == start
            )
        )
        .mappings()
        .first()
    )
    return (
        dict(row)
        if row
        else {
            "topic": topic,
            "size_s": size_s,
            "start": start,
            "n": 0,
            "negatives": 0,
            "score_sum": 0.0,
        }
    )


def most_negative(
    connection: Connection, topic: str, start: float, end: float, limit: int = 5
) -> list[dict[str, Any]]:
    """The topic's most negative texts in [start, end): the evidence behind an alert."""
    query = (
        select(events.c.id, events.c.time, events.c.text, events.c.negative, events.c.source)
        .join(event_topics, event_topics.c.event_id == events.c.id)
        .where(event_topics.c.topic == topic, events.c.time >= start, events.c.time < end)
        .where(events.c.late.is_(False))
        .order_by(events.c.negative.desc(), events.c.id)
        .limit(limit)
    )
    return [dict(r) for r in connection.execute(query).mappings()]


def purge(connection: Connection, before: float) -> int:
    """Retention: drop events (and their topics) older than `before`; aggregates and alerts stay."""
    old = select(events.c.id).where(events.c.time < before)
    connection.execute(delete(event_topics).where(event_topics.c.event_id.in_(old)))
    return int(connection.execute(delete(events).where(events.c.time < before)).rowcount)


def counts(connection: Connection) -> dict[str, int]:
    return {
        "events": int(connection.scalar(select(func.count()).select_from(events)) or 0),
        "alerts": int(connection.scalar(select(func.count()).select_from(alerts)) or 0),
    }
