"""The desk's nearest-neighbour search: the HNSW graph above a size, and the candidate fusion
that the knowledge index serves, checked against exact search and the full fusion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frugalml.apps import desk as desk_app
from frugalml.apps.desk import knowledge as kn
from frugalml.apps.desk.inputs import Entry
from frugalml.apps.desk.oos import Knn, Signals, restore
from frugalml.data import DEMO_INTENTS, out_of_scope_texts
from frugalml.models import vector_index as vectors
from tests.models.test_vector_index import clustered


def test_knn_scores_from_the_graph_match_exact_ones_and_restore() -> None:
    base, queries = clustered(3000), clustered(200, seed=1)
    signals = Signals(np.zeros((200, 2)), np.full((200, 2), 0.5), queries)
    exact = Knn(vectors.VectorIndex(base), k=5)
    graph = Knn(vectors.VectorIndex(base, exact_below=1000), k=5)
    np.testing.assert_allclose(graph.score(signals), exact.score(signals), atol=0.02)
    again = restore("knn", graph.settings(), graph.arrays())
    assert isinstance(again, Knn) and again.neighbours.kind == "hnsw"
    np.testing.assert_array_equal(again.score(signals), graph.score(signals))


class _Words(kn.KnowledgeIndex):
    """An index whose BM25 scores are given (random, with zeros: no shared word)."""

    lexical: np.ndarray

    def bm25_scores(self, queries: Any) -> np.ndarray:
        return self.lexical


@pytest.mark.parametrize("weight", [0.0, 0.35, 1.0])
def test_fusing_each_sides_candidates_ranks_as_fusing_every_entry(weight: float) -> None:
    n, rng = 400, np.random.default_rng(2)
    entries = [Entry(f"question {i}", f"answer {i}") for i in range(n)]
    index = _Words(entries, clustered(n), weight)
    queries = clustered(30, seed=3)
    index.lexical = np.where(rng.random((30, n)) < 0.2, rng.random((30, n)) * 10, 0.0)
    top = index.top(["q"] * 30, queries, k=10)
    full = index.ranked(["q"] * 30, queries, weight)
    want = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(top[:, 0].astype(int), want)
    np.testing.assert_allclose(top[:, 1], np.take_along_axis(full, want, 1), atol=1e-9)
    cosines = np.take_along_axis(queries @ index.vectors.T, want, 1)
    np.testing.assert_allclose(top[:, 2], cosines, atol=1e-6)


def test_a_desk_over_the_size_saves_its_graphs_and_answers_with_them(
    tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectors, "EXACT_BELOW", 10)  # every set of vectors is "large"
    desk_app.build(
        DEMO_INTENTS,
        answers=desk_app.DEMO_ANSWERS,
        knowledge=desk_app.DEMO_FAQ,
        oos=out_of_scope_texts(),
        out=tmp_path / "desk",
        strategies=["frozen_probe"],
        options={"frozen_probe": {"backbone": str(tiny_backbone), "cache": False}},
        ship="none",
        goals=desk_app.Goals(oos_recall=0.9),
    )
    from safetensors.numpy import load_file

    saved = load_file(str(tmp_path / "desk" / "arrays.safetensors"))
    assert "knowledge.hnsw" in saved
    desk = desk_app.load(tmp_path / "desk")
    assert desk.index.dense.kind == "hnsw"
    if isinstance(desk.detector, Knn):
        assert "detector.hnsw" in saved and desk.detector.neighbours.kind == "hnsw"
    reply = desk.ask(["Where can I find my IBAN?"], k=3)[0]
    assert "Finding your IBAN" in [e["title"] for e in reply.evidence]
