"""The one predictor every recommendation rung ships: catalogue, user histories, popularity,
and a scorer (an item-item matrix, item vectors, or popularity alone), saved as safetensors
and JSON.

Scores come from a user's history, never from a per-user parameter, so a user unknown at
training time (or one who rated five films a minute ago) is folded in without retraining,
and a validation or test split is scored from what was known before it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frugalml import Dataset
from frugalml.apps.recommend.data import Catalogue, Interactions, interactions_of
from frugalml.errors import ConfigError
from frugalml.metrics import Outcomes

if TYPE_CHECKING:
    from frugalml.models.encoder import TextEncoder

TIE_BREAK = 1e-6  # times popularity: items a scorer cannot tell apart are ranked by popularity


def histories(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items) per user of `data.user_ids`, each user's items in time order."""
    counts = np.bincount(data.users, minlength=len(data.user_ids))
    order = np.lexsort((data.times, data.users))
    return np.r_[0, np.cumsum(counts)].astype(np.int64), data.items[order].astype(np.int64)


def popularity(data: Interactions) -> np.ndarray:
    """Share of users who interacted with each item."""
    pairs = np.unique(data.users * len(data.catalogue) + data.items)
    counts = np.bincount(pairs % len(data.catalogue), minlength=len(data.catalogue))
    return (counts / max(1, len(data.user_ids))).astype(np.float32)


def history_matrix(rows: Sequence[np.ndarray], n_items: int) -> Any:
    """Histories as a binary CSR matrix, histories by items."""
    from scipy.sparse import csr_matrix

    indptr = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64)
    indices = np.concatenate([np.asarray(r, np.int64) for r in rows] or [np.zeros(0, np.int64)])
    data = np.ones(len(indices), dtype=np.float32)
    matrix = csr_matrix((data, indices, indptr), (len(rows), n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


@dataclass
class Scorer:
    """How a rung turns histories into item scores: `kind` is popularity, linear (an
    item-item matrix W: scores = H·W), vectors (users as a recency-weighted mean of their
    items' vectors, or a ridge fold-in for factor models: scores = u·V) or lambdarank (a
    booster re-ranking the candidates of its base scorers, see `lambdarank.py`)."""

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # built once

    def score(self, rows: Sequence[np.ndarray], n_items: int) -> np.ndarray:
        out = np.zeros((len(rows), n_items), dtype=np.float32)
        if self.kind == "linear":
            out[:] = (history_matrix(rows, n_items) @ self.weights(n_items)).toarray()
        elif self.kind == "vectors":
            out[:] = self.user_vectors(rows) @ self.arrays["vectors"].T
        elif self.kind == "lambdarank":
            from frugalml.apps.recommend.lambdarank import rank

            out[:] = rank(self, rows, n_items)
        return out

    def weights(self, n_items: int) -> Any:
        """A linear scorer's item-item matrix as CSR, built once (building it from its arrays
        costs more than scoring a user with it)."""
        cached = self.memo.get("weights")
        if cached is None or cached.shape[0] != n_items:
            from scipy.sparse import csr_matrix

            a = self.arrays
            cached = csr_matrix((a["values"], a["indices"], a["indptr"]), (n_items, n_items))
            self.memo["weights"] = cached
        return cached

    def user_vectors(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        vectors = self.arrays["vectors"]
        users = np.zeros((len(rows), vectors.shape[1]), dtype=np.float32)
        if self.settings.get("user") == "ridge":
            gram = self.arrays["gram"]
            reg, alpha = float(self.settings["reg"]), float(self.settings["alpha"])
            for r, row in enumerate(rows):
                if len(row):
                    Y = vectors[row]
                    A = gram + alpha * Y.T @ Y + reg * np.eye(len(gram), dtype=np.float32)
                    users[r] = np.linalg.solve(A, (1 + alpha) * Y.sum(0))
            return users
        half_life = float(self.settings.get("half_life", 0) or 0)
        for r, row in enumerate(rows):
            if len(row):
                age = np.arange(len(row))[::-1]
                weight = 0.5 ** (age / half_life) if half_life else np.ones(len(row))
                users[r] = weight @ vectors[row] / weight.sum()
        return users


class Recommender:
    """Top-k items for a user id or a history of item ids, from a catalogue and a scorer."""

    labels: tuple[str, ...] = ()

    def __init__(
        self,
        catalogue: Catalogue,
        user_ids: tuple[str, ...],
        indptr: np.ndarray,
        items: np.ndarray,
        popularity: np.ndarray,
        scorer: Scorer,
        encoder: TextEncoder | None = None,
    ) -> None:
        self.catalogue, self.user_ids = catalogue, user_ids
        self.indptr, self.items, self.popularity, self.scorer = indptr, items, popularity, scorer
        self.encoder = encoder  # content rungs: embeds items added after training
        self.temperature = 1.0
        self._users = {user: u for u, user in enumerate(user_ids)}
        self._index = catalogue.index()

    @classmethod
    def fitted(cls, train: Interactions, scorer: Scorer) -> Recommender:
        indptr, items = histories(train)
        return cls(train.catalogue, train.user_ids, indptr, items, popularity(train), scorer)

    # -- histories and scores ----------------------------------------------------------
    def history(self, user: str) -> np.ndarray | None:
        """The training history of `user` (item indices, oldest first), None if unknown."""
        u = self._users.get(user)
        return None if u is None else self.items[self.indptr[u] : self.indptr[u + 1]]

    def item_indices(self, item_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Catalogue indices of the known ids, and the unknown ids."""
        known = [self._index[i] for i in item_ids if i in self._index]
        return np.asarray(known, dtype=np.int64), [i for i in item_ids if i not in self._index]

    def score(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """(len(rows), n_items) scores of histories; popularity breaks ties (an empty
        history gets popularity alone)."""
        scores = self.scorer.score(rows, len(self.catalogue))
        return self._finish(scores, rows, self.popularity_weight, self.pool)

    @property
    def popularity_weight(self) -> float:
        return float(self.scorer.settings.get("popularity", 0) or 0)

    @property
    def pool(self) -> int | None:
        """Candidates per user the scores are standardised over before the popularity weight
        is added (None: the whole catalogue); see `reweighted`."""
        size = self.scorer.settings.get("pool")
        return None if size is None else int(size)

    def _finish(
        self,
        scores: np.ndarray,
        rows: Sequence[np.ndarray],
        weight: float,
        pool: int | None = None,
        standard: tuple[np.ndarray, np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """The scorer's scores reweighted by popularity, ties broken, empty histories filled
        (`standard`: `standardised(scores, pool, rows)`, when already computed)."""
        if weight:
            standard = standard or self.standardised(scores, pool, rows)
            scores = self._lifted(scores, *standard, weight)
        scores += TIE_BREAK * self.popularity if self.scorer.kind != "popularity" else 0
        for r, row in enumerate(rows):
            if not len(row) or self.scorer.kind == "popularity":
                scores[r] = self.popularity
        return scores

    def reweighted(
        self,
        scores: np.ndarray,
        weight: float,
        *,
        pool: int | None = None,
        seen: Sequence[np.ndarray] = (),
    ) -> np.ndarray:
        """Each row standardised, plus `weight` times log popularity (smoothed by one user): a
        negative weight lifts the long tail (coverage), a positive one the head (a content
        scorer blind to what people choose). With a `pool`, a row is standardised over its
        `pool` best items not in `seen[row]` only, and the rest rank below them in the
        scorer's order: the weight then reorders the user's plausible items instead of
        pulling obscure ones from the whole catalogue (MovieLens: see the design notes)."""
        return self._lifted(scores, *self.standardised(scores, pool, seen), weight)

    def standardised(
        self, scores: np.ndarray, pool: int | None, seen: Sequence[np.ndarray] = ()
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores standardised per row, the pool's mask or None): the part of `reweighted`
        that does not depend on the weight, so validation computes it once per pool."""
        if pool is None or pool >= scores.shape[1]:
            mean, std = scores.mean(1, keepdims=True), scores.std(1, keepdims=True)
            return (scores - mean) / np.maximum(std, 1e-12), None
        masked = scores.copy()
        for r, row in enumerate(seen):
            masked[r, row] = -np.inf
        top = np.argpartition(-masked, pool - 1, axis=1)[:, :pool]
        values = np.take_along_axis(scores, top, 1)
        mean, std = values.mean(1, keepdims=True), values.std(1, keepdims=True)
        inside = np.zeros(scores.shape, dtype=bool)
        np.put_along_axis(inside, top, True, axis=1)
        for r, row in enumerate(seen):  # seen items keep their place (exclude_seen=False)
            inside[r, row] = True
        return (scores - mean) / np.maximum(std, 1e-12), inside

    def _lifted(
        self, scores: np.ndarray, z: np.ndarray, inside: np.ndarray | None, weight: float
    ) -> np.ndarray:
        out = z + weight * self.log_popularity()
        if inside is not None:  # the rest: below the pool's lowest, in the scorer's order
            floor = np.where(inside, out, np.inf).min(1, keepdims=True)
            low = scores.min(1, keepdims=True)
            span = np.maximum(scores.max(1, keepdims=True) - low, 1e-12)
            out = np.where(inside, out, floor - 2 + (scores - low) / span)
        return np.asarray(out, dtype=np.float32)

    def log_popularity(self) -> np.ndarray:
        """log(popularity + 1/users): the prior `reweighted` adds."""
        return np.asarray(np.log(self.popularity + 1.0 / max(1, len(self.user_ids))))

    def pooled_scores(self, items: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """`score`'s values for a user's pool given as (items, raw scores): what serving
        computes from an index search's top `pool` unseen items (a scale of the raw scores,
        such as cosines for dot products, changes nothing)."""
        z = (scores - scores.mean()) / max(float(scores.std()), 1e-12)
        lifted = z + self.popularity_weight * self.log_popularity()[items]
        return np.asarray(lifted + TIE_BREAK * self.popularity[items], dtype=np.float32)

    def recommend(
        self, history: np.ndarray, k: int, *, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best items (indices, scores) for a history, without `exclude`."""
        scores = self.score([history])[0]
        if exclude is not None and len(exclude):
            scores[exclude] = -np.inf
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top, scores[top]

    def similar(
        self, item: int | None = None, *, vector: np.ndarray | None = None, k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k items most like catalogue item `item` (itself left out), or like `vector`
        (an embedded text; a content recommender only)."""
        if vector is None:
            assert item is not None
            one = np.asarray([item], dtype=np.int64)
            return self.recommend(one, k, exclude=one)
        scores = self.item_vectors() @ vector.astype(np.float32)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top, scores[top]

    def item_vectors(self) -> np.ndarray:
        """The items' vectors (content and factor rungs); an error for other rungs."""
        if self.scorer.kind != "vectors":
            raise ConfigError(
                f"a {self.scorer.kind} recommender has no item vectors",
                ["fit a content rung (strategies=['content']) to search items by vector"],
            )
        return self.scorer.arrays["vectors"]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Item texts as the vectors this recommender's items have (a content rung's)."""
        if self.encoder is None:
            raise ConfigError(
                f"this {self.scorer.kind} recommender carries no text encoder, so it cannot "
                "embed new texts",
                ["fit a content rung (strategies=['content']) to rank items by their text"],
            )
        return self.encoder.encode(list(texts))

    def add_items(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Add items to the catalogue without retraining: their text is embedded (content
        rungs); they have no popularity yet. Returns their indices; a known id is refused."""
        known = [i for i in ids if i in self._index]
        if known or len(set(ids)) != len(ids):
            raise ConfigError(f"items already in the catalogue or repeated: {known[:5]}")
        vectors = self.embed(texts)
        start = len(self.catalogue)
        self.catalogue = Catalogue((*self.catalogue.ids, *ids), (*self.catalogue.texts, *texts))
        self._index.update({item: start + i for i, item in enumerate(ids)})
        self.scorer.arrays["vectors"] = np.r_[self.item_vectors(), vectors.astype(np.float32)]
        self.popularity = np.r_[self.popularity, np.zeros(len(ids), np.float32)]
        return np.arange(start, len(self.catalogue), dtype=np.int64)

    # -- the Predictor protocol: queries are user ids -----------------------------------
    def logits(self, users: Sequence[str]) -> np.ndarray:
        rows = [self.history(u) for u in users]
        return self.score([r if r is not None else np.zeros(0, np.int64) for r in rows])

    def predict_proba(self, users: Sequence[str]) -> np.ndarray:
        logits = self.logits(users).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))

    def check(self) -> None:
        """A known user's and an empty history's scores: one finite score per item."""
        probe = self.logits([self.user_ids[0] if self.user_ids else "", ""])
        if probe.shape != (2, len(self.catalogue)) or not np.isfinite(probe).all():
            raise ValueError(
                f"scores of shape {probe.shape} for a catalogue of {len(self.catalogue)} "
                "items, or not finite"
            )

    def queries(self, data: Dataset) -> list[str]:
        events = interactions_of(data)
        return [events.user_ids[u] for u in np.unique(events.users)[:256]]

    def outcomes(self, data: Dataset) -> Outcomes:
        """Each user of `data` a query: relevant are their events there; they are scored
        from what was known before (`seen`), whose items are not recommended again. On a
        cold-start split only the held-out items compete."""
        setting = (self.popularity_weight, self.pool)
        return next(self.weighted_outcomes(data, [setting]))[1]

    def weighted_outcomes(
        self, data: Dataset, settings: Sequence[tuple[float, int | None]]
    ) -> Iterator[tuple[tuple[float, int | None], Outcomes]]:
        """`outcomes` at each (popularity weight, pool) in turn, the scorer run once and each
        pool standardised once: a setting only reweights the scores."""
        events = interactions_of(data)
        seen = events.seen
        if seen is None:
            raise ConfigError(f"the {data.name} split does not say what was known before it")
        users = np.unique(events.users)
        indptr, items = histories(seen)
        rows = [items[indptr[u] : indptr[u + 1]] for u in users]
        raw = self.scorer.score(rows, len(self.catalogue))
        relevance = np.zeros(raw.shape, dtype=np.float32)
        relevance[np.searchsorted(users, events.users), events.items] = 1.0
        cold = events.cold if data.name == "cold" else None
        standard: dict[int | None, tuple[np.ndarray, np.ndarray | None]] = {}
        for weight, pool in settings:
            if weight and pool not in standard:
                standard = {pool: self.standardised(raw, pool, rows)}  # one pool held at once
            fresh = raw.copy() if len(settings) > 1 else raw
            scores = self._finish(fresh, rows, weight, pool, standard.get(pool))
            for r, row in enumerate(rows):
                scores[r, row] = -np.inf
            if cold is not None:
                yield (weight, pool), Outcomes(relevance=relevance[:, cold],
                                               scores=scores[:, cold],
                                               item_popularity=self.popularity[cold])  # fmt: skip
            else:
                yield (weight, pool), Outcomes(relevance=relevance, scores=scores,
                                               item_popularity=self.popularity)  # fmt: skip

    # -- files -----------------------------------------------------------------------
    def save(self, folder: Path) -> dict[str, Any]:
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"scorer.{k}": np.ascontiguousarray(v) for k, v in self.scorer.arrays.items()}
        arrays |= {"indptr": self.indptr, "items": self.items, "popularity": self.popularity}
        save_file(arrays, str(folder / "recommender.safetensors"))
        catalogue = {"ids": self.catalogue.ids, "texts": self.catalogue.texts}
        (folder / "catalogue.json").write_text(json.dumps(catalogue, ensure_ascii=False))
        (folder / "users.json").write_text(json.dumps(self.user_ids, ensure_ascii=False))
        spec = {"scorer": self.scorer.kind, "settings": self.scorer.settings, "temperature": 1.0}
        if self.encoder is not None:
            self.encoder.save(folder / "encoder")
            spec["encoder"] = {
                "max_length": self.encoder.max_length,
                "batch_size": self.encoder.batch_size,
                "normalize": self.encoder.normalize,
            }
        return spec

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], labels: tuple[str, ...]) -> Recommender:
        from safetensors.numpy import load_file

        arrays = load_file(str(folder / "recommender.safetensors"))
        scorer = Scorer(
            str(spec["scorer"]),
            {k.removeprefix("scorer."): v for k, v in arrays.items() if k.startswith("scorer.")},
            dict(spec.get("settings") or {}),
        )
        raw = json.loads((folder / "catalogue.json").read_text(encoding="utf-8"))
        catalogue = Catalogue(tuple(raw["ids"]), tuple(raw["texts"]))
        users = tuple(json.loads((folder / "users.json").read_text(encoding="utf-8")))
        encoder = None
        if (settings := spec.get("encoder")) is not None:
            from frugalml.models import load_encoder

            encoder = load_encoder(
                folder / "encoder",
                max_length=int(settings["max_length"]),
                batch_size=int(settings["batch_size"]),
                normalize=bool(settings["normalize"]),
            )
        return cls(
            catalogue, users, arrays["indptr"], arrays["items"], arrays["popularity"], scorer,
            encoder,
        )  # fmt: skip
