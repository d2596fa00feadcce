"""A vector index over item vectors: exact below a size, an HNSW graph (faiss) above it.

Exact search over a few thousand items takes well under a millisecond; a graph pays off on
large catalogues, at a recall below 1 that `recall_vs_exact` measures on the index itself.
Items are added without rebuilding (embed their text, `add`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from frugalml.errors import MissingExtraError, installed

EXACT_BELOW = 50_000  # items: exact search below this many
HNSW_LINKS = 32  # graph neighbours per item
HNSW_EF_SEARCH = 128  # candidates visited per query


class ItemIndex:
    """Inner-product top-k over item vectors; thread-safe (adds and searches take a lock)."""

    def __init__(self, vectors: np.ndarray, *, exact_below: int = EXACT_BELOW) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.kind = "exact" if len(vectors) < exact_below else "hnsw"
        self._graph: Any = None
        self._lock = threading.Lock()
        if self.kind == "hnsw":
            self._graph = _hnsw(self.vectors.shape[1])
            self._graph.add(self.vectors)

    def __len__(self) -> int:
        return len(self.vectors)

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            self.vectors = np.r_[self.vectors, vectors]
            if self._graph is not None:
                self._graph.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores), each (len(queries), k), best first; -1 pads a short answer."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            if self._graph is not None:
                scores, indices = self._graph.search(queries, k)
                return indices.astype(np.int64), scores
            return exact_top(queries @ self.vectors.T, k)

    def recall_vs_exact(self, k: int = 10, n_queries: int = 200, seed: int = 0) -> float:
        """Share of the exact top-k the index finds, for item vectors as queries."""
        if self._graph is None:
            return 1.0
        rng = np.random.default_rng(seed)
        queries = self.vectors[rng.choice(len(self), min(n_queries, len(self)), replace=False)]
        found, _ = self.search(queries, k)
        truth, _ = exact_top(queries @ self.vectors.T, k)
        hits = [len(set(f) & set(t)) for f, t in zip(found, truth, strict=True)]
        return float(np.sum(hits) / truth.size)


def exact_top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best (indices, scores), best first."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return top.astype(np.int64), np.take_along_axis(scores, top, axis=1)


def _hnsw(dim: int) -> Any:
    if not installed("faiss"):
        raise MissingExtraError("An approximate item index (large catalogues)", "recommend")
    import faiss

    graph = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efSearch = HNSW_EF_SEARCH
    graph.hnsw.efConstruction = 80
    return graph
