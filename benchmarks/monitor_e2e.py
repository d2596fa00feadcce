"""End-to-end throughput of the monitor against its model alone, on the same cores.

Financial PhraseBank 50%-agreement texts (all 4,842, or the first `--limit`; `--repeat`
times with new ids) become
events two seconds apart, each naming one of 10 entities (two topics per event with the '*'
topic). The pipeline reads them from a JSONL file, scores them with the sentiment bundle
(micro-batches of 64), writes events, window counts, detector state and alerts to SQLite
(and PostgreSQL with `--postgres`: a server started on 127.0.0.1), and runs the detectors.
The model alone is the same bundle's `predict_proba` over the same texts in batches of 64,
measured before and after the pipelines. Figures: events/s, CPU ms per event (process time,
all threads) and the pipeline's share of the model's throughput (target >= 70%).

    nice -n 10 python benchmarks/monitor_e2e.py --model RUN_OR_BUNDLE [--postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import SHARED_DATA, write_result

BATCH = 64
ENTITIES = [f"Company {i}" for i in range(10)]


def events(texts: list[str], repeat: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for r in range(repeat):
        for i, text in enumerate(texts):
            n = r * len(texts) + i
            entity = ENTITIES[int(rng.integers(len(ENTITIES)))]
            rows.append({"id": f"e{n}", "time": 1_735_689_600 + 2 * n, "text": text,
                         "entities": [entity]})  # fmt: skip
    return rows


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def figures(n: int, start: tuple[float, float], **extra: Any) -> dict[str, Any]:
    wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
    return {
        "events": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "per_s": n / wall,
        "cpu_ms_per_event": 1000 * cpu / n,
        "load_avg_1m": os.getloadavg()[0],
        **extra,
    }


def model_alone(bundle: Any, texts: list[str]) -> dict[str, Any]:
    start = clock()
    for i in range(0, len(texts), BATCH):
        bundle.predict_proba(texts[i : i + BATCH])
    return figures(len(texts), start)


def pipeline(bundle: Any, path: Path, store_url: str) -> dict[str, Any]:
    from frugalml.apps.monitor.events import FileSource
    from frugalml.apps.monitor.pipeline import Monitor, run
    from frugalml.apps.monitor.scoring import Scorer
    from frugalml.apps.monitor.store import open_store

    monitor = Monitor(open_store(store_url), Scorer(bundle))
    start = clock()
    total = run(monitor, FileSource(path), BATCH)
    result = figures(total.new, start, alerts=len(total.alerts), duplicates=total.duplicates)
    monitor.engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=Path("/tmp/frugalml-monitor-model"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="use the first N texts")
    parser.add_argument("--postgres", action="store_true", help="also PostgreSQL on 127.0.0.1")
    args = parser.parse_args()
    import frugalml
    from frugalml.apps.monitor.config import resolve_bundle

    path = SHARED_DATA / "financial_phrasebank" / "Sentences_50Agree.txt"
    texts = list(frugalml.load_dataset(path, drop_invalid=True).texts)[: args.limit]
    bundle_dir = resolve_bundle(args.model)
    bundle = frugalml.load(bundle_dir)
    rows = events(texts, args.repeat)
    folder = Path(tempfile.mkdtemp(prefix="monitor-e2e-"))
    source = folder / "events.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    every = [r["text"] for r in rows]
    bundle.predict_proba(every[:BATCH])  # warm
    result: dict[str, Any] = {
        "model": {
            "bundle": str(bundle_dir),
            "strategy": bundle.manifest.strategy,
            "precision": bundle.manifest.predictor.get("precision"),
        },
        "cores": os.cpu_count(),
        "batch": BATCH,
        "topics_per_event": 2,
        "model_before": model_alone(bundle, every),
    }
    print(json.dumps(result), flush=True)
    result["sqlite"] = pipeline(bundle, source, str(folder / "monitor.db"))
    print(json.dumps(result["sqlite"]), flush=True)
    if args.postgres:
        sys.path.insert(0, str(Path(__file__).parents[1]))
        from tests.apps.monitor import postgres

        reason = postgres.absent()
        if reason:
            result["postgresql"] = {"skipped": reason}
        else:
            with postgres.running_postgres() as url:
                result["postgresql"] = pipeline(bundle, source, url)
        print(json.dumps(result["postgresql"]), flush=True)
    result["model_after"] = model_alone(bundle, every)
    model_per_s = (result["model_before"]["per_s"] + result["model_after"]["per_s"]) / 2
    model_cpu = (
        result["model_before"]["cpu_ms_per_event"] + result["model_after"]["cpu_ms_per_event"]
    ) / 2
    for name in ("sqlite", "postgresql"):
        run = result.get(name)
        if run and "per_s" in run:
            run["share_of_model_per_s"] = run["per_s"] / model_per_s
            run["model_cpu_share"] = model_cpu / run["cpu_ms_per_event"]
    write_result("monitor_e2e", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
