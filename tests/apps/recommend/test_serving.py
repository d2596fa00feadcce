"""`frugalml serve` on recommendation bundles, over real HTTP on 127.0.0.1: top-k for users
and histories, similar items by id and by text, items added without retraining, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

import frugalml
from frugalml.apps import recommend
from frugalml.apps.recommend.data import Catalogue
from frugalml.apps.recommend.model import Recommender, Scorer
from frugalml.apps.recommend.serving import Indexes, top_k
from frugalml.models.vector_index import IndexMismatchError, VectorIndex
from frugalml.serve.extensions import APP_FILE
from tests.serve.harness import serving, wait_ready


@pytest.fixture(scope="module")
def content_app(content_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An application folder around a content bundle, its index an HNSW graph (threshold 1)."""
    folder = tmp_path_factory.mktemp("recommend-app") / "app"
    shutil.copytree(content_run / "refit" / "bundle", folder / "model")
    app = {"app": "recommend", "bundle": "model", "exact_below": 1}
    (folder / APP_FILE).write_text(json.dumps(app))
    return folder


@pytest.fixture(scope="module")
def ease_bundle(ease_run: frugalml.FitResult) -> Path:
    return ease_run.bundle.path


def test_a_content_app_recommends_finds_similar_items_and_adds_new_ones(
    content_app: Path, parts: recommend.RecSplits
) -> None:
    train = parts.train.records
    assert isinstance(train, recommend.Interactions)
    with serving(content_app) as url:
        wait_ready(url)
        index = httpx.get(url + "/v1/index").json()
        assert index["kind"] == "hnsw" and index["recall_at_10_vs_exact"] >= 0.9
        answer = httpx.post(url + "/v1/recommend", json={"user": "u1", "k": 5}).json()
        seen = {train.catalogue.ids[i] for i in train.items[train.users == 1]}
        assert len(answer["items"]) == 5 and answer["fallback"] is None
        assert not seen & {i["item"] for i in answer["items"]}
        answer = httpx.post(url + "/v1/recommend", json={"user": "nobody"}).json()
        assert answer["fallback"] == "popularity" and "unknown user" in answer["message"]
        answer = httpx.post(
            url + "/v1/recommend", json={"history": ["i1", "i2", "nope"], "k": 3}
        ).json()
        assert answer["unknown_items"] == ["nope"]
        assert {i["item"] for i in answer["items"]}.isdisjoint({"i1", "i2"})
        similar = httpx.post(url + "/v1/similar", json={"item": "i1", "k": 4}).json()
        assert len(similar["items"]) == 4 and "i1" not in {i["item"] for i in similar["items"]}
        added = httpx.post(
            url + "/v1/items", json={"items": [{"item": "n1", "text": "robot kiss robot"}]}
        ).json()
        assert added == {"added": 1, "catalogue": 21, "model_version": added["model_version"]}
        found = httpx.post(url + "/v1/similar", json={"text": "robot kiss robot", "k": 1}).json()
        assert found["items"][0]["item"] == "n1"  # searchable at once, no retraining


def test_bad_recommend_requests_are_answered_with_what_is_wrong(content_app: Path) -> None:
    with serving(content_app) as url:
        wait_ready(url)
        for body in ({"user": "u1", "k": 0}, {"user": "u1", "history": []}, {}, {"k": 5000}):
            response = httpx.post(url + "/v1/recommend", json=body)
            assert response.status_code == 422, body
        response = httpx.post(url + "/v1/similar", json={"item": "nope"})
        assert response.status_code == 404 and "nope" in response.text
        response = httpx.post(url + "/v1/items", json={"items": [{"item": "i1", "text": "x"}]})
        assert response.status_code == 409


def test_an_ease_bundle_is_claimed_by_its_task_and_refuses_text(ease_bundle: Path) -> None:
    with serving(ease_bundle) as url:
        wait_ready(url)
        assert httpx.get(url + "/v1/index").json()["kind"] == "scores"
        answer = httpx.post(url + "/v1/recommend", json={"history": ["i1", "i2"], "k": 5}).json()
        assert all(int(i["item"][1:]) < 10 for i in answer["items"])  # the space-war taste
        similar = httpx.post(url + "/v1/similar", json={"item": "i12", "k": 3}).json()
        assert all(int(i["item"][1:]) >= 10 for i in similar["items"])
        response = httpx.post(url + "/v1/similar", json={"text": "space war"})
        assert response.status_code == 422 and "cannot embed" in response.text


def _vector_recommender(vectors: np.ndarray, graph: np.ndarray | None) -> Recommender:
    n = len(vectors)
    arrays = {"vectors": vectors} | ({"index": graph} if graph is not None else {})
    return Recommender(
        Catalogue(tuple(f"i{i}" for i in range(n)), tuple(f"item {i}" for i in range(n))),
        ("u0",), np.array([0, 2]), np.array([0, 1]), np.zeros(n, np.float32),
        Scorer("vectors", arrays, {"half_life": 0.0}),
    )  # fmt: skip


def test_a_graph_saved_with_the_bundle_is_served_above_the_threshold_only() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    graph = VectorIndex(vectors, exact_below=0).arrays()["hnsw"]
    model = _vector_recommender(vectors, graph)
    index = Indexes(exact_below=100).of(model)
    assert index is not None and index.kind == "hnsw"
    assert (index.search(vectors[:20], 1)[0][:, 0] == np.arange(20)).all()
    assert Indexes(exact_below=1000).of(model).kind == "exact"  # type: ignore[union-attr]
    stale = VectorIndex(vectors[:250], exact_below=0).arrays()["hnsw"]  # not these vectors
    with pytest.raises(IndexMismatchError, match="rebuild"):
        Indexes(exact_below=100).of(_vector_recommender(vectors, stale))


def test_a_pooled_bundle_serves_what_it_was_evaluated_on(
    parts: recommend.RecSplits, tmp_path: Path
) -> None:
    result = recommend.fit(
        parts, out=tmp_path / "run", strategies=("ease",), refit=False,
        options={"ease": {"lambdas": [10.0], "popularity_weights": [-2.0], "pools": [4]}},
    )  # fmt: skip
    model = frugalml.load(result.bundle.path).predictor
    assert isinstance(model, Recommender) and (model.popularity_weight, model.pool) == (-2.0, 4)
    with serving(result.bundle.path) as url:
        wait_ready(url)
        for user in ("u0", "u1", "u7"):
            history = model.history(user)
            assert history is not None
            expected = model.recommend(history, 4, exclude=history)[0]
            served = httpx.post(url + "/v1/recommend", json={"user": user, "k": 4}).json()
            ids = [model.catalogue.ids[i] for i in expected]
            assert [i["item"] for i in served["items"]] == ids


def test_an_index_ranks_a_pool_as_scoring_every_item_does() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((200, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    model = _vector_recommender(vectors, None)
    model.popularity = rng.random(200).astype(np.float32)
    model.scorer.settings |= {"popularity": -1.0, "pool": 20}
    index = Indexes(exact_below=1000).of(model)
    for history in (np.array([0, 5, 9]), np.array([17])):
        exact = model.recommend(history, 10, exclude=history)
        found = top_k(model, index, history, 10, exclude=True)
        assert found[0].tolist() == exact[0].tolist()
        assert np.allclose(found[1], exact[1], atol=1e-4)
