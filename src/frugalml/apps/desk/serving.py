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


def _logits_and_vectors(model: Any, texts: list[str]) -> np.ndarray:
    """The batched operation: [logits | vectors], one row per question."""
    logits, vectors = model.bundle.logits_and_embed(texts)
    return np.hstack([logits, vectors])


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
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= 20:
        raise ApiError(422, "invalid_k", f"k must be a whole number from 0 to 20; got {k!r}")
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
        from starlette.concurrency import run_in_threadpool

        from frugalml.apps.desk.desk import ROUTES, Desk, signals_from
        from frugalml.errors import ConfigError
        from frugalml.serve.errors import ApiError

        desk = Desk.open(context.folder)  # settings and arrays; the model is the served one
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
                rows, model = await context.infer(texts, _logits_and_vectors)
                n = len(model.labels)
                signals = signals_from(rows[:, :n], rows[:, n:], model.bundle.temperature)
                replies = await run_in_threadpool(desk.route, texts, signals, thresholds, k=k)
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
