"""`fit`: the recommendation ladder is `frugalml.fit` on interaction splits, chosen by a
ranking metric; `evaluate` scores a bundle on any split (all users, cold-start items)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import frugalml
from frugalml.apps.recommend.data import RecSplits
from frugalml.metrics import Quality

RUNGS = ("popularity", "item_knn", "ease", "content")
METRICS = ("ndcg@10", "recall@10", "mrr", "coverage@10", "popularity_bias@10")


def fit(
    splits: RecSplits,
    *,
    out: str | Path,
    strategies: Sequence[str] = RUNGS,
    metric: str = "ndcg@10",
    target: float | None = None,
    **options: Any,
) -> frugalml.FitResult:
    """Climb the recommendation rungs cheapest first on `splits` (see `split`); the chosen
    recommender ships as RUN_DIR/bundle. Other options are `frugalml.fit`'s."""
    return frugalml.fit(
        splits.train,
        val=splits.val,
        test=splits.test,
        out=out,
        strategies=strategies,
        metric=metric,
        target=target,
        ship="none",
        **options,
    )


def evaluate(
    bundle: frugalml.Bundle, data: frugalml.Dataset, metrics: Sequence[str] = METRICS
) -> Quality:
    """Ranking quality with 95% bootstrap intervals of a recommendation bundle on a split."""
    from frugalml.strategies.base import Ranker

    if not isinstance(bundle.predictor, Ranker):
        raise frugalml.FrugalError(f"{bundle.path} is not a recommendation bundle")
    return Quality.of(bundle.predictor.outcomes(data), metrics)
