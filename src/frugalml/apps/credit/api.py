"""`fit_credit`: applicant table in, a defended default model out.

The table is checked and typed (`frugalml.data.tabular`), split once here (stratified, seeded)
so that protected attributes can follow the test rows, climbed by the one ladder
(`frugalml.fit`) over the tabular rungs, and then judged as a risk team would: intervals,
calibration, stability, a cost-based cut-off, reason codes and fairness, written beside the
ladder's report as RUN_DIR/credit_report.json and .md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frugalml.api import FitResult, fit
from frugalml.apps.credit import evaluate
from frugalml.data.dataset import Dataset
from frugalml.data.tabular import Overrides, TabularValidated, rows_of, to_tabular
from frugalml.errors import ConfigError, installed

if TYPE_CHECKING:
    import pandas as pd

RUNGS = ("scorecard", "lightgbm")
REPORT = "credit_report"
SAMPLE_REASONS = 5


@dataclass
class CreditResult:
    fit: FitResult
    validated: TabularValidated
    report: dict[str, Any]
    report_md: Path
    notes: list[str] = field(default_factory=list)


def read_applicants(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A file any `frugalml fit` reads (CSV, Parquet, JSONL...) or a frame as it is."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source
    from frugalml.data.load import read_table

    return read_table(source).frame


def fit_credit(
    data: str | Path | pd.DataFrame,
    *,
    out: str | Path,
    target: str,
    positive: str | None = None,
    overrides: Overrides | None = None,
    protected: Sequence[str] = (),
    cost_fn: float = 5.0,
    cost_fp: float = 1.0,
    strategies: Sequence[str] = RUNGS,
    metric: str = "auc",
    target_value: float | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    force: bool = False,
) -> CreditResult:
    """Check, split, climb, judge. Protected columns are never features; they are used
    only to measure approval and error rates per group."""
    frame = read_applicants(data)
    missing = [p for p in protected if p not in frame.columns]
    if missing:
        raise ConfigError(f"--protected names no column: {', '.join(missing)}",
                          [f"columns: {', '.join(map(str, frame.columns))}"])  # fmt: skip
    if cost_fn <= 0 or cost_fp <= 0:
        raise ConfigError(f"--cost-fn and --cost-fp must be positive; got {cost_fn}, {cost_fp}")
    features = frame.drop(columns=list(protected))
    name = str(data) if not hasattr(data, "columns") else "applicants"
    validated = to_tabular(features, target=target, positive=positive, overrides=overrides,
                           name=name)  # fmt: skip
    train, val, test, test_idx = split(validated.dataset, seed)
    # LightGBM ships as ONNX (parity-checked, accuracy-gated); a scorecard ships as it is
    ship = "onnx" if installed("onnx", "onnxruntime", "onnxmltools") else "none"
    result = fit(
        train, val=val, test=test, out=out, strategies=strategies, metric=metric,
        target=target_value, options=options, force=force, ship=ship,
    )  # fmt: skip
    groups = {p: frame[p].to_numpy()[test_idx] for p in protected}
    report = judge(result, validated, train, val, test, groups, cost_fn, cost_fp)
    md = write_report(result.run_dir, report)
    return CreditResult(result, validated, report, md, validated.notes + validated.warnings)


def split(data: Dataset, seed: int) -> tuple[Dataset, Dataset, Dataset, np.ndarray]:
    """70/15/15, stratified on the target; returns the test rows' positions too."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data))
    rest, test = train_test_split(idx, test_size=0.15, stratify=data.y, random_state=seed)
    train, val = train_test_split(rest, test_size=0.15 / 0.85, stratify=data.y[rest],
                                  random_state=seed + 1)  # fmt: skip
    return (data.subset(np.sort(train), f"{data.name}:train"),
            data.subset(np.sort(val), f"{data.name}:val"),
            data.subset(np.sort(test), f"{data.name}:test"), np.sort(test))  # fmt: skip


def judge(
    result: FitResult,
    validated: TabularValidated,
    train: Dataset,
    val: Dataset,
    test: Dataset,
    groups: dict[str, np.ndarray],
    cost_fn: float,
    cost_fp: float,
) -> dict[str, Any]:
    """The chosen bundle scored on test: what `credit_report.json` holds."""
    bundle = result.bundle
    p_val = bundle.predict_proba(val.inputs)[:, 1]
    p_test = bundle.predict_proba(test.inputs)[:, 1]
    p_train = bundle.predict_proba(train.inputs)[:, 1]
    decision = evaluate.cutoff(p_val, val.y, cost_fn=cost_fn, cost_fp=cost_fp)
    decision["test"] = evaluate.decision_summary(p_test, test.y, decision["threshold"],
                                                 cost_fn, cost_fp)  # fmt: skip
    types = {c.name: c.type for c in validated.schema.columns}
    sample = list(test.inputs[:SAMPLE_REASONS])
    report: dict[str, Any] = {
        "chosen": result.ladder.chosen.strategy,
        "reason": result.ladder.reason,
        "target": validated.target,
        "positive": validated.positive,
        "columns": types,
        "dropped": validated.dropped,
        "notes": validated.notes,
        "warnings": validated.warnings,
        "test": evaluate.discrimination(test.y, p_test, bundle.labels),
        "reliability": evaluate.reliability(p_test, test.y),
        "psi": evaluate.stability(
            rows_of(train).frame, rows_of(test).frame, types, p_train, p_test
        ),
        "decision": decision,
        "reasons_sample": [
            {"record": r, "p_bad": float(p), "reasons": e["reasons"]}
            for r, p, e in zip(sample, p_test, bundle.predict(sample), strict=False)
        ],
        "fairness": {
            name: evaluate.fairness(g, test.y, p_test, decision["threshold"])
            for name, g in groups.items()
        },
    }
    points_table = getattr(bundle.predictor, "points_table", None)
    if points_table is not None:
        report["points_table"] = points_table()
    return report


def write_report(run_dir: Path, report: dict[str, Any]) -> Path:
    (run_dir / f"{REPORT}.json").write_text(json.dumps(report, indent=2, default=str))
    md = run_dir / f"{REPORT}.md"
    md.write_text(render(report))
    _reliability_plot(run_dir / "reliability.png", report["reliability"])
    return md


def render(r: dict[str, Any]) -> str:
    t, d = r["test"], r["decision"]
    lines = [
        f"# Credit model: {r['chosen']}", "", r["reason"], "",
        f"Predicts `{r['target']}` = {r['positive']}; test bad rate {t['bad_rate']:.3f} "
        f"(n = {t['n']}).", "", "| metric | test | 95% interval |", "|---|---|---|",
        *(f"| {m} | {t[m]:.3f} | {t[m + '_ci'][0]:.3f} – {t[m + '_ci'][1]:.3f} |"
          for m in evaluate.METRICS),
        f"| ece | {t['ece']:.3f} | |", "",
        f"## Cut-off (missed default costs {d['cost_fn']:g}, rejected good {d['cost_fp']:g})", "",
        f"Approve when P(bad) < {d['threshold']:.3f}: on test, approval rate "
        f"{d['test']['approval_rate']:.1%}, bad rate among approved "
        f"{d['test']['bad_rate_approved']:.1%}, expected cost {d['test']['expected_cost']:.3f} "
        "per applicant.", "",
    ]  # fmt: skip
    if r["warnings"] or r["dropped"]:
        lines += ["## Data warnings", "", *(f"- {w}" for w in r["warnings"]),
                  *(f"- '{c}' dropped: {why}" for c, why in r["dropped"].items()), ""]  # fmt: skip
    shifted = {k: v for k, v in r["psi"].items() if v > 0.1}
    moved = ", ".join(f"{k} {v:.2f}" for k, v in shifted.items()) or "none"
    lines += ["## Stability (PSI train → test)", "",
              f"Score PSI {r['psi']['score']:.3f}; features above 0.1: {moved}.", ""]  # fmt: skip
    for name, f in r["fairness"].items():
        flag = " **80% rule broken**" if f["four_fifths_broken"] else ""
        lines += [f"## Fairness by {name}{flag}", "", "| group | n | approval | TPR | "
                  "predicted bad | observed bad |", "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {g} | {v['n']} | {v['approval_rate']:.1%} | {v['tpr']:.2f} | "
                  f"{v['predicted_bad_rate']:.3f} | {v['observed_bad_rate']:.3f} |"
                  for g, v in f["groups"].items()]  # fmt: skip
        lines += ["", f"Approval ratio {f['approval_ratio']:.2f} (80% rule: ≥ 0.80).", ""]
    lines += ["## Reason codes (first test applicants)", ""]
    for s in r["reasons_sample"]:
        why = "; ".join(f"{x['feature']}={x['value']} (+{x['impact']:.2f} {x['unit']})"
                        for x in s["reasons"]) or "none"  # fmt: skip
        lines.append(f"- P(bad) {s['p_bad']:.3f}: {why}")
    return "\n".join(lines) + "\n"


def _reliability_plot(path: Path, rows: list[dict[str, float]]) -> None:
    """Predicted vs observed default rate per bin; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], "o-")
    ax.set(xlabel="predicted P(bad)", ylabel="observed bad rate", title="Reliability")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
