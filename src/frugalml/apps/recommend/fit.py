"""`fit`: the recommendation ladder is `frugalml.fit` on interaction splits, chosen by a
ranking metric; `evaluate` scores a bundle on any split (all users, cold-start items)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import frugalml
from frugalml.apps.recommend.data import RecSplits, interactions_of
from frugalml.apps.recommend.model import Recommender
from frugalml.metrics import Quality

RUNGS = ("popularity", "item_knn", "ease", "als", "content")
# dearer rungs, climbed only when named (lambdarank did not beat EASE on MovieLens; see notes)
OPT_IN = ("lambdarank", "two_tower")
METRICS = ("ndcg@10", "recall@10", "mrr", "coverage@10", "popularity_bias@10")
# rung → (its config's list of settings, the scorer setting validation chose from it)
TUNED = {
    "item_knn": ("neighbours", "neighbours"),
    "ease": ("lambdas", "lambda"),
    "als": ("factors", "factors"),
    "content": ("half_lives", "half_life"),
}
REFIT = "refit"  # RUN_DIR/refit: the chosen rung refitted on train + validation


def fit(
    splits: RecSplits,
    *,
    out: str | Path,
    strategies: Sequence[str] = RUNGS,
    metric: str = "ndcg@10",
    target: float | None = None,
    refit: bool = True,
    min_coverage: float | None = None,
    **options: Any,
) -> frugalml.FitResult:
    """Climb the recommendation rungs cheapest first on `splits` (see `split`); the chosen
    recommender ships as RUN_DIR/bundle. Other options are `frugalml.fit`'s.

    With `refit` (default), the chosen rung is then fitted again, with the setting validation
    chose, on train + validation, as recommenders are compared (nothing held back but the
    test); that run, RUN_DIR/refit, is returned and its bundle is the one to ship. Its
    validation figures are on events it trained on: read its test figures.

    `min_coverage` (default: each rung's, 0.07) is the validation coverage@10 a learned rung's
    popularity weight and pool must reach (see `rungs.RankerConfig`); the refit pins both.
    """
    if min_coverage is not None:
        given = dict(options.pop("options", None) or {})
        for rung in (r for r in strategies if r in TUNED):
            given[rung] = {**given.get(rung, {}), "min_coverage": min_coverage}
        options["options"] = given
    chosen = frugalml.fit(
        splits.train, val=splits.val, test=splits.test, out=out, strategies=strategies,
        metric=metric, target=target, ship="none", **options,
    )  # fmt: skip
    if not refit:
        return chosen
    rung = chosen.bundle.manifest.strategy
    given = dict(options.pop("options", None) or {})
    if rung in TUNED and isinstance(chosen.bundle.predictor, Recommender):
        field, setting = TUNED[rung]
        value = chosen.bundle.predictor.scorer.settings[setting]
        settings = chosen.bundle.predictor.scorer.settings
        pinned = {field: [value], "popularity_weights": [settings.get("popularity", 0.0)],
                  "pools": [settings.get("pool")]}  # fmt: skip
        given[rung] = {**given.get(rung, {}), **pinned}
    whole = interactions_of(splits.train).plus(interactions_of(splits.val))
    result = frugalml.fit(
        whole.dataset("train+validation"), val=splits.val, test=splits.test,
        out=Path(out) / REFIT, strategies=[rung], metric=metric, ship="none",
        options=given, **options,
    )  # fmt: skip
    result.notes.append(
        f"{rung} chosen on validation in {chosen.run_dir}, then refitted on train + validation"
        " (its validation figures are on events it trained on; read the test figures)"
    )
    return result


def evaluate(
    bundle: frugalml.Bundle, data: frugalml.Dataset, metrics: Sequence[str] = METRICS
) -> Quality:
    """Ranking quality with 95% bootstrap intervals of a recommendation bundle on a split."""
    from frugalml.strategies.base import Ranker

    if not isinstance(bundle.predictor, Ranker):
        raise frugalml.FrugalError(f"{bundle.path} is not a recommendation bundle")
    return Quality.of(bundle.predictor.outcomes(data), metrics)
