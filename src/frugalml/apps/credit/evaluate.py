"""What a risk team reads beside the ladder's report: discrimination with intervals, a
reliability curve, population stability, the cut-off that minimises expected cost, and
approval and error rates per protected group (the 80% rule)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from frugalml.metrics import score

if TYPE_CHECKING:
    import pandas as pd

METRICS = ("auc", "gini", "ks", "brier", "log_loss")
FOUR_FIFTHS = 0.8


def discrimination(y: np.ndarray, p_bad: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """AUC, Gini, KS, Brier and log loss with 95% bootstrap intervals, and the ECE."""
    proba = np.column_stack([1 - p_bad, p_bad])
    quality = score(y, (p_bad >= 0.5).astype(np.int64), labels, proba=proba, metrics=METRICS)
    out: dict[str, Any] = {"n": len(y), "bad_rate": float(y.mean())}
    for name in METRICS:
        value, (low, high) = quality.estimate(name)
        out[name], out[f"{name}_ci"] = value, [low, high]
    out["ece"] = expected_calibration_error(p_bad, y)
    return out


def reliability(p_bad: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins of predicted default probability: mean prediction vs observed rate."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p_bad, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append({
                "low": float(edges[b]), "high": float(edges[b + 1]), "n": int(inside.sum()),
                "predicted": float(p_bad[inside].mean()), "observed": float(y[inside].mean()),
            })  # fmt: skip
    return rows


def expected_calibration_error(p_bad: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Binary ECE: the share-weighted gap between mean prediction and observed rate."""
    rows = reliability(p_bad, y, bins)
    return float(sum(r["n"] * abs(r["predicted"] - r["observed"]) for r in rows) / max(len(y), 1))


def psi(expected: np.ndarray, actual: np.ndarray, *, categorical: bool = False,
        bins: int = 10) -> float:  # fmt: skip
    """Population stability index of `actual` against `expected` (deciles of `expected`, or
    its categories); missing values are a bin of their own. Over 0.25 is a real shift."""
    if categorical:
        e = np.array(["<missing>" if v is None else str(v) for v in expected], dtype=object)
        a = np.array(["<missing>" if v is None else str(v) for v in actual], dtype=object)
        levels = np.unique(np.concatenate([e, a]))
        e_counts = np.array([(e == lv).sum() for lv in levels], dtype=np.float64)
        a_counts = np.array([(a == lv).sum() for lv in levels], dtype=np.float64)
    else:
        e_num, a_num = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
        edges = np.unique(np.nanquantile(e_num, np.linspace(0, 1, bins + 1)[1:-1]))

        def counts(x: np.ndarray) -> np.ndarray:
            idx = np.where(np.isnan(x), len(edges) + 1, np.searchsorted(edges, x, side="right"))
            return np.bincount(idx, minlength=len(edges) + 2).astype(np.float64)

        e_counts, a_counts = counts(e_num), counts(a_num)
    e_share = np.clip(e_counts / max(e_counts.sum(), 1), 1e-4, None)
    a_share = np.clip(a_counts / max(a_counts.sum(), 1), 1e-4, None)
    return float(((a_share - e_share) * np.log(a_share / e_share)).sum())


def stability(train: pd.DataFrame, test: pd.DataFrame, types: Mapping[str, str],
              train_score: np.ndarray, test_score: np.ndarray) -> dict[str, float]:  # fmt: skip
    """PSI per feature (text columns skipped) and on the score, train → test."""
    out = {"score": psi(train_score, test_score)}
    for name, kind in types.items():
        if kind != "text":
            out[name] = psi(train[name].to_numpy(), test[name].to_numpy(),
                            categorical=kind == "categorical")  # fmt: skip
    return out


def cutoff(p_bad: np.ndarray, y: np.ndarray, *, cost_fn: float, cost_fp: float) -> dict[str, Any]:
    """The threshold on P(bad) that minimises expected cost: applicants below it are approved;
    a missed default costs `cost_fn`, a rejected good applicant `cost_fp`."""
    candidates = np.unique(np.concatenate([[0.0, 1.0 + 1e-9], p_bad]))
    best = min(candidates, key=lambda t: _cost(p_bad, y, t, cost_fn, cost_fp))
    return {"threshold": float(best), "cost_fn": cost_fn, "cost_fp": cost_fp,
            **decision_summary(p_bad, y, float(best), cost_fn, cost_fp)}  # fmt: skip


def _cost(p: np.ndarray, y: np.ndarray, t: float, cost_fn: float, cost_fp: float) -> float:
    approve = p < t
    return float((cost_fn * (approve & (y == 1)) + cost_fp * (~approve & (y == 0))).mean())


def decision_summary(p_bad: np.ndarray, y: np.ndarray, threshold: float, cost_fn: float,
                     cost_fp: float) -> dict[str, float]:  # fmt: skip
    approve = p_bad < threshold
    return {
        "approval_rate": float(approve.mean()),
        "bad_rate_approved": float(y[approve].mean()) if approve.any() else 0.0,
        "expected_cost": _cost(p_bad, y, threshold, cost_fn, cost_fp),
    }


def fairness(
    groups: np.ndarray, y: np.ndarray, p_bad: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Per group: approval rate, true-positive rate (defaults caught), calibration (mean
    predicted vs observed bad rate); ratios and differences between groups (fairlearn), and
    whether the 80% rule on approval rates is broken."""
    import pandas as pd
    from fairlearn.metrics import MetricFrame, selection_rate, true_positive_rate

    rejected = (p_bad >= threshold).astype(int)
    frame = MetricFrame(
        metrics={"rejection_rate": selection_rate, "tpr": true_positive_rate},
        y_true=y, y_pred=rejected,
        sensitive_features=pd.Series(groups, name="group").fillna("<missing>").astype(str),
    )  # fmt: skip
    by_group = frame.by_group
    table = {}
    for group in by_group.index:
        inside = np.asarray(pd.Series(groups).fillna("<missing>").astype(str) == group)
        table[str(group)] = {
            "n": int(inside.sum()),
            "approval_rate": float(1 - by_group.loc[group, "rejection_rate"]),
            "tpr": float(by_group.loc[group, "tpr"]),
            "predicted_bad_rate": float(p_bad[inside].mean()),
            "observed_bad_rate": float(y[inside].mean()),
        }
    approvals = [g["approval_rate"] for g in table.values()]
    ratio = min(approvals) / max(approvals) if max(approvals) > 0 else 1.0
    return {
        "groups": table,
        "approval_ratio": ratio,
        "approval_difference": max(approvals) - min(approvals),
        "tpr_difference": float(frame.difference()["tpr"]),
        "four_fifths_broken": ratio < FOUR_FIFTHS,
    }
