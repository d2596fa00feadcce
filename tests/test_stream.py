"""Streaming `predict --input --output`: chunked, the same rows as scoring in memory, and a
killed run resumes without scoring its finished chunks again."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import frugalml
from frugalml.bundle import Bundle
from frugalml.errors import OutputExistsError
from frugalml.stream import Scoring, csv_header, csv_rows, predict_file, ray_scoring
from tests.conftest import demo_dataset


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    run = frugalml.fit(
        demo_dataset(), out=tmp_path_factory.mktemp("s") / "run", strategies=["tfidf"], ship="none"
    )
    return run.bundle


@pytest.fixture(scope="module")
def texts() -> list[str]:
    texts = list(demo_dataset().texts)
    return [*texts, "=cmd|' /C calc'!A0", 'a "quoted",\ntext'][:250]


def write_csv(path: Path, texts: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("id", "text"), *enumerate(texts)])
    return path


class Counting:
    """A bundle that counts the texts it scores, and can stop (as a kill would) after `stop`
    chunks."""

    def __init__(self, model: Bundle, stop: int | None = None) -> None:
        self.model, self.stop, self.scored, self.calls = model, stop, 0, 0
        self.labels, self.version = model.labels, model.version

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if self.calls == self.stop:
            raise KeyboardInterrupt
        self.calls += 1
        self.scored += len(texts)
        return self.model.predict_proba(texts)


def test_a_streamed_csv_is_what_scoring_in_memory_writes(
    model: Bundle, texts: list[str], tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", texts)
    seen: list[tuple[int, int | None]] = []
    result = predict_file(
        model, source, tmp_path / "out.csv", chunk_rows=64, progress=lambda *a: seen.append(a)
    )
    assert (result.rows, result.chunks, result.reused) == (len(texts), 4, 0)
    assert [done for done, _ in seen] == [64, 128, 192, 250]
    expected = csv_header(model.labels) + csv_rows(texts, model.predict_proba(texts), model.labels)
    assert (tmp_path / "out.csv").read_bytes().decode("utf-8") == expected
    assert not (tmp_path / "out.csv.parts").exists()


def test_parquet_and_json_lines_in_and_out(model: Bundle, texts: list[str], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts}), tmp_path / "in.parquet", row_group_size=50)
    predict_file(model, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=64)
    table = pq.read_table(tmp_path / "out.parquet")
    proba = model.predict_proba(texts)
    assert table.column("text").to_pylist() == texts
    assert table.column("label").to_pylist() == [model.labels[i] for i in proba.argmax(1)]
    first = f"p_{model.labels[0]}"
    np.testing.assert_allclose(table.column(first).to_numpy(), proba[:, 0], rtol=1e-6)

    lines = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    (tmp_path / "in.jsonl").write_text(lines, encoding="utf-8")
    predict_file(model, tmp_path / "in.jsonl", tmp_path / "out.jsonl", chunk_rows=100)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == texts
    assert [r["label"] for r in records] == [r["label"] for r in model.predict(texts)]


def test_a_killed_run_resumes_without_scoring_finished_chunks(
    model: Bundle, texts: list[str], tmp_path: Path
) -> None:
    source, output = write_csv(tmp_path / "in.csv", texts), tmp_path / "out.csv"
    killed = Counting(model, stop=2)
    with pytest.raises(KeyboardInterrupt):
        predict_file(killed, source, output, chunk_rows=64)  # type: ignore[arg-type]
    assert not output.exists() and killed.scored == 128
    again = Counting(model)
    result = predict_file(again, source, output, chunk_rows=64)  # type: ignore[arg-type]
    assert (result.reused, result.chunks, again.scored) == (2, 2, len(texts) - 128)
    expected = csv_header(model.labels) + csv_rows(texts, model.predict_proba(texts), model.labels)
    assert output.read_bytes().decode("utf-8") == expected


def test_parts_of_another_job_are_refused_not_mixed_in(
    model: Bundle, texts: list[str], tmp_path: Path
) -> None:
    source, output = write_csv(tmp_path / "in.csv", texts), tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt):
        predict_file(Counting(model, stop=1), source, output, chunk_rows=64)  # type: ignore[arg-type]
    with pytest.raises(OutputExistsError, match="another job"):
        predict_file(model, source, output, chunk_rows=32)  # another chunk size
    result = predict_file(model, source, output, chunk_rows=32, force=True)
    assert result.reused == 0 and result.rows == len(texts)


def test_the_cli_streams_and_reports_an_empty_row_by_its_number(
    model: Bundle, texts: list[str], tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", [*texts[:70], "", *texts[70:80]])
    command = [sys.executable, "-m", "frugalml", "predict", str(model.path)]
    done = subprocess.run(
        [
            *command,
            "--input",
            str(source),
            "--output",
            str(tmp_path / "o.csv"),
            "--chunk-rows",
            "50",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "data row 71 is empty" in done.stderr
    # The first chunk was finished before the bad row: fixing the file is another job.
    assert (tmp_path / "o.csv.parts" / "part-000000.csv").exists()


class Deferred:
    """A `Scoring` whose handles are resolved only when asked for, as a remote pool's are:
    records which chunk went where and how many were in flight at once."""

    def __init__(self, model: Bundle, actors: int) -> None:
        self.model, self.actors = model, actors
        self.sent: list[tuple[int, int]] = []  # (chunk, actor)
        self.in_flight = self.most_in_flight = 0

    def scoring(self) -> Scoring:
        def submit(index: int, texts: list[str]) -> tuple[int, list[str]]:
            self.sent.append((index, index % self.actors))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            return index, texts

        def result(handle: tuple[int, list[str]]) -> np.ndarray:
            self.in_flight -= 1
            return self.model.predict_proba(handle[1])

        return Scoring(submit, result, window=2 * self.actors)


def test_chunks_go_round_robin_a_bounded_few_in_flight_written_in_order(
    model: Bundle, texts: list[str], tmp_path: Path
) -> None:
    source, output = write_csv(tmp_path / "in.csv", texts), tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt):
        predict_file(Counting(model, stop=1), source, output, chunk_rows=32)  # type: ignore[arg-type]
    pool = Deferred(model, actors=2)
    seen: list[int] = []
    result = predict_file(
        model,
        source,
        output,
        chunk_rows=32,
        scoring=pool.scoring(),
        progress=lambda done, _: seen.append(done),
    )
    assert (result.reused, result.chunks) == (1, 7)  # the killed run's chunk is not sent
    assert pool.sent == [(i, i % 2) for i in range(1, 8)]
    assert pool.most_in_flight == 4 and pool.in_flight == 0
    assert seen == [32 * i for i in range(1, 8)] + [250]
    expected = csv_header(model.labels) + csv_rows(texts, model.predict_proba(texts), model.labels)
    assert output.read_bytes().decode("utf-8") == expected


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A Ray cluster of 2 CPUs started here, on loopback."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'frugalml[ray]')")
    # Ray warns (FutureWarning) that it will stop overriding CUDA_VISIBLE_DEVICES unless told.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.mark.slow
# Ray's start-up and shutdown leave its services' /dev/null handles and Popen objects to the
# collector (ResourceWarnings raised in __del__, which pytest reports as "unraisable").
@pytest.mark.filterwarnings("ignore:unclosed file <_io.*/dev/null:ResourceWarning")
@pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ray_actors_write_what_the_streamed_path_writes(
    model: Bundle, texts: list[str], tmp_path: Path, local_ray: None
) -> None:
    source = write_csv(tmp_path / "in.csv", texts)
    predict_file(model, source, tmp_path / "here.parquet", chunk_rows=64)
    with ray_scoring(model.path, actors=2) as scoring:
        result = predict_file(
            model, source, tmp_path / "ray.parquet", chunk_rows=64, scoring=scoring
        )
    assert (result.rows, result.chunks) == (len(texts), 4)
    assert (tmp_path / "ray.parquet").read_bytes() == (tmp_path / "here.parquet").read_bytes()
