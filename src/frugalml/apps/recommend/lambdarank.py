"""The hybrid rung: a LightGBM lambdarank model re-ranks candidates from the cheaper rungs,
learning how to combine collaborative scores (item-kNN, EASE), content similarity (frozen
text embeddings) and popularity.

It learns on the training events alone: a `holdout` share of each user's events (at random,
or their latest, as the test split is made) is what the ranker learns to find from the rest
(the base rungs fitted on the rest); validation stops the boosting (ndcg@10); the shipped
base rungs are refitted on every training event. Everything ships as arrays (the booster as
its own text format, in bytes): no pickles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from frugalml import CostMeter, Dataset
from frugalml.apps.recommend.data import Interactions, interactions_of
from frugalml.apps.recommend.model import Recommender, Scorer, histories, popularity
from frugalml.apps.recommend.rungs import (
    INPUTS,
    EaseConfig,
    EaseStrategy,
    ItemKnnConfig,
    ItemKnnStrategy,
)
from frugalml.config import Budget
from frugalml.strategies.base import StrategyConfig, register_strategy

Source = Literal["item_knn", "ease"]
# per source: its score over the user's best candidate's, and its rank among the candidates
FEATURES_PER_SOURCE = ("score", "rank")
TIE_BREAK = 1e-4  # times the sources' mean rank: a small booster's scores have many ties


class LambdarankConfig(StrategyConfig):
    kind: Literal["lambdarank"] = Field("lambdarank", description="The registry name.")
    sources: tuple[Source, ...] = Field(
        ("item_knn", "ease"), min_length=1, description="Collaborative rungs scored as features."
    )
    neighbours: int = Field(200, ge=1, description="item_knn's neighbours per item.")
    ease_lambda: float = Field(300.0, gt=0, description="EASE's L2 strength.")
    backbone: str | None = Field(
        "minilm", description="Encoder of the content-similarity feature; None: no content."
    )
    max_length: int = Field(64, ge=8, description="Tokens embedded per item text.")
    cache: bool = Field(True, description="Cache item embeddings on disk ($FRUGALML_CACHE).")
    half_life: float = Field(20.0, ge=0, description="Recency half-life of the content user.")
    candidates: int = Field(100, ge=5, description="Candidates per source per user.")
    holdout: float = Field(
        0.2, gt=0, lt=1, description="Share of each user's events the ranker learns to find."
    )
    holdout_by: Literal["random", "latest"] = Field(
        "random",
        description="Which events are held out: at random (as a per-user random split tests) "
        "or each user's latest (as leave-last-out and time splits test).",
    )
    trees: int = Field(300, ge=1, description="Boosting rounds at most (validation stops).")
    learning_rate: float = Field(0.05, gt=0, description="LightGBM's shrinkage per tree.")
    leaves: int = Field(15, ge=2, description="Leaves per tree at most.")
    min_child: int = Field(20, ge=1, description="Rows per leaf at least.")
    seed: int = Field(0, description="Seed for the holdout draw and LightGBM.")


@register_strategy(
    "lambdarank",
    config=LambdarankConfig,
    predictor=Recommender,
    cost_rank=15,
    extra="recommend",
    needs=("lightgbm",),
    inputs=INPUTS,
)
class LambdarankStrategy:
    """A LightGBM lambdarank re-ranker over the cheaper rungs' candidates, on collaborative
    scores, content similarity and popularity: the rung that learns which signal to trust."""

    def __init__(self, config: LambdarankConfig) -> None:
        self.config = config

    def fit(
        self, train: Dataset, val: Dataset, *, budget: Budget, meter: CostMeter,
        workdir: Path | None = None,
    ) -> Recommender:  # fmt: skip
        import lightgbm as lgb

        c, events = self.config, interactions_of(train)
        vectors = self._vectors(events, meter)
        early, late = holdout(events, c.holdout, by=c.holdout_by, seed=c.seed)
        learn = self._ranking_rows(self._scorer(early, vectors, budget, meter), early, late)
        shipped = self._scorer(events, vectors, budget, meter)
        checks = self._ranking_rows(shipped, events, interactions_of(val))
        params = {
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [10],
            "learning_rate": c.learning_rate, "num_leaves": c.leaves,
            "min_data_in_leaf": c.min_child, "seed": c.seed, "num_threads": 1,
            "verbosity": -1, "deterministic": True,
        }  # fmt: skip
        sets = [lgb.Dataset(x, y, group=g, free_raw_data=False) for x, y, g in (learn, checks)]
        booster = lgb.train(
            params, sets[0], num_boost_round=c.trees, valid_sets=[sets[1]],
            callbacks=[lgb.early_stopping(20, verbose=False)],
        )  # fmt: skip
        meter.add_flops(float(booster.current_iteration()) * len(learn[1]) * c.leaves)
        text = booster.model_to_string(num_iteration=booster.best_iteration or None)
        shipped.arrays["ranker"] = np.frombuffer(text.encode(), dtype=np.uint8).copy()
        shipped.settings["trees"] = booster.best_iteration or booster.current_iteration()
        return Recommender.fitted(events, shipped)

    def _vectors(self, events: Interactions, meter: CostMeter) -> np.ndarray | None:
        c = self.config
        if c.backbone is None:
            return None
        from frugalml.models import embed_texts

        return embed_texts(
            events.catalogue.texts, c.backbone, max_length=c.max_length, cache=c.cache,
            meter=meter,
        )  # fmt: skip

    def _scorer(
        self, events: Interactions, vectors: np.ndarray | None, budget: Budget, meter: CostMeter
    ) -> Scorer:
        """The base rungs fitted on `events`, their arrays under their names, untrained."""
        c, data = self.config, events.dataset("train")
        arrays: dict[str, np.ndarray] = {"popularity": popularity(events)}
        for name in c.sources:
            rung = (
                ItemKnnStrategy(
                    ItemKnnConfig(neighbours=(c.neighbours,), popularity_weights=(0.0,))
                )
                if name == "item_knn"
                else EaseStrategy(EaseConfig(lambdas=(c.ease_lambda,), popularity_weights=(0.0,)))
            )
            fitted = rung.fit(data, data, budget=budget, meter=meter)
            arrays |= {f"{name}.{k}": v for k, v in fitted.scorer.arrays.items()}
        if vectors is not None:
            arrays["content.vectors"] = vectors.astype(np.float32)
        settings = {"sources": list(c.sources), "candidates": c.candidates,
                    "half_life": c.half_life}  # fmt: skip
        return Scorer("lambdarank", arrays, settings)

    @staticmethod
    def _ranking_rows(
        scorer: Scorer, known: Interactions, wanted: Interactions
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, relevance, group sizes): each user of `wanted` a query, their
        candidates from `known` histories, relevant if among their `wanted` events."""
        indptr, items = histories(known)
        users = np.unique(wanted.users)
        rows = [items[indptr[u] : indptr[u + 1]] for u in users]
        found = candidates(scorer, rows, len(known.catalogue))
        xs, ys, sizes = [], [], []
        for u, (cand, x) in zip(users, found, strict=True):
            y = np.isin(cand, wanted.items[wanted.users == u]).astype(np.float32)
            if y.any():  # a query with nothing to find teaches nothing
                xs.append(x)
                ys.append(y)
                sizes.append(len(cand))
        if not sizes:
            raise ValueError("no user's held-out events are among their candidates")
        return np.concatenate(xs), np.concatenate(ys), np.asarray(sizes)


def holdout(
    events: Interactions, share: float, *, by: str = "latest", seed: int = 0
) -> tuple[Interactions, Interactions]:
    """(kept, held out): `share` of each user's events (at least one, for users with two or
    more), their latest or at random, held out; the rest kept."""
    rng = np.random.default_rng(seed)
    keys = events.times if by == "latest" else rng.random(len(events))
    order = np.lexsort((keys, events.users))
    users = events.users[order]
    counts = np.bincount(users, minlength=len(events.user_ids))
    start = np.r_[0, np.cumsum(counts)][users]
    position = np.arange(len(users)) - start
    n_late = np.where(counts >= 2, np.maximum(1, np.floor(share * counts)), 0)[users]
    late = np.zeros(len(events), dtype=bool)
    late[order] = position >= counts[users] - n_late
    return events.select(~late), events.select(late)


def _parts(scorer: Scorer, n_items: int) -> tuple[dict[str, Scorer], Scorer | None]:
    """The base scorers a lambdarank scorer holds, built once."""
    cached = scorer.memo.get("parts")
    if cached is None or cached[2] != n_items:
        a = scorer.arrays
        base = {
            name: Scorer("linear", {k: a[f"{name}.{k}"] for k in ("indptr", "indices", "values")})
            for name in scorer.settings["sources"]
        }
        content = None
        if "content.vectors" in a:
            half_life = scorer.settings["half_life"]
            content = Scorer("vectors", {"vectors": a["content.vectors"]}, {"half_life": half_life})
        cached = scorer.memo["parts"] = (base, content, n_items)
    return cached[0], cached[1]


def signals(scorer: Scorer, rows: Sequence[np.ndarray], n_items: int) -> dict[str, np.ndarray]:
    """Each source's (and content's) scores of every item, per history."""
    base, content = _parts(scorer, n_items)
    found = {name: s.score(rows, n_items) for name, s in base.items()}
    if content is not None:
        found["content"] = content.score(rows, n_items)
    return found


def candidates(
    scorer: Scorer,
    rows: Sequence[np.ndarray],
    n_items: int,
    found: dict[str, np.ndarray] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per history: the union of each source's (and content's, popularity's) top candidates
    not in the history, and their features (one row each)."""
    found = signals(scorer, rows, n_items) if found is None else found
    pop = scorer.arrays["popularity"][:n_items]
    k = min(int(scorer.settings["candidates"]), n_items)
    out = []
    for r, row in enumerate(rows):
        allowed = np.ones(n_items, dtype=bool)
        allowed[row] = False
        pool = [_top(s[r], allowed, k) for s in found.values()]
        cand = np.unique(np.concatenate([*pool, _top(pop, allowed, max(1, k // 4))]))
        columns = []
        for s in found.values():  # scale-free: base rungs fitted on more events score higher
            values = s[r, cand]
            top = float(np.abs(values).max()) or 1.0
            columns += [values / top, np.argsort(np.argsort(-values)) / max(1, len(cand))]
        columns += [np.log1p(1000 * pop[cand]), np.full(len(cand), np.log1p(len(row)))]
        out.append((cand, np.column_stack(columns).astype(np.float32)))
    return out


def _top(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    index = np.flatnonzero(allowed)
    if len(index) <= k:
        return index
    return index[np.argpartition(-scores[index], k - 1)[:k]]


def rank(scorer: Scorer, rows: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Scores of every item: candidates by the ranker, above every other item, which keep
    the first source's order."""
    import lightgbm as lgb

    booster = scorer.memo.get("booster")
    if booster is None:
        text = scorer.arrays["ranker"].tobytes().decode()
        booster = scorer.memo["booster"] = lgb.Booster(model_str=text)
    found = signals(scorer, rows, n_items)
    first = found[scorer.settings["sources"][0]]
    out = np.zeros((len(rows), n_items), dtype=np.float32)
    for r, (cand, x) in enumerate(candidates(scorer, rows, n_items, found)):
        ranked = np.asarray(booster.predict(x, num_threads=1), dtype=np.float32)
        span = float(np.ptp(first[r])) or 1.0
        below = float(ranked.min()) - 2.0 if len(ranked) else 0.0
        out[r] = below + (first[r] - first[r].max()) / span  # in [below - 1, below]
        ranks = x[:, 1 : 2 * len(found) : 2].mean(axis=1)
        out[r, cand] = ranked - TIE_BREAK * ranks
    return out
