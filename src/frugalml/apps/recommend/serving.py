"""`frugalml serve` on a recommendation bundle: `POST /v1/recommend`, `POST /v1/similar`,
`POST /v1/items` (add items without retraining) and `GET /v1/index` (the item index and its
recall vs exact search).

A bundle is claimed by its task ("recommendation"); an application folder (`app.json`:
`{"app": "recommend", "bundle": "model", "exact_below": 50000}`) may set the index's size
threshold. A content bundle may carry its HNSW graph (scorer array `index`), used above that
threshold instead of building one at the first request. Requests are micro-batched by
operation through the server's `ServeContext`, so they share its limits, auth and metrics.
Only light imports at the top (see extensions.py).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from frugalml.serve.extensions import APP_FILE

if TYPE_CHECKING:
    import numpy as np
    from fastapi import FastAPI

    from frugalml.apps.recommend.model import Recommender
    from frugalml.models.vector_index import VectorIndex
    from frugalml.serve.extensions import ServeContext
    from frugalml.serve.live_model import ServedModel

MAX_K = 1000
MAX_HISTORY = 10_000
MAX_ITEMS_ADDED = 1000
# items: exact search below this many. A catalogue is searched once per request (the desk
# searches its sets several times per question, so it switches at 5,000).
EXACT_BELOW = 50_000


class RecommendExtension:
    name = "recommend"

    def bundle(self, folder: Path) -> Path:
        app_file = folder / APP_FILE
        if app_file.is_file():
            return folder / str(json.loads(app_file.read_text(encoding="utf-8")).get("bundle"))
        return folder

    def mount(self, app: FastAPI, context: ServeContext) -> None:
        from frugalml.apps.recommend.routes import add_routes

        add_routes(app, context, Indexes(_exact_below(context.folder)))


def _exact_below(folder: Path) -> int:
    app_file = folder / APP_FILE
    if app_file.is_file():
        return int(json.loads(app_file.read_text(encoding="utf-8")).get("exact_below", EXACT_BELOW))
    return EXACT_BELOW


class Indexes:
    """One item index per served model (a reload gets a new one), built on first use."""

    def __init__(self, exact_below: int) -> None:
        self.exact_below = exact_below
        self._lock = threading.Lock()
        self._built: tuple[int, VectorIndex | None] | None = None
        self.recall: float | None = None

    def of(self, model: Recommender) -> VectorIndex | None:
        """The model's index, or None when its items have no vectors (item-item rungs)."""
        from frugalml.models.vector_index import VectorIndex

        with self._lock:
            if self._built is None or self._built[0] != id(model):
                index = None
                if model.scorer.kind == "vectors":
                    vectors = model.item_vectors()
                    # a graph saved with the bundle (scorer array "index", from
                    # `VectorIndex.arrays()`): a large catalogue's is minutes to build
                    saved = model.scorer.arrays.get("index")
                    graph = saved if len(vectors) >= self.exact_below else None
                    index = VectorIndex(
                        vectors, graph=graph, exact_below=self.exact_below, extra="recommend"
                    )
                    self.recall = index.recall_vs_exact()
                self._built = (id(model), index)
            return self._built[1]


def recommender(served: ServedModel) -> Recommender:
    from frugalml.apps.recommend.model import Recommender
    from frugalml.serve.errors import ApiError

    model = served.bundle.predictor
    if not isinstance(model, Recommender):
        raise ApiError(409, "not_a_recommender", f"{served.bundle.path} is not a recommender")
    return model


def top_k(
    model: Recommender, index: VectorIndex | None, history: np.ndarray, k: int, exclude: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A history's k best items, as `model.recommend` ranks them: through the index for
    vector rungs with a history when the ranking needs only the user's best items (no
    popularity weight, or one applied within a pool of at least k unseen items), else by
    scoring every item."""
    import numpy as np

    weight, pool = model.popularity_weight, model.pool
    pooled = pool is not None and exclude and k <= pool
    if index is None or not len(history) or (weight and not pooled):
        return model.recommend(history, k, exclude=history if exclude else None)
    user = model.scorer.user_vectors([history])
    wanted = (pool if weight and pool else k) + (len(history) if exclude else 0)
    found, scores = index.search(user, min(wanted, len(index)))
    keep = (found[0] >= 0) & ~(np.isin(found[0], history) if exclude else False)
    found, scores = found[0][keep], scores[0][keep]
    if weight and pool:
        found, scores = found[:pool], model.pooled_scores(found[:pool], scores[:pool])
        order = np.argsort(-scores, kind="stable")
        found, scores = found[order], scores[order]
    return found[:k], scores[:k]


EXTENSION = RecommendExtension()
