"""The monitor's sentiment model: the ladder on Financial PhraseBank 50%-agreement.

4,846 sentences, stratified 80/20 (seed 0): the ladder sees the 80% (it splits its own
validation set off it), the 20% is the test set. Rungs: TF-IDF, frozen probe, top layers
(fine-tuning MiniLM's top layers), shipped as int8 ONNX. Then the shipped bundle's throughput
on this machine's cores, batch 32. Writes benchmarks/results/monitor_model.json and keeps the
run folder (default /tmp/frugalml-monitor-model) for monitor_detect.py and monitor_e2e.py.

    nice -n 10 python benchmarks/monitor_model.py [--out DIR] [--strategies tfidf,...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import frugalml
from common import SHARED_DATA, write_result
from frugalml.data import stratified_split


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/frugalml-monitor-model"))
    parser.add_argument("--strategies", default="tfidf,frozen_probe,top_layers")
    args = parser.parse_args()
    path = SHARED_DATA / "financial_phrasebank" / "Sentences_50Agree.txt"
    notes: list[str] = []
    # 2 sentences appear twice with conflicting labels: dropped (and reported).
    data = frugalml.load_dataset(path, drop_invalid=True, notes=notes)
    print(notes)
    parts = stratified_split(data, val_frac=0.2, test_frac=0.0, seed=0)
    started = time.perf_counter()
    run = frugalml.fit(
        parts.train,
        test=parts.val,
        out=args.out,
        strategies=args.strategies.split(","),
        ship="int8",
        force=True,
    )
    fit_s = time.perf_counter() - started
    texts = list(parts.val.texts)
    bundle = frugalml.load(run.run_dir / "bundle")
    bundle.predict_proba(texts[:32])
    started = time.perf_counter()
    for i in range(0, len(texts), 32):
        bundle.predict_proba(texts[i : i + 32])
    per_s = len(texts) / (time.perf_counter() - started)
    test = bundle.manifest.metrics.test if bundle.manifest.metrics else None
    rows = {
        c.strategy: {"val": c.val.to_dict(), "test": c.test.to_dict() if c.test else None}
        for c in run.ladder.candidates
    }
    result = {
        "data": "Sentences_50Agree.txt, stratified 80/20 seed 0",
        "n_data": len(data),
        "load_notes": notes,
        "n_train": len(parts.train),
        "n_test": len(parts.val),
        "chosen": bundle.manifest.strategy,
        "precision": bundle.manifest.predictor.get("precision"),
        "test": test,
        "fit_wall_s": fit_s,
        "int8_sentences_per_s_batch32": per_s,
        "candidates": rows,
        "run_dir": str(run.run_dir),
    }
    print({k: v for k, v in result.items() if k != "test"}, test and test.get("accuracy"))
    write_result("monitor_model", result)


if __name__ == "__main__":
    main()
