"""Is the shipped model small and fast, and did it keep its quality?

One invocation per dataset (Banking77 train → test; Financial PhraseBank AllAgree 80/20,
seed 0): fine-tune MiniLM with the `top_layers` rung (the rung the ladder picks on
PhraseBank), run `frugalml.ship.compress` up to the distilled student (every step's bundle kept,
rejected ones too), then measure side by side on the test split:
  torch eager fp32 (PyTorch's default attention), ONNX fp32 (fused), ONNX int8,
  distilled student int8:
test accuracy and macro-F1, model file size, throughput at batch 1 and 32 (texts in file
order), median latency at batch 1; fp32 ONNX parity with PyTorch on 1,000 test texts; and
load + first prediction of the int8 bundle in a fresh process (wall time and RSS).
Writes benchmarks/results/compress.json.

    python benchmarks/compress.py [--datasets phrasebank,banking77]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import frugalml
from common import DATASETS, machine, write_result
from frugalml.data.split import Splits, split_off_validation
from frugalml.metrics import score
from frugalml.ship.compress import compress

LATENCY_CALLS = 200
THROUGHPUT_TEXTS = 1024


def run(name: str, splits: Splits, workdir: Path) -> dict[str, Any]:
    fitted = frugalml.fit(
        splits.train,
        test=splits.test,
        out=workdir / f"{name}-fit",
        strategies=["top_layers"],
        metric="accuracy",
        ship="none",
    )
    parts = split_off_validation(splits.train, val_frac=0.15, seed=0)  # as `fit` split it
    source = fitted.run_dir / "candidates" / "top_layers"
    steps_dir = workdir / f"{name}-steps"
    started = time.perf_counter()
    chain = compress(
        source,
        parts.train,
        parts.val,
        workdir / f"{name}-shipped",
        to="distilled",
        keep_steps=steps_dir,
    )
    compress_wall_s = time.perf_counter() - started
    variants = {
        "torch_eager_fp32": source,
        "onnx_fp32": steps_dir / "onnx",
        "onnx_int8": steps_dir / "int8",
        "distilled_int8": steps_dir / "distilled",
    }
    texts = list(splits.test.texts)
    rows = {label: _measure(folder, splits, texts) for label, folder in variants.items()}
    base = rows["torch_eager_fp32"]
    for row in rows.values():
        row["speedup_batch1"] = row["throughput_batch1"] / base["throughput_batch1"]
        row["speedup_batch32"] = row["throughput_batch32"] / base["throughput_batch32"]
        row["accuracy_drop_points"] = 100 * (base["accuracy"] - row["accuracy"])
    rows["onnx_int8"]["size_vs_onnx_fp32"] = (
        rows["onnx_int8"]["size_mb"] / rows["onnx_fp32"]["size_mb"]
    )
    return {
        "variants": rows,
        "parity_1000": _parity(source, steps_dir / "onnx", texts[:1000]),
        "gate": chain.to_dict(),
        "compress_wall_s": compress_wall_s,
        "fresh_process_int8": _fresh_load(steps_dir / "int8"),
    }


def _measure(folder: Path, splits: Splits, texts: list[str]) -> dict[str, Any]:
    bundle = frugalml.load(folder)
    predicted = bundle.predict_proba(texts).argmax(1)
    quality = score(splits.test.y, predicted, splits.train.labels)
    bundle.predict_proba(texts[:32])  # warm-up
    latencies = []
    for i in range(LATENCY_CALLS):
        start = time.perf_counter()
        bundle.predict_proba([texts[i % len(texts)]])
        latencies.append(time.perf_counter() - start)
    batch = [texts[i % len(texts)] for i in range(THROUGHPUT_TEXTS)]  # file order
    start = time.perf_counter()
    for i in range(0, len(batch), 32):
        bundle.predict_proba(batch[i : i + 32])
    elapsed = time.perf_counter() - start
    files = [p for p in (folder / "model").rglob("*") if p.is_file()]
    return {
        "accuracy": quality.accuracy,
        "macro_f1": quality.macro_f1,
        "size_mb": sum(p.stat().st_size for p in files) / 1e6,
        "latency_p50_ms": float(np.median(latencies) * 1000),
        "throughput_batch1": LATENCY_CALLS / sum(latencies),
        "throughput_batch32": len(batch) / elapsed,
    }


def _parity(source: Path, onnx: Path, texts: list[str]) -> dict[str, Any]:
    reference = frugalml.load(source).predictor.logits(texts)
    got = frugalml.load(onnx).predictor.logits(texts)
    return {
        "texts": len(texts),
        "max_abs_logit_diff": float(np.abs(got - reference).max()),
        "identical_labels": bool((got.argmax(1) == reference.argmax(1)).all()),
    }


def _fresh_load(folder: Path) -> dict[str, Any]:
    """Interpreter start to first answer, in a new process, as a serving worker would."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child started by a
    # big benchmark process would report the parent's peak.
    script = (
        "import time, sys, json\n"
        "t0 = time.perf_counter()\n"
        "import frugalml\n"
        f"b = frugalml.load({str(folder)!r})\n"
        "b.predict(['Where is my card?'])\n"
        "t = time.perf_counter() - t0\n"
        "status = open('/proc/self/status').read().split('\\n')\n"
        "kb = {l.split(':')[0]: int(l.split()[1]) for l in status if l.startswith('Vm')}\n"
        "print(json.dumps({'load_and_first_prediction_s': t, 'peak_rss_mb': kb['VmHWM'] / 1024,"
        " 'rss_mb': kb['VmRSS'] / 1024, 'torch_imported': 'torch' in sys.modules}))\n"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr)
    return {**json.loads(done.stdout), "process_wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="phrasebank,banking77")
    args = parser.parse_args()
    os.environ["FRUGALML_CACHE"] = tempfile.mkdtemp(prefix="frugalml-bench-cache-")
    workdir = Path(tempfile.mkdtemp(prefix="frugalml-compress-"))
    rows: dict[str, Any] = {}
    for name in args.datasets.split(","):
        rows[name] = run(name, DATASETS[name](), workdir)
        for label, row in rows[name]["variants"].items():
            print(
                f"{name:10s} {label:17s} acc {row['accuracy']:.3f} F1 {row['macro_f1']:.3f} "
                f"{row['size_mb']:6.1f} MB  b1 {row['throughput_batch1']:6.1f}/s "
                f"({row['speedup_batch1']:.2f}x)  b32 {row['throughput_batch32']:6.1f}/s "
                f"({row['speedup_batch32']:.2f}x)  p50 {row['latency_p50_ms']:.1f} ms",
                flush=True,
            )
        print(f"{name:10s} parity {rows[name]['parity_1000']}", flush=True)
        print(f"{name:10s} fresh int8 {rows[name]['fresh_process_int8']}", flush=True)
        path = write_result("compress", {"machine": machine(), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
