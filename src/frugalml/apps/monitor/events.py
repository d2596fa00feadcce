"""Events and where they come from: a JSONL/CSV file (replayed, or followed as it grows) and stdin.

An event is `{id, time, text, source?, entities?}`. A record that is not one (no id, no text,
an unparseable time) is reported with where it was and why, never silently dropped, and the
stream goes on. A file source's position is the byte offset after the last line it handed
out; the pipeline stores it in the same transaction as the events, so a restart (even after
kill -9) resumes exactly where the last committed batch ended.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from frugalml.errors import ConfigError

MAX_ID = 200


@dataclass(frozen=True)
class Event:
    id: str
    time: float  # seconds since the epoch, UTC
    text: str
    source: str = ""
    entities: tuple[str, ...] = ()


class EventError(ValueError):
    """A record that is not an event; the message says what is wrong."""


@dataclass
class Raw:
    """A record as read, with where it came from (file and line, stream id) for reports."""

    data: dict[str, Any] | None
    where: str
    problem: str = ""


@dataclass
class RawBatch:
    records: list[Raw]
    position: str | None = None  # where to resume after this batch, once it is committed
    ack: list[str] = field(default_factory=list)  # broker message ids to acknowledge


class Source(Protocol):
    """Hands out batches of records; `position` resumes it (None: from the start)."""

    name: str

    def batches(self, position: str | None, size: int) -> Iterator[RawBatch]: ...

    def committed(self, batch: RawBatch) -> None: ...


def parse_time(value: Any) -> float:
    """ISO 8601 (a naive time is UTC) or seconds since the epoch."""
    if isinstance(value, bool):
        raise EventError(f"'time' must be ISO 8601 or epoch seconds; got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise EventError(
                f"'time' {value!r} is not ISO 8601 (e.g. 2024-05-01T09:30:00Z) or epoch seconds"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    raise EventError("'time' is missing; every event needs one (ISO 8601 or epoch seconds)")


def parse_event(data: dict[str, Any]) -> Event:
    """An `Event` from a decoded record; `EventError` saying every problem otherwise."""
    problems = []
    ident = data.get("id")
    if ident is None or str(ident).strip() == "":
        problems.append("'id' is missing")
    elif len(str(ident)) > MAX_ID:
        problems.append(f"'id' is longer than {MAX_ID} characters")
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append("'text' is missing or empty")
    moment = 0.0
    try:
        moment = parse_time(data.get("time"))
    except EventError as err:
        problems.append(str(err))
    if problems:
        raise EventError("; ".join(problems))
    entities = data.get("entities") or ()
    if isinstance(entities, str):
        entities = [e for e in entities.split("|") if e.strip()]
    return Event(
        str(ident),
        moment,
        str(text),
        str(data.get("source") or ""),
        tuple(str(e).strip() for e in entities),
    )


def decode_line(line: str, where: str, header: list[str] | None) -> Raw:
    """One JSONL line (header None) or CSV row."""
    if header is None:
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            return Raw(None, where, f"not JSON ({err.msg})")
        if not isinstance(data, dict):
            return Raw(None, where, "not a JSON object")
        return Raw(data, where)
    row = next(csv.reader([line]), [])
    if len(row) != len(header):
        return Raw(None, where, f"{len(row)} fields, the header has {len(header)}")
    return Raw(dict(zip(header, row, strict=True)), where)


class FileSource:
    """A JSONL or CSV file (CSV: a header row, one event per line), replayed from its stored
    position; with `follow`, it waits for lines appended later until `stop()` or `idle_exit_s`."""

    def __init__(
        self,
        path: Path,
        *,
        follow: bool = False,
        idle_exit_s: float | None = None,
        poll_s: float = 0.2,
    ) -> None:
        if not path.is_file():
            raise ConfigError(f"the event file {path} does not exist")
        self.path, self.follow = path, follow
        self.idle_exit_s, self.poll_s = idle_exit_s, poll_s
        self.name = f"file:{path.resolve()}"
        self.csv = path.suffix.lower() in (".csv", ".tsv")
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def committed(self, batch: RawBatch) -> None:
        pass

    def batches(self, position: str | None, size: int) -> Iterator[RawBatch]:
        with self.path.open("rb") as f:
            header, offset, line_no = self._start(f, position)
            records: list[Raw] = []
            idle_since = time.monotonic()
            while not self._stopped:
                line = f.readline()
                complete = line.endswith(b"\n") or (line and not self.follow)
                if complete:
                    offset += len(line)
                    line_no += 1
                    text = line.decode("utf-8", errors="replace").strip()
                    if text:
                        records.append(decode_line(text, f"{self.path.name}:{line_no}", header))
                    if len(records) < size:
                        continue
                else:
                    f.seek(offset)  # a partial last line is read again once it is complete
                if records:
                    yield RawBatch(records, json.dumps([offset, line_no]))
                    records = []
                    idle_since = time.monotonic()
                    continue
                if not self.follow or self._idle(idle_since):
                    return
                time.sleep(self.poll_s)

    def _idle(self, since: float) -> bool:
        return self.idle_exit_s is not None and time.monotonic() - since > self.idle_exit_s

    def _start(self, f: IO[bytes], position: str | None) -> tuple[list[str] | None, int, int]:
        header = None
        if self.csv:
            first = f.readline().decode("utf-8", errors="replace")
            header = [h.strip() for h in next(csv.reader([first]), [])]
            missing = {"id", "time", "text"} - set(header)
            if missing:
                raise ConfigError(
                    f"{self.path} has no column {', '.join(sorted(missing))}; a CSV of events "
                    "needs a header with id, time and text (source and entities optional)"
                )
        offset, line_no = f.tell(), 1 if self.csv else 0
        if position is not None:
            offset, line_no = json.loads(position)
            f.seek(offset)
        return header, offset, line_no


class StdinSource:
    """JSON lines from standard input; nothing to resume (a pipe cannot be re-read)."""

    name = "stdin"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdin

    def committed(self, batch: RawBatch) -> None:
        pass

    def batches(self, position: str | None, size: int) -> Iterator[RawBatch]:
        records: list[Raw] = []
        for line_no, line in enumerate(self.stream, 1):
            if line.strip():
                records.append(decode_line(line.strip(), f"stdin:{line_no}", None))
            if len(records) >= size:
                yield RawBatch(records)
                records = []
        if records:
            yield RawBatch(records)
