"""Serve extension points: an application folder gets its own routes on the one server,
batched, limited, authenticated and counted like `/v1/predict`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from prometheus_client import Counter

import frugalml
from frugalml.data.split import Splits
from frugalml.errors import BundleError
from frugalml.serve.extensions import (
    APP_FILE,
    ServeContext,
    find_extension,
    register_extension,
    unregister_extension,
)
from tests.serve.harness import serving, wait_ready


def _top_label(model: Any, inputs: list[Any]) -> np.ndarray:
    """An extension's own batched operation: the index of the top class, one row each."""
    return np.asarray(model.predict_proba(inputs)).argmax(1)[:, None].astype(float)


class Shouter:
    """A toy application: `/v1/shout` answers each text's top label in capitals."""

    name = "shouter"

    def __init__(self) -> None:
        self.started = False

    def bundle(self, folder: Path) -> Path:
        return folder / json.loads((folder / APP_FILE).read_text())["bundle"]

    def mount(self, app: FastAPI, context: ServeContext) -> None:
        shouted = Counter("shouter_texts", "Texts shouted.", registry=context.registry)
        greeting = json.loads((context.folder / APP_FILE).read_text())["greeting"]

        async def start() -> None:
            self.started = True

        context.on_startup(start)

        @app.post("/v1/shout")
        async def shout(request: Request) -> dict[str, Any]:
            async with context.request(request) as body:
                texts = json.loads(body)["texts"]
                rows, model = await context.infer(texts, _top_label)
                shouted.inc(len(texts))
                labels = [model.labels[int(r[0])].upper() for r in rows]
                return {"greeting": greeting, "labels": labels, "version": model.version}


@pytest.fixture(scope="module")
def app_folder(demo_splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extension")
    run = frugalml.fit(demo_splits.train, out=root / "run", strategies=["tfidf"], ship="none")
    folder = root / "shouter"
    folder.mkdir()
    (run.run_dir / "bundle").rename(folder / "model")
    (folder / APP_FILE).write_text(
        json.dumps({"app": "shouter", "bundle": "model", "greeting": "hi"})
    )
    return folder


@pytest.fixture
def shouter() -> Iterator[Shouter]:
    extension = Shouter()
    register_extension(extension)
    yield extension
    unregister_extension("shouter")


def test_an_application_folder_is_served_with_its_routes_and_the_core_ones(
    app_folder: Path, shouter: Shouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOUT_KEY", "secret-key-of-enough-length")
    with serving(app_folder, api_key_env="SHOUT_KEY") as url:
        wait_ready(url)
        assert shouter.started
        texts = ["the app crashes when I log in", "I love the new feature"]
        auth = {"Authorization": "Bearer secret-key-of-enough-length"}
        shouted = httpx.post(url + "/v1/shout", json={"texts": texts}, headers=auth).json()
        predicted = httpx.post(url + "/v1/predict", json={"texts": texts}, headers=auth).json()
        assert shouted["greeting"] == "hi"
        assert shouted["labels"] == [p["label"].upper() for p in predicted["predictions"]]
        assert shouted["version"] == predicted["predictions"][0]["model_version"]
        assert httpx.post(url + "/v1/shout", json={"texts": texts}).status_code == 401
        metrics = httpx.get(url + "/metrics", headers=auth).text
        assert "shouter_texts_total 2.0" in metrics
        assert 'frugalml_http_requests_total{code="200",route="/v1/shout"}' in metrics


def test_the_extension_route_is_under_the_body_limit(app_folder: Path, shouter: Shouter) -> None:
    with serving(app_folder, max_body_bytes=100) as url:
        wait_ready(url)
        response = httpx.post(url + "/v1/shout", json={"texts": ["x" * 200]})
        assert response.status_code == 413


def test_a_folder_naming_an_unknown_application_is_refused_with_the_known_ones(
    tmp_path: Path,
) -> None:
    (tmp_path / APP_FILE).write_text(json.dumps({"app": "nosuchapp"}))
    with pytest.raises(BundleError, match=r"nosuchapp.*no installed package serves"):
        find_extension(tmp_path)
    (tmp_path / APP_FILE).write_text("[1, 2")
    with pytest.raises(BundleError, match="not valid JSON"):
        find_extension(tmp_path)
    (tmp_path / APP_FILE).write_text("{}")
    with pytest.raises(BundleError, match="has no 'app' field"):
        find_extension(tmp_path)


def test_a_plain_bundle_has_no_extension(app_folder: Path) -> None:
    assert find_extension(app_folder / "model") is None
