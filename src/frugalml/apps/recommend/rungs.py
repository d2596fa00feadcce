"""The recommendation rungs, cheapest first: popularity, item-kNN, EASE, implicit ALS,
content (frozen text embeddings). Each registers with `inputs=("interactions",)`, so the one
ladder climbs them on interactions and skips them on text, and ships a `Recommender`.

Hyperparameters with a large effect (neighbours, EASE's λ, ALS factors) are chosen on the
validation split from a short list, as the text rungs choose their head's C.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from frugalml import CostMeter, Dataset
from frugalml.apps.recommend.data import Interactions, interactions_of
from frugalml.apps.recommend.model import Recommender, Scorer
from frugalml.config import Budget
from frugalml.data.dataset import InputKind
from frugalml.metrics import Outcomes
from frugalml.strategies.base import StrategyConfig, register_strategy

INPUTS: tuple[InputKind, ...] = ("interactions",)
SELECT_BY = "ndcg@10"  # what validation picks a rung's setting by


def user_item(data: Interactions) -> Any:
    """The binary users-by-items matrix of the training events (CSR, float32)."""
    from scipy.sparse import csr_matrix

    shape = (len(data.user_ids), len(data.catalogue))
    ones = np.ones(len(data), dtype=np.float32)
    matrix = csr_matrix((ones, (data.users, data.items)), shape=shape)
    matrix.data[:] = 1.0
    return matrix


class RankerConfig(StrategyConfig):
    """What every learned recommendation rung shares: the popularity weight of its scores and
    the pool they are standardised over, chosen together on validation under a
    catalogue-coverage floor."""

    popularity_weights: tuple[float, ...] = Field(
        (0.0, -0.1, -0.2, -0.3, -0.5, -0.75, -1.0),
        description="Weights of log popularity added to the standardised scores (negative: "
        "the long tail is lifted); the best on validation whose coverage@10 reaches "
        "min_coverage is used.",
    )
    pools: tuple[int | None, ...] = Field(
        (None, 30, 50, 100),
        description="Candidates per user (their best unseen items) the scores are "
        "standardised over before the weight is added, the rest ranked below them; None: "
        "the whole catalogue. Chosen on validation with the weight.",
    )
    min_coverage: float = Field(
        0.07, ge=0, le=1, description="Validation coverage@10 the chosen weight must reach."
    )

    @field_validator("pools")
    @classmethod
    def _positive(cls, pools: tuple[int | None, ...]) -> tuple[int | None, ...]:
        if not pools or any(p is not None and p < 1 for p in pools):
            raise ValueError(f"pools must be None or positive sizes, at least one; got {pools}")
        return pools


def select(
    train: Interactions,
    val: Dataset,
    scorers: Sequence[Callable[[], Scorer]],
    config: RankerConfig | None = None,
) -> Recommender:
    """The candidate with the best validation ndcg@10 (the first of equals), then, with a
    `config`, its (popularity weight, pool): the best ndcg@10 among the settings whose
    coverage@10 reaches the floor (the widest coverage when none does)."""
    settings = _settings(config)
    if len(scorers) == 1 and len(settings) == 1:
        model = Recommender.fitted(train, scorers[0]())
        model.scorer.settings["popularity"], model.scorer.settings["pool"] = settings[0]
        return model
    best = max((_scored(Recommender.fitted(train, make()), val) for make in scorers),
               key=lambda c: c[0])  # fmt: skip
    model = best[2]
    if config is None or settings == [(0.0, None)]:
        return model
    tried = []
    for setting, outcomes in model.weighted_outcomes(val, settings):
        ndcg, coverage = _quality(outcomes)
        reach = coverage >= config.min_coverage
        tried.append((reach, ndcg if reach else coverage, setting))
    chosen = max(tried, key=lambda t: (t[0], t[1]))[2]
    model.scorer.settings["popularity"], model.scorer.settings["pool"] = chosen
    return model


def _settings(config: RankerConfig | None) -> list[tuple[float, int | None]]:
    """(weight, pool) pairs to try, the whole catalogue first; a pool changes nothing at
    weight 0 (it only reorders the scorer's own top), so that is tried once."""
    if config is None:
        return [(0.0, None)]
    pools = sorted(config.pools, key=lambda p: (p is not None, p or 0))
    pairs = [(w, p) for p in pools for w in config.popularity_weights]
    return list(dict.fromkeys((w, p if w else None) for w, p in pairs))


def _scored(model: Recommender, val: Dataset) -> tuple[float, float, Recommender]:
    """Validation ndcg@10 and coverage@10 of `model`."""
    return (*_quality(model.outcomes(val)), model)


def _quality(outcomes: Outcomes) -> tuple[float, float]:
    """ndcg@10 and coverage@10 from each query's top 10 alone: the registry's figures when
    no two scores tie at the 10th place, for a partition instead of a full sort (validation
    tries dozens of settings on a 671 x 9,066 matrix)."""
    scores, relevance = np.asarray(outcomes.scores), np.asarray(outcomes.relevance) > 0
    k = min(10, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), 1), 1)
    discount = 1 / np.log2(np.arange(k) + 2)
    dcg = (np.take_along_axis(relevance, top, 1) * discount).sum(1)
    ideal = np.r_[0.0, np.cumsum(discount)][np.minimum(relevance.sum(1), k)]
    valid = ideal > 0
    ndcg = float((dcg[valid] / ideal[valid]).mean()) if valid.any() else 0.0
    return ndcg, len(np.unique(top)) / scores.shape[1]


def top_per_row(matrix: Any, keep: int) -> dict[str, np.ndarray]:
    """A sparse or dense square matrix pruned to each row's `keep` largest |values|, as CSR
    arrays (indptr, indices, values): what a linear scorer stores."""
    from scipy.sparse import csr_matrix

    dense = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    keep = min(keep, dense.shape[1])
    idx = np.argpartition(-np.abs(dense), keep - 1, axis=1)[:, :keep]
    values = np.take_along_axis(dense, idx, axis=1)
    rows = np.repeat(np.arange(len(dense)), keep)
    pruned = csr_matrix((values.ravel(), (rows, idx.ravel())), shape=dense.shape)
    pruned.eliminate_zeros()
    return {
        "indptr": pruned.indptr.astype(np.int64),
        "indices": pruned.indices.astype(np.int64),
        "values": pruned.data.astype(np.float32),
    }


# -- popularity ----------------------------------------------------------------------
class PopularityConfig(StrategyConfig):
    kind: Literal["popularity"] = Field("popularity", description="The registry name.")


@register_strategy(
    "popularity", config=PopularityConfig, predictor=Recommender, cost_rank=10, inputs=INPUTS
)
class PopularityStrategy:
    """The most popular items not yet seen: the baseline every recommender must beat."""

    def __init__(self, config: PopularityConfig) -> None:
        self.config = config

    def fit(
        self, train: Dataset, val: Dataset, *, budget: Budget, meter: CostMeter,
        workdir: Path | None = None,
    ) -> Recommender:  # fmt: skip
        return Recommender.fitted(interactions_of(train), Scorer("popularity"))


# -- item-kNN ------------------------------------------------------------------------
class ItemKnnConfig(RankerConfig):
    kind: Literal["item_knn"] = Field("item_knn", description="The registry name.")
    neighbours: tuple[int, ...] = Field(
        (50, 200), description="Neighbours kept per item; the best on validation is used."
    )
    shrink: float = Field(10.0, ge=0, description="Added to the cosine's denominator.")


@register_strategy(
    "item_knn", config=ItemKnnConfig, predictor=Recommender, cost_rank=11, inputs=INPUTS
)
class ItemKnnStrategy:
    """Items scored by their cosine co-occurrence with the user's items (shrunk, top-k)."""

    def __init__(self, config: ItemKnnConfig) -> None:
        self.config = config

    def fit(
        self, train: Dataset, val: Dataset, *, budget: Budget, meter: CostMeter,
        workdir: Path | None = None,
    ) -> Recommender:  # fmt: skip
        events = interactions_of(train)
        X = user_item(events)
        co = (X.T @ X).tocsr().astype(np.float32)
        norms = np.sqrt(np.asarray(X.sum(axis=0)).ravel())
        co.setdiag(0)
        co.eliminate_zeros()
        rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
        co.data /= norms[rows] * norms[co.indices] + self.config.shrink
        meter.add_flops(2.0 * X.nnz * X.shape[1])
        arrays = {k: _row_top(co, k) for k in self.config.neighbours}
        scorers = [partial(Scorer, "linear", a, {"neighbours": k}) for k, a in arrays.items()]
        return select(events, val, scorers, self.config)


def _row_top(co: Any, keep: int) -> dict[str, np.ndarray]:
    """Each row's `keep` largest entries of a CSR matrix, without densifying it."""
    indptr, indices, values = [0], [], []
    for r in range(co.shape[0]):
        span = slice(co.indptr[r], co.indptr[r + 1])
        row_idx, row_val = co.indices[span], co.data[span]
        if len(row_val) > keep:
            top = np.argpartition(-row_val, keep - 1)[:keep]
            row_idx, row_val = row_idx[top], row_val[top]
        indices.append(row_idx)
        values.append(row_val)
        indptr.append(indptr[-1] + len(row_idx))
    return {
        "indptr": np.asarray(indptr, dtype=np.int64),
        "indices": np.concatenate(indices).astype(np.int64),
        "values": np.concatenate(values).astype(np.float32),
    }


# -- EASE ----------------------------------------------------------------------------
class EaseConfig(RankerConfig):
    kind: Literal["ease"] = Field("ease", description="The registry name.")
    lambdas: tuple[float, ...] = Field(
        (150.0, 250.0, 400.0), description="L2 strengths tried; the best on validation is used."
    )
    min_users: int = Field(
        2, ge=1, description="Items chosen by fewer training users are left to popularity."
    )
    keep: int = Field(512, ge=1, description="Weights kept per item (largest magnitude).")


@register_strategy("ease", config=EaseConfig, predictor=Recommender, cost_rank=12, inputs=INPUTS)
class EaseStrategy:
    """EASE: a closed-form linear item-item model, B = I - P·diag(1/diag P), P = (XᵀX+λI)⁻¹."""

    def __init__(self, config: EaseConfig) -> None:
        self.config = config

    def fit(
        self, train: Dataset, val: Dataset, *, budget: Budget, meter: CostMeter,
        workdir: Path | None = None,
    ) -> Recommender:  # fmt: skip
        events = interactions_of(train)
        X = user_item(events)
        kept = np.flatnonzero(np.asarray(X.sum(axis=0)).ravel() >= self.config.min_users)
        gram = (X[:, kept].T @ X[:, kept]).toarray().astype(np.float64)
        n = len(kept)
        meter.add_flops(float(n) ** 3 * len(self.config.lambdas))

        def scorer(lam: float) -> Scorer:
            P = np.linalg.inv(gram + lam * np.eye(n))
            B = -P / np.diag(P)
            np.fill_diagonal(B, 0.0)
            small = top_per_row(B, self.config.keep)
            arrays = _embed_rows(small, kept, len(events.catalogue))
            return Scorer("linear", arrays, {"lambda": lam})

        scorers = [partial(scorer, lam) for lam in self.config.lambdas]
        return select(events, val, scorers, self.config)


def _embed_rows(arrays: dict[str, np.ndarray], kept: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """A matrix over the `kept` items as CSR arrays over all `n` items (others: empty rows)."""
    counts = np.zeros(n, dtype=np.int64)
    counts[kept] = np.diff(arrays["indptr"])
    return {
        "indptr": np.r_[0, np.cumsum(counts)].astype(np.int64),
        "indices": kept[arrays["indices"]].astype(np.int64),
        "values": arrays["values"],
    }


# -- content -------------------------------------------------------------------------
class ContentConfig(RankerConfig):
    kind: Literal["content"] = Field("content", description="The registry name.")
    popularity_weights: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5, 1.0, 2.0),
        description="Weights of log popularity added to the standardised similarities "
        "(text alone ranks obscure look-alikes first); the best on validation is used.",
    )
    backbone: str = Field("minilm", description="Packaged name, hf://ORG/NAME or folder.")
    half_lives: tuple[float, ...] = Field(
        (0.0, 20.0),
        description="Recency half-lives (in items) of the user's mean; 0: a plain mean. The "
        "best on validation is used.",
    )
    max_length: int = Field(64, ge=8, description="Tokens embedded per item text.")
    cache: bool = Field(True, description="Cache item embeddings on disk ($FRUGALML_CACHE).")


@register_strategy(
    "content",
    config=ContentConfig,
    predictor=Recommender,
    cost_rank=14,
    extra="transformers",
    needs=("torch", "transformers"),
    inputs=INPUTS,
)
class ContentStrategy:
    """Items embedded by a frozen text encoder (cached); the user a recency-weighted mean of
    their items: the rung that ranks items nobody has chosen yet."""

    def __init__(self, config: ContentConfig) -> None:
        self.config = config

    def fit(
        self, train: Dataset, val: Dataset, *, budget: Budget, meter: CostMeter,
        workdir: Path | None = None,
    ) -> Recommender:  # fmt: skip
        from frugalml.models import embed_texts, text_encoder

        events = interactions_of(train)
        c = self.config
        encoder = text_encoder(c.backbone, max_length=c.max_length)
        vectors = embed_texts(events.catalogue.texts, encoder, cache=c.cache, meter=meter)
        scorers = [
            partial(Scorer, "vectors", {"vectors": vectors}, {"half_life": h}) for h in c.half_lives
        ]
        model = select(events, val, scorers, c)
        model.encoder = encoder  # shipped: new items are embedded without retraining
        return model


# -- implicit ALS ----------------------------------------------------------------------
class AlsConfig(RankerConfig):
    kind: Literal["als"] = Field("als", description="The registry name.")
    factors: tuple[int, ...] = Field(
        (64, 128), description="Factor counts tried; the best on validation is used."
    )
    regularization: float = Field(0.05, gt=0, description="L2 strength of the factors.")
    alpha: float = Field(2.0, gt=1, description="Confidence of an observed event.")
    iterations: int = Field(15, ge=1, description="Alternating passes.")
    seed: int = Field(0, description="Seed of the initial factors.")


@register_strategy(
    "als",
    config=AlsConfig,
    predictor=Recommender,
    cost_rank=13,
    extra="recommend",
    needs=("implicit",),
    inputs=INPUTS,
)
class AlsStrategy:
    """Implicit-feedback matrix factorisation (`implicit`'s ALS). Only the item factors ship:
    a user is folded in by the same ridge solve ALS makes, so new histories need no retraining
    (and serving needs no `implicit`)."""

    def __init__(self, config: AlsConfig) -> None:
        self.config = config

    def fit(
        self, train: Dataset, val: Dataset, *, budget: Budget, meter: CostMeter,
        workdir: Path | None = None,
    ) -> Recommender:  # fmt: skip
        events = interactions_of(train)
        X = user_item(events)
        c = self.config
        meter.add_flops(sum(2.0 * c.iterations * X.nnz * f * f for f in c.factors))
        scorers = [partial(self._factorise, X, f) for f in c.factors]
        return select(events, val, scorers, self.config)

    def _factorise(self, X: Any, factors: int) -> Scorer:
        from implicit.cpu.als import AlternatingLeastSquares  # type: ignore[import-untyped]

        c = self.config
        model = AlternatingLeastSquares(
            factors=factors, regularization=c.regularization, alpha=c.alpha,
            iterations=c.iterations, random_state=c.seed, num_threads=1,
        )  # fmt: skip
        model.fit(X, show_progress=False)
        V = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        # implicit weighs an event by alpha (a confidence of alpha, not 1 + alpha)
        settings = {"user": "ridge", "reg": c.regularization, "alpha": c.alpha - 1,
                    "factors": factors}  # fmt: skip
        return Scorer("vectors", {"vectors": V, "gram": V.T @ V}, settings)
