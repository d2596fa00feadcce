"""Does the TF-IDF rung's ONNX export predict exactly what scikit-learn does, and how fast?

For each dataset: `frugalml.fit(..., strategies=["tfidf"])` ships the ONNX export as
RUN_DIR/bundle and keeps the scikit-learn model in RUN_DIR/candidates/tfidf. On the test split
(first 1,000 texts), side by side in one process: the largest probability difference, label
agreement, and predict throughput at batch 1 (200 calls) and 32 (best of 3 passes).
Writes benchmarks/results/tfidf_onnx.json.

    python benchmarks/tfidf_onnx.py [--datasets banking77,phrasebank]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import frugalml
from common import DATASETS, machine, write_result

TEXTS = 1000
BATCH1_CALLS = 200


def throughput(bundle: Any, texts: list[str], batch: int) -> float:
    n = BATCH1_CALLS if batch == 1 else len(texts)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for start in range(0, n, batch):
            bundle.predict_proba(texts[start : start + batch])
        best = min(best, time.perf_counter() - started)
    return n / best


def run(name: str, workdir: Path) -> dict[str, Any]:
    splits = DATASETS[name]()
    fitted = frugalml.fit(splits.train, out=workdir / name, strategies=["tfidf"], metric="accuracy")
    native = frugalml.load(fitted.run_dir / "candidates" / "tfidf")
    exported = frugalml.load(fitted.run_dir / "bundle")
    if exported.manifest.predictor.get("format") != "onnx":
        raise SystemExit(f"{name}: fit did not ship the ONNX export: {exported.manifest}")
    texts = list(splits.test.texts)[:TEXTS]
    p_native, p_onnx = native.predict_proba(texts), exported.predict_proba(texts)
    row: dict[str, Any] = {
        "texts": len(texts),
        "max_abs_probability_diff": float(np.abs(p_native - p_onnx).max()),
        "same_labels": float((p_native.argmax(1) == p_onnx.argmax(1)).mean()),
    }
    for label, bundle in (("sklearn", native), ("onnx", exported)):
        for batch in (1, 32):
            row[f"{label}_batch{batch}_texts_per_s"] = throughput(bundle, texts, batch)
    for batch in (1, 32):
        row[f"speedup_batch{batch}"] = (
            row[f"onnx_batch{batch}_texts_per_s"] / row[f"sklearn_batch{batch}_texts_per_s"]
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="banking77,phrasebank")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "rows": {}}
    with tempfile.TemporaryDirectory(prefix="frugalml-tfidf-onnx-") as work:
        for name in args.datasets.split(","):
            result["rows"][name] = row = run(name, Path(work))
            print(name, {k: round(v, 7) for k, v in row.items()}, flush=True)
    print(f"wrote {write_result('tfidf_onnx', result)}")


if __name__ == "__main__":
    main()
