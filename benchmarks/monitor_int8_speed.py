"""Throughput of a shipped sentiment bundle at batch 32 on this machine's cores (issue 13's
"int8 model ≥ 300 sentences/s on 2 cores"), on Financial PhraseBank 50Agree sentences.

    python benchmarks/monitor_int8_speed.py BUNDLE   # e.g. the run folder's bundle/ from
                                                      # benchmarks/monitor_model.py
Run it on a quiet machine: it reports an absolute rate. Writes
benchmarks/results/monitor_int8_speed.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import frugalml

SHARED = Path(os.environ.get("FRUGALML_SHARED_DATA", "../shared/data"))


def main() -> None:
    bundle = frugalml.load(sys.argv[1])
    source = SHARED / "financial_phrasebank" / "Sentences_50Agree.txt"
    lines = source.read_text(encoding="latin-1").splitlines()
    texts = [line.rsplit("@", 1)[0] for line in lines][:2000]
    bundle.predict_proba(texts[:64])  # warm-up
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), 32):
        bundle.predict_proba(texts[i : i + 32])
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    result = {
        "bundle": str(sys.argv[1]),
        "strategy": bundle.manifest.strategy,
        "precision": bundle.manifest.predictor.get("precision"),
        "cores": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "texts": len(texts),
        "batch": 32,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "sentences_per_s": round(len(texts) / wall, 1),
        "cpu_ms_per_text": round(1000 * cpu / len(texts), 2),
    }
    print(json.dumps(result, indent=1))
    out = Path(__file__).parent / "results" / "monitor_int8_speed.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
