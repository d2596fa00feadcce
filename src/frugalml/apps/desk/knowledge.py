"""The hybrid knowledge index: BM25 (the `bm25s` library) and dense vectors from the intent
bundle's `embed()`, fused by weighted reciprocal rank.

Words and meaning fail differently: BM25 finds the entry that names the same product or
error code, the dense vectors the one that says the same thing in other words. Reciprocal-rank
fusion needs no score calibration between the two; the dense side's weight is chosen on
held-out questions. Dense search is exact (a matrix product) below `vector_index.EXACT_BELOW`
entries and an HNSW graph (faiss) above; a question's fusion then looks at each side's top
CANDIDATES only, the same ranking as fusing every entry (`ranked`, which measures).

Saved as the entries (JSON), their vectors and the graph, if any (safetensors); BM25 is
rebuilt from the entries' text on load (a second or less for 10k entries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from frugalml.apps.desk.inputs import Entry
from frugalml.errors import require_extra
from frugalml.models.vector_index import VectorIndex

RRF_K = 60  # the constant of Cormack et al. (2009): ranks past ~60 barely count
CANDIDATES = 50  # each side's top entries that enter the fusion


@dataclass(frozen=True)
class Hit:
    """One retrieved entry, with what each side thought of it."""

    entry: int
    score: float  # fused reciprocal-rank score
    similarity: float  # cosine of the question to the entry (what "answerable" thresholds)
    bm25: float


def entry_text(entry: Entry) -> str:
    """What an entry is found by: its title and question (the answer is what is shown)."""
    return f"{entry.title}. {entry.question}" if entry.title else entry.question


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    import bm25s  # type: ignore[import-untyped]

    tokens = bm25s.tokenize(list(texts), stopwords="english", return_ids=False, show_progress=False)
    return [list(t) for t in tokens]


class KnowledgeIndex:
    """Entries, their vectors and a BM25 index over their text."""

    def __init__(
        self,
        entries: Sequence[Entry],
        vectors: np.ndarray,
        dense_weight: float = 0.5,
        *,
        graph: np.ndarray | None = None,
    ) -> None:
        require_extra("The desk's knowledge index", "desk", "bm25s")
        import bm25s

        self.entries = tuple(entries)
        self.dense = VectorIndex(vectors, graph=graph)
        self.dense_weight = dense_weight
        self.bm25 = bm25s.BM25()
        corpus = _tokens([entry_text(e) for e in self.entries])
        # bm25s cannot index an entry with no word left after stop words: give it a token
        self.bm25.index([t or ["\x00"] for t in corpus], show_progress=False)

    @property
    def vectors(self) -> np.ndarray:
        """The entries' unit vectors (the dense index holds them)."""
        return self.dense.vectors

    def __len__(self) -> int:
        return len(self.entries)

    def bm25_scores(self, queries: Sequence[str]) -> np.ndarray:
        """(len(queries), len(entries)) BM25 scores."""
        out = np.zeros((len(queries), len(self.entries)), dtype=np.float32)
        for row, tokens in enumerate(_tokens(queries)):
            if tokens:
                out[row] = self.bm25.get_scores(tokens)
        return out

    def similarities(self, query_vectors: np.ndarray) -> np.ndarray:
        return np.asarray(np.asarray(query_vectors, dtype=np.float32) @ self.vectors.T)

    def search(
        self,
        queries: Sequence[str],
        query_vectors: np.ndarray,
        *,
        k: int = 5,
        dense_weight: float | None = None,
    ) -> list[list[Hit]]:
        """The top `k` entries for each query, best first."""
        return hits_from(self.top(queries, query_vectors, k=k, dense_weight=dense_weight))

    def top(
        self,
        queries: Sequence[str],
        query_vectors: np.ndarray,
        *,
        k: int = 5,
        dense_weight: float | None = None,
    ) -> np.ndarray:
        """(queries, 4, k): entry, fused score, cosine and BM25 of each query's top `k`, as
        one array, so that a server's batched operation can return it. Only each side's top
        CANDIDATES are fused (what `fuse` ranks first), and BM25 runs only when it has weight."""
        weight = self.dense_weight if dense_weight is None else dense_weight
        query_vectors = np.asarray(query_vectors, dtype=np.float32)
        k = min(k, len(self.entries))
        dense, _ = self.dense.search(query_vectors, max(k, CANDIDATES))
        lexical = self.bm25_scores(queries) if weight < 1 else None
        out = np.zeros((len(queries), 4, k), dtype=np.float64)
        for row in range(len(queries)):
            near = dense[row][dense[row] >= 0]  # a graph pads a short answer with -1
            words = np.zeros(0, np.int64) if lexical is None else _positive_top(lexical[row])
            found = np.unique(np.r_[near, words])
            sims = self.vectors[found] @ query_vectors[row]
            fused = 1e-6 * sims.astype(np.float64)
            fused += weight * _ranks_of(found, near[:CANDIDATES])
            fused += (1 - weight) * _ranks_of(found, words)
            best = _top(fused, k)
            bm25 = np.zeros(len(best)) if lexical is None else lexical[row, found[best]]
            out[row, :, : len(best)] = (found[best], fused[best], sims[best], bm25)
        return out

    def ranked(
        self, queries: Sequence[str], query_vectors: np.ndarray, dense_weight: float
    ) -> np.ndarray:
        """(queries, entries) fused scores: for measuring and choosing the weight."""
        return fuse(self.similarities(query_vectors), self.bm25_scores(queries), dense_weight)

    def save_entries(self) -> list[dict[str, str]]:
        return [e.to_dict() for e in self.entries]

    def arrays(self) -> dict[str, np.ndarray]:
        """What to save in the desk's safetensors (keys prefixed 'knowledge.')."""
        return {"vectors": self.vectors, **self.dense.arrays()}

    @classmethod
    def restore(
        cls,
        entries: list[dict[str, Any]],
        vectors: np.ndarray,
        dense_weight: float,
        graph: np.ndarray | None = None,
    ) -> KnowledgeIndex:
        return cls([Entry(**e) for e in entries], vectors, dense_weight, graph=graph)


def hits_from(top: np.ndarray, k: int | None = None) -> list[list[Hit]]:
    """`KnowledgeIndex.top`'s array back as hits (the first `k` of each row)."""
    return [[Hit(int(i), float(f), float(s), float(b)) for i, f, s, b in row.T[:k]] for row in top]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def _positive_top(scores: np.ndarray) -> np.ndarray:
    """The top CANDIDATES entries of one row with a positive score (BM25 found a word)."""
    top = _top(scores, min(CANDIDATES, len(scores)))
    return np.asarray(top[scores[top] > 0])


def _ranks_of(entries: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """1/(RRF_K + rank) of each of `entries` in `ranked` (best first), 0 where absent."""
    rr = dict(zip(ranked.tolist(), 1.0 / (RRF_K + 1 + np.arange(len(ranked))), strict=True))
    return np.array([rr.get(e, 0.0) for e in entries.tolist()])


def _reciprocal_ranks(scores: np.ndarray, *, positive_only: bool = False) -> np.ndarray:
    """1/(RRF_K + rank) for each side's top CANDIDATES per row, 0 elsewhere (and, with
    `positive_only`, for zero scores: BM25 found no shared word)."""
    out = np.zeros_like(scores, dtype=np.float64)
    n = min(CANDIDATES, scores.shape[1])
    for row in range(len(scores)):
        top = _top(scores[row], n)
        if positive_only:
            top = top[scores[row, top] > 0]
        out[row, top] = 1.0 / (RRF_K + 1 + np.arange(len(top)))
    return out


def fuse(similarities: np.ndarray, lexical: np.ndarray, dense_weight: float) -> np.ndarray:
    """Weighted reciprocal-rank fusion; the cosine breaks ties (and orders what neither side
    ranked), so the weight 1.0 is dense search and 0.0 is BM25 with a dense tie-break."""
    dense = _reciprocal_ranks(similarities) if dense_weight > 0 else 0.0
    words = _reciprocal_ranks(lexical, positive_only=True) if dense_weight < 1 else 0.0
    fused = dense_weight * dense + (1 - dense_weight) * words
    return np.asarray(fused + 1e-6 * similarities, dtype=np.float64)


# -- measuring ---------------------------------------------------------------------------------


def reciprocal_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Each query's 1/rank of its first right entry (0 when none is right)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    first = np.where(hits.any(1), hits.argmax(1), -1)
    return np.where(first >= 0, 1.0 / (first + 1), 0.0)


def rank_metrics(scores: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """Recall@1, Recall@5 and MRR from (queries, entries) scores and a boolean relevance
    matrix of the same shape (a query may have several right entries, e.g. of its intent)."""
    return _summary(reciprocal_ranks(scores, relevant))


def _summary(rr: np.ndarray) -> dict[str, float]:
    return {
        "recall@1": float(np.mean(rr == 1.0)),
        "recall@5": float(np.mean(rr >= 1 / 5)),
        "mrr": float(rr.mean()),
    }


WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)


def choose_weight(
    index: KnowledgeIndex, queries: Sequence[str], vectors: np.ndarray, relevant: np.ndarray
) -> tuple[float, dict[str, dict[str, float]]]:
    """The dense weight for held-out questions: the better single retriever (weight 0 or 1)
    unless a mix beats it on MRR by more than two standard errors of the paired per-question
    difference. On Banking77 mixes won on validation by noise (+0.05 MRR points on 1,000
    questions) and lost on test; a mix must earn its place."""
    sims = index.similarities(vectors)
    lexical = index.bm25_scores(queries)
    rr = {w: reciprocal_ranks(fuse(sims, lexical, w), relevant) for w in WEIGHTS}
    table = {str(w): _summary(r) for w, r in rr.items()}
    single = max((0.0, 1.0), key=lambda w: rr[w].mean())
    mix = max(WEIGHTS, key=lambda w: (round(float(rr[w].mean()), 6), -abs(w - 0.5)))
    gain = rr[mix] - rr[single]
    if len(gain) > 1 and gain.mean() > 2 * gain.std(ddof=1) / np.sqrt(len(gain)):
        return mix, table
    return single, table


def answerable_threshold(
    similarity: np.ndarray, correct: np.ndarray, precision: float
) -> float | None:
    """The lowest top-hit similarity at which the answers given are right at least
    `precision` of the time on held-out questions (None when no threshold reaches it)."""
    order = np.argsort(-similarity, kind="stable")
    right = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.nonzero(right >= precision)[0]
    if len(ok) == 0:
        return None
    return float(similarity[order][ok[-1]])
