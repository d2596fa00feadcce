"""Scoring a file too large for memory: `frugalml predict BUNDLE --input BIG --output OUT`.

The input is read in chunks of `chunk_rows` texts (CSV/TSV, JSON lines, Parquet or one text
per line), each chunk scored and written as its own part file beside the output
(`OUT.parts/part-000012.csv`, written aside and renamed, so a kill never leaves half a
part). When every chunk is done the parts are joined into OUT and removed. Memory holds
one chunk at a time (a few with Ray), whatever the file's size. A killed run started again
with the same command skips the chunks whose parts exist: they are read, not scored again.

With `--ray`, the chunks are read and written here as above, and scored on a Ray cluster by
a pool of actors, each of which loads the bundle from its path (no model is pickled): the
same parts, in the same order, so the same output and the same resume.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.bundle import Bundle, load
from frugalml.data.load import Table, require_regular_file, sniff_encoding
from frugalml.data.validate import prediction_column
from frugalml.errors import (
    BundleError,
    DataError,
    FrugalError,
    OutputError,
    OutputExistsError,
    require_extra,
)

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
CHUNK_ROWS = 10_000
Progress = Callable[[int, int | None], None]  # (texts done, total texts if known)


@dataclass(frozen=True)
class StreamResult:
    rows: int  # texts in the output
    chunks: int  # chunks scored by this run
    reused: int  # chunks a killed run had finished, not scored again


@dataclass(frozen=True)
class Scoring:
    """How chunks are scored: `submit(index, texts)` answers at once with a handle,
    `result(handle)` waits for its probabilities; at most `window` chunks are in flight
    (their texts held here until written)."""

    submit: Callable[[int, list[str]], Any]
    result: Callable[[Any], np.ndarray]
    window: int = 1


def output_format(output: Path) -> str:
    """`csv` or `parquet` by the output's suffix; JSON lines for any other."""
    return FORMATS.get(output.suffix.lower(), "jsonl")


def predict_file(
    model: Bundle,
    source: Path,
    output: Path,
    *,
    text_col: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    force: bool = False,
    progress: Progress | None = None,
    scoring: Scoring | None = None,
) -> StreamResult:
    """Score every text of `source` into `output`, a chunk at a time; resume a killed run.
    `scoring` scores elsewhere (`ray_scoring`); by default `model` scores here."""
    fmt = output_format(output)
    if output.exists() and not force:
        raise OutputExistsError(f"{output} already exists", ["choose another --output or --force"])
    reader = ChunkReader.open(source, text_col, chunk_rows)
    parts = output.with_name(output.name + ".parts")
    job = {
        "input": str(source.resolve()),
        "size": source.stat().st_size,
        "mtime_ns": source.stat().st_mtime_ns,
        "bundle": model.version,
        "column": reader.column,
        "chunk_rows": chunk_rows,
        "format": fmt,
    }
    _open_parts(parts, job, force)
    done = _finished_parts(parts, fmt)
    scoring = scoring or Scoring(lambda _, texts: model.predict_proba(texts), lambda p: p)
    notify = progress or (lambda rows, total: None)
    in_flight: deque[tuple[int, list[str], Any]] = deque()
    rows = chunks = 0

    def write(limit: int) -> None:
        nonlocal rows
        while len(in_flight) > limit:
            index, texts, handle = in_flight.popleft()
            proba = scoring.result(handle)
            _write_part(parts / _part_name(index, fmt), fmt, texts, proba, model.labels)
            rows += len(texts)
            notify(rows, reader.total)

    for texts in reader:
        if chunks < done:
            rows += len(texts)
            notify(rows, reader.total)
        else:
            in_flight.append((chunks, texts, scoring.submit(chunks, texts)))
            write(scoring.window - 1)
        chunks += 1
    write(0)
    scored = chunks - done
    _join(parts, output, fmt, model.labels, chunks)
    shutil.rmtree(parts)
    return StreamResult(rows, scored, done)


def _open_parts(parts: Path, job: dict[str, Any], force: bool) -> None:
    """The parts folder of this job: kept if a killed run of the same job left it."""
    record = parts / "job.json"
    if parts.exists() and force:
        shutil.rmtree(parts)
    if parts.exists():
        previous = json.loads(record.read_text()) if record.exists() else None
        if previous != job:
            raise OutputExistsError(
                f"{parts} holds parts of another job (different input, bundle or chunk size)",
                ["pass --force to start afresh, or choose another --output"],
            )
        return
    try:
        parts.mkdir()
    except OSError as error:
        raise OutputError(
            f"cannot write beside {parts.parent}: {error.strerror or error}",
            ["choose an --output in a folder you can write to"],
        ) from None
    record.write_text(json.dumps(job, indent=2))


def _part_name(index: int, fmt: str) -> str:
    return f"part-{index:06d}.{fmt}"


def _finished_parts(parts: Path, fmt: str) -> int:
    """How many chunks, from the first, have their part written."""
    done = 0
    while (parts / _part_name(done, fmt)).exists():
        done += 1
    return done


def _write_part(
    path: Path, fmt: str, texts: Sequence[str], proba: np.ndarray, labels: tuple[str, ...]
) -> None:
    tmp = path.with_suffix(".tmp")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        best = proba.argmax(1)
        columns = {"text": pa.array(texts, pa.string()), "label": [labels[i] for i in best]}
        columns |= {f"p_{label}": proba[:, j].astype(np.float32) for j, label in enumerate(labels)}
        pq.write_table(pa.table(columns), tmp)
    elif fmt == "csv":
        tmp.write_text(csv_rows(texts, proba, labels), encoding="utf-8", newline="")
    else:
        tmp.write_text(jsonl_rows(texts, proba, labels), encoding="utf-8", newline="")
    tmp.replace(path)


def _join(parts: Path, output: Path, fmt: str, labels: tuple[str, ...], n: int) -> None:
    """The parts, in order, as one file (written aside, then renamed)."""
    tmp = output.with_name(output.name + ".tmp")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        writer = None
        for index in range(n):
            table = pq.read_table(parts / _part_name(index, fmt))
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is None:
            raise DataError("nothing to predict: the input has no texts")
        writer.close()
    else:
        with tmp.open("wb") as out:
            if fmt == "csv":
                out.write(csv_header(labels).encode("utf-8"))
            for index in range(n):
                with (parts / _part_name(index, fmt)).open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
    tmp.replace(output)


# -- scoring on Ray -------------------------------------------------------------------------
class _Scorer:
    """A Ray actor: loads the bundle from its path once, then scores the chunks it is sent."""

    def __init__(self, bundle: str) -> None:
        self.model = load(bundle)

    def score(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(texts)


@contextmanager
def ray_scoring(bundle: Path, address: str | None = None, actors: int = 2) -> Iterator[Scoring]:
    """`Scoring` by `actors` Ray actors (one CPU each) on the cluster at `address` (None:
    `RAY_ADDRESS`, else a local cluster started here and stopped after). Chunk i goes to
    actor i mod n: chunks are the same size, so the actors stay evenly loaded, and two
    chunks per actor in flight keep each busy while the last result is written."""
    require_extra("scoring on Ray", "ray", "ray")
    import ray

    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise FrugalError(
                f"cannot reach a Ray cluster at {address}: {error}",
                ["start one with `ray start --head`, or pass `--ray local` to start one here"],
            ) from None
    path = str(Path(bundle).resolve())
    remote: Any = ray.remote(num_cpus=1)(_Scorer)  # typed as the class, used as a handle
    pool: list[Any] = [remote.remote(path) for _ in range(actors)]

    def result(handle: Any) -> np.ndarray:
        try:
            return np.asarray(ray.get(handle))
        except ray.exceptions.RayActorError as error:
            raise BundleError(
                f"a Ray actor could not load the bundle at {path}: {error}",
                ["every Ray node must reach the bundle at this path (a shared folder)"],
            ) from None

    try:
        yield Scoring(lambda i, texts: pool[i % actors].score.remote(texts), result, 2 * actors)
    finally:
        for actor in pool:
            ray.kill(actor)
        if started:
            ray.shutdown()


# -- reading ---------------------------------------------------------------------------------
@dataclass
class ChunkReader:
    """The texts of a file in chunks of exactly `chunk_rows` (the last one shorter), so a
    resumed run cuts the same chunks. `total` is known up front for Parquet only."""

    batches: Iterator[list[str]]
    column: str
    chunk_rows: int
    source: str
    total: int | None = None
    _first_row: int = 0

    @classmethod
    def open(cls, source: Path, text_col: str | None, chunk_rows: int) -> ChunkReader:
        require_regular_file(source)
        with source.open("rb") as handle:
            head = handle.read(1 << 16)
        suffix = source.suffix.lower()
        if head[:4] == b"PAR1":
            return _parquet(source, text_col, chunk_rows)
        encoding, _ = sniff_encoding(source, head)
        if suffix == ".txt":
            return cls(_lines(source, encoding), "line", chunk_rows, str(source))
        if suffix in (".jsonl", ".ndjson"):
            return _frames(source, _json_frames(source, encoding, chunk_rows), text_col, chunk_rows)
        if suffix in (".csv", ".tsv", ".tab"):
            return _frames(source, _csv_frames(source, encoding, chunk_rows), text_col, chunk_rows)
        raise DataError(
            f"{source}: cannot stream a '{suffix}' file",
            ["stream .csv, .tsv, .jsonl, .parquet or .txt (one text per line)"],
        )

    def __iter__(self) -> Iterator[list[str]]:
        """Chunks of exactly `chunk_rows`; an empty text is an error naming its row."""
        buffer: list[str] = []
        row = 0
        for batch in self.batches:
            for text in batch:
                row += 1
                if not text:
                    raise DataError(
                        f"{self.source}: the text of data row {row} is empty",
                        ["remove empty rows or fill them in; finished chunks are kept"],
                    )
            buffer += batch
            while len(buffer) >= self.chunk_rows:
                yield buffer[: self.chunk_rows]
                buffer = buffer[self.chunk_rows :]
        if buffer:
            yield buffer


def _strings(values: Sequence[Any]) -> list[str]:
    """As `texts_for_prediction` reads a column: missing is '', numbers as written, stripped."""
    return [
        "" if v is None or (isinstance(v, float) and v != v) else str(v).strip() for v in values
    ]


def _frames(source: Path, frames: Iterator[Any], text_col: str | None, rows: int) -> ChunkReader:
    first = next(frames, None)
    if first is None:
        raise DataError(f"{source}: the file has no rows")
    column = prediction_column(Table(first, str(source)), text_col)

    def batches() -> Iterator[list[str]]:
        yield _strings(first[column].tolist())
        for frame in frames:
            yield _strings(frame[column].tolist())

    return ChunkReader(batches(), column, rows, str(source))


def _csv_frames(source: Path, encoding: str, rows: int) -> Iterator[Any]:
    import pandas as pd

    sep = "," if source.suffix.lower() == ".csv" else "\t"
    with source.open(encoding=encoding, newline="") as handle:
        yield from pd.read_csv(
            handle, sep=sep, dtype=object, keep_default_na=False, na_values=[""], chunksize=rows
        )


def _json_frames(source: Path, encoding: str, rows: int) -> Iterator[Any]:
    import pandas as pd

    records: list[Any] = []
    with source.open(encoding=encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"{source}: line {number} is not JSON ({error.msg})") from None
            if len(records) == rows:
                yield pd.DataFrame.from_records(records)
                records = []
    if records:
        yield pd.DataFrame.from_records(records)


def _lines(source: Path, encoding: str) -> Iterator[list[str]]:
    batch: list[str] = []
    with source.open(encoding=encoding) as handle:
        for line in handle:
            if line.strip():
                batch.append(line.strip())
            if len(batch) == 4096:
                yield batch
                batch = []
    if batch:
        yield batch


def _parquet(source: Path, text_col: str | None, rows: int) -> ChunkReader:
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(source)
    sample = next(handle.iter_batches(batch_size=1000), None)
    if sample is None:
        raise DataError(f"{source}: the file has no rows")
    column = prediction_column(Table(sample.to_pandas(), str(source)), text_col)

    def batches() -> Iterator[list[str]]:
        for batch in handle.iter_batches(batch_size=rows, columns=[column]):
            yield _strings(batch.column(0).to_pylist())

    return ChunkReader(batches(), column, rows, str(source), handle.metadata.num_rows)


# -- writing (the in-memory `predict` writes the same rows) -----------------------------------
def csv_header(labels: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(
        ["text", "label", *(cell(f"p_{label}") for label in labels)]
    )
    return buffer.getvalue()


def csv_rows(texts: Sequence[str], proba: np.ndarray, labels: Sequence[str]) -> str:
    """RFC 4180 rows (with "\\n" alone, csv leaves a text's lone "\\r" unquoted: a row break)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for text, row in zip(texts, proba, strict=True):
        writer.writerow(
            [cell(text), cell(labels[int(row.argmax())]), *(f"{p:.6f}" for p in row.tolist())]
        )
    return buffer.getvalue()


def jsonl_rows(texts: Sequence[str], proba: np.ndarray, labels: Sequence[str]) -> str:
    lines = []
    for text, row in zip(texts, proba, strict=True):
        record = {
            "text": text,
            "label": labels[int(row.argmax())],
            "probabilities": {label: float(p) for label, p in zip(labels, row, strict=True)},
        }
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines)


# A cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ' (OWASP's advice) before a cell that
    would otherwise run as a formula."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text
