"""The vector index the desk and the recommender share: exact below a size, HNSW above."""

from __future__ import annotations

import numpy as np
import pytest

from frugalml.models import vector_index as vectors
from frugalml.models.vector_index import VectorIndex


def clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 centres, as sentence vectors of a few topics are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.4 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_the_graph_finds_what_exact_search_finds_and_survives_saving() -> None:
    base, queries = clustered(3000), clustered(200, seed=1)
    exact = vectors.VectorIndex(base)
    graph = vectors.VectorIndex(base, exact_below=1000)
    assert (exact.kind, graph.kind) == ("exact", "hnsw") and exact.arrays() == {}
    want, want_sims = exact.search(queries, 10)
    got, got_sims = graph.search(queries, 10)
    assert np.mean(got[:, 0] == want[:, 0]) >= 0.98
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)]) >= 0.95
    np.testing.assert_allclose(got_sims[:, 0], want_sims[:, 0], atol=0.02)
    # saved as bytes and loaded back: the same graph (built on one thread: reproducible)
    saved = graph.arrays()["hnsw"]
    assert saved.dtype == np.uint8
    loaded = vectors.VectorIndex(base, graph=saved)
    assert np.array_equal(loaded.search(queries, 10)[0], got)
    rebuilt = vectors.VectorIndex(base, exact_below=1000)
    assert np.array_equal(rebuilt.arrays()["hnsw"], saved)
    with pytest.raises(ValueError, match="not these 100"):
        vectors.VectorIndex(base[:100], graph=saved)


def test_the_hnsw_index_finds_what_exact_search_finds() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32))
    vectors = (centres[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 32))).astype(
        np.float32
    )
    graph, exact = VectorIndex(vectors, exact_below=1), VectorIndex(vectors, exact_below=10_000)
    assert graph.kind == "hnsw" and exact.kind == "exact"
    assert graph.recall_vs_exact(k=10) >= 0.95 and exact.recall_vs_exact() == 1.0
    graph.add(vectors[:1] * 10)  # an item added later is found at once
    assert graph.search(vectors[:1], 1)[0][0, 0] == 5000
