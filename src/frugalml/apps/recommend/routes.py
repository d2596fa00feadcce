"""The recommendation routes, mounted by `serving.RecommendExtension` (imported only then).

Each route resolves ids and checks the request against the model served now, then computes
through `context.infer` with its own operation, so requests of one kind are micro-batched
together on the inference thread (which also serialises adding items with searching).
"""

from __future__ import annotations

from typing import Any, Self, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from frugalml.apps.recommend.model import Recommender
from frugalml.apps.recommend.serving import (
    MAX_HISTORY,
    MAX_ITEMS_ADDED,
    MAX_K,
    Indexes,
    recommender,
    top_k,
)
from frugalml.serve.errors import ApiError
from frugalml.serve.extensions import ServeContext
from frugalml.serve.live_model import ServedModel

Req = TypeVar("Req", bound=BaseModel)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(None, description="A known user id (unknown: popularity).")
    history: list[str] | None = Field(None, max_length=MAX_HISTORY, description="Item ids.")
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = True

    @model_validator(mode="after")
    def one_query(self) -> Self:
        if (self.user is None) == (self.history is None):
            raise ValueError("give exactly one of 'user' and 'history'")
        return self


class SimilarRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str | None = Field(None, description="A catalogue item id.")
    text: str | None = Field(None, min_length=1, max_length=10_000, description="Item text.")
    k: int = Field(10, ge=1, le=MAX_K)

    @model_validator(mode="after")
    def one_query(self) -> Self:
        if (self.item is None) == (self.text is None):
            raise ValueError("give exactly one of 'item' and 'text'")
        return self


class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str = Field(min_length=1)
    text: str = Field(min_length=1, max_length=10_000)


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[NewItem] = Field(min_length=1, max_length=MAX_ITEMS_ADDED)


def parse(kind: type[Req], body: bytes) -> Req:
    try:
        return kind.model_validate_json(body)
    except ValidationError as err:
        problems = [
            {"field": ".".join(map(str, e["loc"])) or "body", "message": e["msg"]}
            for e in err.errors()
        ]
        raise ApiError(
            422, "invalid_request", "the request is not valid", problems=problems
        ) from None


def packed(results: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Top-k answers of different lengths as one array: indices then scores, -1/NaN padded."""
    width = max((len(i) for i, _ in results), default=0)
    rows = np.full((len(results), 2 * width), np.nan)
    for r, (indices, scores) in enumerate(results):
        rows[r, : len(indices)] = indices
        rows[r, width : width + len(scores)] = scores
    return rows


def unpacked(row: np.ndarray, model: Recommender) -> list[dict[str, Any]]:
    width = len(row) // 2
    catalogue = model.catalogue
    return [
        {"item": catalogue.ids[int(i)], "score": float(s), "text": catalogue.texts[int(i)]}
        for i, s in zip(row[:width], row[width:], strict=True)
        if not np.isnan(i)
    ]


def add_routes(app: FastAPI, context: ServeContext, indexes: Indexes) -> None:
    fallbacks = Counter(
        "frugalml_recommend_fallbacks", "Unknown users answered by popularity.",
        registry=context.registry,
    )  # fmt: skip

    def query(model: Recommender, req: RecommendRequest) -> np.ndarray:
        if req.user is not None:
            history = model.history(req.user)
            return history if history is not None else np.zeros(0, np.int64)
        return model.item_indices(req.history or [])[0]

    def recommend_op(served: ServedModel, inputs: list[RecommendRequest]) -> np.ndarray:
        model = recommender(served)
        index = indexes.of(model)
        return packed([top_k(model, index, query(model, r), r.k, r.exclude_seen) for r in inputs])

    def similar_op(served: ServedModel, inputs: list[SimilarRequest]) -> np.ndarray:
        model = recommender(served)
        index = indexes.of(model)
        texts = [r.text for r in inputs if r.text is not None]
        vectors = iter(model.embed(texts) if texts else [])
        results = []
        for r in inputs:
            if r.text is not None:
                vector = next(vectors)
                if index is None:
                    results.append(model.similar(vector=vector, k=r.k))
                else:
                    found, scores = index.search(vector, r.k)
                    results.append((found[0], scores[0]))
                continue
            item = model.item_indices([r.item or ""])[0]
            if index is None:
                results.append(model.similar(int(item[0]), k=r.k))
                continue
            found, scores = index.search(index.vectors[item], r.k + 1)
            keep = (found[0] >= 0) & (found[0] != item[0])
            results.append((found[0][keep][: r.k], scores[0][keep][: r.k]))
        return packed(results)

    def add_op(served: ServedModel, inputs: list[AddItemsRequest]) -> np.ndarray:
        model = recommender(served)
        index = indexes.of(model)
        rows = []
        for r in inputs:
            added = model.add_items([i.item for i in r.items], [i.text for i in r.items])
            if index is not None:
                index.add(model.item_vectors()[added])
            rows.append(len(model.catalogue))
        return np.asarray(rows, dtype=np.float64)[:, None]

    @app.post("/v1/recommend")
    async def recommend(request: Request) -> dict[str, Any]:
        async with context.request(request) as body:
            req = parse(RecommendRequest, body)
            rows, served = await context.infer([req], recommend_op)
            model = recommender(served)
            answer: dict[str, Any] = {"items": unpacked(rows[0], model), "fallback": None}
            if req.user is not None and model.history(req.user) is None:
                fallbacks.inc()
                answer["fallback"] = "popularity"
                answer["message"] = f"unknown user {req.user!r}: the most popular items"
            if req.history is not None:
                answer["unknown_items"] = model.item_indices(req.history)[1]
            return {**answer, "model_version": served.version}

    @app.post("/v1/similar")
    async def similar(request: Request) -> dict[str, Any]:
        async with context.request(request) as body:
            req = parse(SimilarRequest, body)
            model = recommender(context.model())
            if req.item is not None and model.item_indices([req.item])[1]:
                raise ApiError(404, "unknown_item", f"no item {req.item!r} in the catalogue")
            if req.text is not None and model.encoder is None:
                raise ApiError(
                    422, "no_text_encoder",
                    f"this {model.scorer.kind} recommender cannot embed text; serve a content "
                    "recommender (strategies=['content']) to find items like a text",
                )  # fmt: skip
            rows, served = await context.infer([req], similar_op)
            model = recommender(served)
            return {"items": unpacked(rows[0], model), "model_version": served.version}

    @app.post("/v1/items")
    async def add_items(request: Request) -> dict[str, Any]:
        async with context.request(request) as body:
            req = parse(AddItemsRequest, body)
            model = recommender(context.model())
            ids = [i.item for i in req.items]
            known = model.item_indices(ids)[0]
            if len(known) or len(set(ids)) != len(ids):
                raise ApiError(409, "known_item", "items already in the catalogue or repeated")
            if model.encoder is None:
                raise ApiError(
                    422, "no_text_encoder",
                    f"this {model.scorer.kind} recommender cannot embed new items; serve a "
                    "content recommender (strategies=['content'])",
                )  # fmt: skip
            rows, served = await context.infer([req], add_op)
            return {"added": len(ids), "catalogue": int(rows[0, 0]),
                    "model_version": served.version}  # fmt: skip

    @app.get("/v1/index")
    async def index_info() -> dict[str, Any]:
        model = recommender(context.model())
        index = indexes.of(model)
        return {
            "kind": index.kind if index else "scores",
            "items": len(model.catalogue),
            "exact_below": indexes.exact_below,
            "recall_at_10_vs_exact": indexes.recall if index else None,
        }
