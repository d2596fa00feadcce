"""`frugalml serve DESK`: `/v1/predict` serves the desk's intent bundle, and the desk adds

- `POST /v1/desk/ask` `{"texts": [...], "k": 3, "thresholds": {"oos": ..., ...}}`: each
  question routed, batched with other requests (one encoder pass gives logits and vectors),
  under the server's limits, auth and metrics, plus `desk_routes_total{route}`;
- `GET /desk`: a small chat page (plain HTML and JS from the package, no CDN).

The server imports this module to mount it (it has FastAPI loaded already); the desk's own
modules load in `mount`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request  # routes' annotations are resolved from the module's names

if TYPE_CHECKING:
    from fastapi import FastAPI

    from frugalml.serve.extensions import ServeContext

PAGE = Path(__file__).parent / "static" / "desk.html"


MAX_K = 20  # the most evidence a request may ask for; the batch computes this many


def batched_operation(desk: Any) -> Any:
    """The batched operation: one encoder pass, the out-of-scope scores and the knowledge
    search for a whole batch at once, in the inference thread (run per request in a thread
    pool they contended for the cores), as one row per question:
    [logits | vectors | oos score | top MAX_K (entry, fused, cosine, bm25)]."""
    from threadpoolctl import ThreadpoolController

    from frugalml.apps.desk.desk import signals_from

    # one BLAS thread: the encoder's runtime threads still spin on the other cores, and a
    # second BLAS thread fighting them was measured to double the desk's extra time. One
    # controller for the server's life: `threadpool_limits(...)` scans the loaded libraries
    # on every call (0.5 ms, a tenth of a batch-1 question's extra work).
    blas = ThreadpoolController()

    def op(model: Any, texts: list[str]) -> np.ndarray:
        logits, vectors = model.bundle.logits_and_embed(texts)
        signals = signals_from(logits, vectors, model.bundle.temperature)
        with blas.limit(limits=1, user_api="blas"):
            scores = desk.detector.score(signals)
            top = desk.index.top(texts, vectors, k=MAX_K).reshape(len(texts), -1)
        return np.hstack([logits, vectors, scores[:, None], top])

    return op


def _parse(body: bytes, settings: Any) -> tuple[list[str], int, dict[str, float | None]]:
    from frugalml.serve.errors import ApiError
    from frugalml.serve.schemas import parse_predict

    try:
        data = json.loads(body)
    except ValueError as err:
        raise ApiError(422, "invalid_json", f"the body is not valid JSON: {err}") from None
    example = '{"texts": ["..."], "k": 3, "thresholds": {"oos": 0.5}}'
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", f"the body must be a JSON object like {example}")
    unknown = sorted(set(data) - {"texts", "k", "thresholds"})
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown field {unknown[0]!r}; send {example}")
    texts = parse_predict(
        json.dumps({"texts": data.get("texts")}).encode(), settings, tabular=False
    )
    k = data.get("k", 3)
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= MAX_K:
        raise ApiError(422, "invalid_k", f"k must be a whole number from 0 to {MAX_K}; got {k!r}")
    thresholds = data.get("thresholds") or {}
    allowed = {"oos", "confidence", "answerable"}
    if not isinstance(thresholds, dict) or set(thresholds) - allowed:
        raise ApiError(
            422, "invalid_thresholds", f"thresholds may set {', '.join(sorted(allowed))} only"
        )
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in thresholds.values()):
        raise ApiError(422, "invalid_thresholds", "thresholds must be numbers")
    return texts, k, {name: float(v) for name, v in thresholds.items()}


class DeskExtension:
    name = "desk"

    def bundle(self, folder: Path) -> Path:
        from frugalml.apps.desk.desk import verify_folder

        return folder / str(verify_folder(folder)["bundle"])

    def mount(self, app: FastAPI, context: ServeContext) -> None:
        from fastapi.responses import HTMLResponse
        from prometheus_client import Counter

        from frugalml.apps.desk.desk import ROUTES, Desk, signals_from
        from frugalml.apps.desk.knowledge import hits_from
        from frugalml.errors import ConfigError
        from frugalml.serve.errors import ApiError

        desk = Desk.open(context.folder)  # settings and arrays; the model is the served one
        operation = batched_operation(desk)
        routes = Counter(
            "desk_routes",
            "Questions the desk routed, by route.",
            ["route"],
            registry=context.registry,
        )
        for route in ROUTES:
            routes.labels(route)  # every route shows from the start, at 0

        @app.post("/v1/desk/ask")
        async def ask(request: Request) -> dict[str, Any]:
            async with context.request(request) as body:
                texts, k, overrides = _parse(body, context.settings)
                try:
                    thresholds = desk.thresholds.replace(**overrides)
                except ConfigError as err:
                    raise ApiError(422, "invalid_thresholds", err.render()) from None
                rows, model = await context.infer(texts, operation)
                n, dim = len(model.labels), desk.index.vectors.shape[1]
                proba = signals_from(rows[:, :n], rows[:, :0], model.bundle.temperature).proba
                top = rows[:, n + dim + 1 :].reshape(len(texts), 4, -1)
                hits = hits_from(top, k)
                replies = desk.replies(texts, proba, rows[:, n + dim], hits, thresholds)
                for reply in replies:
                    routes.labels(reply.route).inc()
                return {
                    "replies": [r.to_dict() for r in replies],
                    "model_version": model.version,
                }

        page = PAGE.read_text(encoding="utf-8")

        @app.get("/desk", response_class=HTMLResponse)
        async def chat() -> HTMLResponse:
            return HTMLResponse(page)


EXTENSION = DeskExtension()
