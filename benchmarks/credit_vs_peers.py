"""The credit ladder's choice vs the models a risk analyst would otherwise fit, same folds.

credit_data (modeldata, 4,454 applicants): 5-fold stratified CV, seed 0. Each fold's training
part is split 85/15 into the ladder's train and validation; peers train on the whole part.
Peers: scikit-learn logistic regression (impute, one-hot, standardize), LightGBM with
defaults, an optbinning scorecard (BinningProcess + logistic regression), and an explainable
boosting machine (interpret). Also: lending_club (the ladder vs LR), and loans_full_schema
(tabular alone vs tabular + employment-title text, with the leakage warnings printed).

    nice -n 10 python benchmarks/credit_vs_peers.py [--skip-ebm] [--folds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from frugalml.api import fit
from frugalml.apps.credit import evaluate
from frugalml.apps.credit.data import load_demo
from frugalml.data.tabular import to_tabular

OUT = Path(__file__).parent / "results" / "credit_vs_peers.json"


def cpu() -> float:
    return sum(os.times()[:4])


def scores(y: np.ndarray, p: np.ndarray, cpu_s: float) -> dict[str, Any]:
    """Test-fold figures; `_p` (the fold's P(bad), dropped before saving) feeds the pooled ECE."""
    d = evaluate.discrimination(y, p, ("good", "bad"))
    return {"auc": d["auc"], "ks": d["ks"], "brier": d["brier"], "ece": d["ece"],
            "cpu_s": cpu_s, "_p": p}  # fmt: skip


def ece_floor(p: np.ndarray, sims: int = 200) -> dict[str, float]:
    """ECE's own noise at this n: outcomes drawn from `p` itself (perfectly calibrated scores
    with this score distribution), scored with the same 15-bin ECE."""
    rng = np.random.default_rng(0)
    draws = [evaluate.expected_calibration_error(p, (rng.random(len(p)) < p).astype(np.int64))
             for _ in range(sims)]  # fmt: skip
    return {"mean": float(np.mean(draws)), "p95": float(np.quantile(draws, 0.95)), "n": len(p)}


def ladder(train: Any, test: Any, seed: int, options: dict[str, Any] | None = None
           ) -> dict[str, Any]:  # fmt: skip
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(train))
    fit_idx, val_idx = train_test_split(idx, test_size=0.15, stratify=train.y, random_state=seed)
    with tempfile.TemporaryDirectory() as tmp:
        start = cpu()
        result = fit(train.subset(np.sort(fit_idx)), val=train.subset(np.sort(val_idx)),
                     test=test, out=Path(tmp) / "run", strategies=["scorecard", "lightgbm"],
                     metric="auc", ship="none", options=options)  # fmt: skip
        spent = cpu() - start
        p = result.bundle.predict_proba(test.inputs)[:, 1]
        rungs = {
            c.strategy: {
                "test_auc": c.test.metric("auc") if c.test else None,
                "cpu_s": c.cost.cpu_s,
            }
            for c in result.ladder.candidates
        }
        out = scores(test.y, p, spent)
        out["chosen"], out["rungs"] = result.ladder.chosen.strategy, rungs
        return out


def frame_xy(data: Any) -> tuple[Any, np.ndarray]:
    return data.records.frame, data.y


def peer_lr(tr: Any, te: Any) -> dict[str, float]:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    (X, y), (Xt, yt) = frame_xy(tr), frame_xy(te)
    cats = [c.name for c in tr.records.schema.of_type("categorical")]
    nums = [c.name for c in tr.records.schema.columns if c.type in ("numeric", "boolean", "date")]
    start = cpu()
    model = make_pipeline(ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), nums),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                              OneHotEncoder(handle_unknown="ignore")), cats),
    ]), LogisticRegression(max_iter=2000))  # fmt: skip
    model.fit(X[nums + cats].astype({c: object for c in cats}), y)
    spent = cpu() - start
    return scores(yt, model.predict_proba(Xt[nums + cats])[:, 1], spent)


def _lgb_frame(X: Any, schema: Any) -> Any:
    import pandas as pd

    out = X.copy()
    for c in schema.of_type("categorical"):
        out[c.name] = pd.Categorical(out[c.name], categories=list(c.levels))
    return out[[c.name for c in schema.columns if c.type != "text"]]


def peer_lightgbm(tr: Any, te: Any) -> dict[str, float]:
    import lightgbm as lgb

    schema = tr.records.schema
    start = cpu()
    model = lgb.LGBMClassifier(verbose=-1, n_jobs=1, random_state=0)
    model.fit(_lgb_frame(tr.records.frame, schema), tr.y)
    spent = cpu() - start
    return scores(te.y, model.predict_proba(_lgb_frame(te.records.frame, schema))[:, 1], spent)


def peer_optbinning(tr: Any, te: Any) -> dict[str, float]:
    from optbinning import BinningProcess
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    schema = tr.records.schema
    names = [c.name for c in schema.columns if c.type != "text"]
    cats = [c.name for c in schema.of_type("categorical")]
    start = cpu()
    model = make_pipeline(BinningProcess(names, categorical_variables=cats),
                          LogisticRegression(max_iter=2000))  # fmt: skip
    model.fit(tr.records.frame[names], tr.y)
    spent = cpu() - start
    return scores(te.y, model.predict_proba(te.records.frame[names])[:, 1], spent)


def peer_ebm(tr: Any, te: Any) -> dict[str, float]:
    from interpret.glassbox import ExplainableBoostingClassifier

    schema = tr.records.schema
    names = [c.name for c in schema.columns if c.type != "text"]
    start = cpu()
    model = ExplainableBoostingClassifier(random_state=0, n_jobs=1)
    model.fit(tr.records.frame[names], tr.y)
    spent = cpu() - start
    return scores(te.y, model.predict_proba(te.records.frame[names])[:, 1], spent)


def cross_validate(name: str, folds: int, peers: dict[str, Any]) -> dict[str, Any]:
    from sklearn.model_selection import StratifiedKFold

    frame, target, positive = load_demo(name)
    data = to_tabular(frame, target=target, positive=positive, name=name).dataset
    runs: dict[str, list[dict[str, Any]]] = {"ladder": [], **{p: [] for p in peers}}
    for k, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=0).split(
            np.zeros(len(data)), data.y)):  # fmt: skip
        train, test = data.subset(tr, f"{name}:train"), data.subset(te, f"{name}:test")
        runs["ladder"].append(ladder(train, test, seed=k))
        for peer, fn in peers.items():
            runs[peer].append(fn(train, test))
        print(name, k, {m: round(r[-1]["auc"], 3) for m, r in runs.items()}, flush=True)
    y = np.concatenate([data.y[te] for _, te in StratifiedKFold(
        folds, shuffle=True, random_state=0).split(np.zeros(len(data)), data.y)])  # fmt: skip
    summary: dict[str, Any] = {}
    floor_per_fold = float(np.mean([ece_floor(r["_p"])["mean"] for r in runs["ladder"]]))
    pooled: dict[str, np.ndarray] = {}
    for model, rows in runs.items():
        summary[model] = {m: float(np.mean([r[m] for r in rows]))
                          for m in ("auc", "ks", "brier", "ece", "cpu_s")}  # fmt: skip
        pooled[model] = np.concatenate([r.pop("_p") for r in rows])
        summary[model]["ece_pooled_oof"] = evaluate.expected_calibration_error(pooled[model], y)
    summary["ece_note"] = (
        "ece: 15 equal-width bins on each test fold (~n/folds rows), mean over folds; "
        "ece_pooled_oof: the same ECE once on all out-of-fold test predictions (n rows); "
        "ece_floor_*: expected ECE of perfectly calibrated scores with the ladder's score "
        "distribution at that n (outcomes drawn from the scores, 200 draws)"
    )
    summary["ece_floor_per_fold"] = floor_per_fold
    summary["ece_floor_pooled_oof"] = ece_floor(pooled["ladder"])
    summary["ladder"]["chosen"] = [r["chosen"] for r in runs["ladder"]]
    for rung in ("scorecard", "lightgbm"):
        summary[f"rung:{rung}"] = {
            "test_auc": float(np.mean([r["rungs"][rung]["test_auc"] for r in runs["ladder"]])),
            "cpu_s": float(np.mean([r["rungs"][rung]["cpu_s"] for r in runs["ladder"]])),
        }
    return {"summary": summary, "folds": runs}


def loans_text() -> dict[str, Any]:
    """Tabular alone vs tabular + employment-title text, and the leakage warnings."""
    from frugalml.apps.credit.api import split

    frame, target, positive = load_demo("loans_full_schema")
    validated = to_tabular(frame, target=target, positive=positive, name="loans_full_schema")
    train, val, test, _ = split(validated.dataset, 0)
    out: dict[str, Any] = {"warnings": validated.warnings, "dropped": validated.dropped,
                           "types": {c.name: c.type for c in validated.schema.columns}}  # fmt: skip
    for text in (False, True):
        opts = {"scorecard": {"text": text}, "lightgbm": {"text": text}}
        with tempfile.TemporaryDirectory() as tmp:
            r = fit(train, val=val, test=test, out=Path(tmp) / "run", metric="auc",
                    strategies=["scorecard", "lightgbm"], ship="none", options=opts)  # fmt: skip
            out["text" if text else "tabular"] = {
                c.strategy: c.test.metric("auc") for c in r.ladder.candidates if c.test
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--skip-ebm", action="store_true")
    parser.add_argument("--only", choices=["credit_data", "lending_club", "loans_full_schema"])
    args = parser.parse_args()
    peers = {"sklearn_lr": peer_lr, "lightgbm_defaults": peer_lightgbm,
             "optbinning_scorecard": peer_optbinning}  # fmt: skip
    if not args.skip_ebm:
        peers["ebm"] = peer_ebm
    start = time.perf_counter()
    results: dict[str, Any] = {"command": "python benchmarks/credit_vs_peers.py"}
    jobs = {
        "credit_data": lambda: cross_validate("credit_data", args.folds, peers),
        "lending_club": lambda: cross_validate("lending_club", args.folds, {"sklearn_lr": peer_lr}),
        "loans_full_schema": loans_text,
    }
    out = OUT if args.only is None else OUT.with_name(f"credit_vs_peers_{args.only}.json")
    for name, job in jobs.items():
        if args.only in (None, name):
            results[name] = job()
            results["wall_s"] = time.perf_counter() - start
            out.write_text(json.dumps(results, indent=2))  # what finished survives a crash
    print(json.dumps({k: v.get("summary", v) if isinstance(v, dict) else v
                      for k, v in results.items()}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
