"""The HTTP app: routes, and the state they share (the served model, batcher, metrics).

`create_app` returns a FastAPI app whose lifespan starts the micro-batcher and loads the
bundle in the background: the process answers `/livez` at once and `/readyz` once the model
is loaded and warmed up. A reload loads the new bundle beside the old one (a loader thread),
warms it up, then swaps the one reference the batcher reads: a batch already running finishes
on the old model, every later batch uses the new one, and no request waits or fails for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from frugalml.bundle import load
from frugalml.costs import Prices
from frugalml.errors import FrugalError
from frugalml.models.onnx_encoder import SessionTuning, tune_sessions
from frugalml.serve.auth import BearerAuth
from frugalml.serve.batching import BatchStats, MicroBatcher, RejectedError
from frugalml.serve.errors import ApiError, on_api_error, on_http_exception, on_unexpected
from frugalml.serve.errors import retry_after as retry_after_header
from frugalml.serve.extensions import ServeContext, find_extension
from frugalml.serve.limits import ConcurrencyCap, read_body
from frugalml.serve.live_model import Loader, ServedModel, load_model
from frugalml.serve.metrics import CONTENT_TYPE, RequestMetrics, ServeMetrics
from frugalml.serve.schemas import PredictResponse, check_records, parse_predict, parse_reload
from frugalml.serve.settings import ServeSettings

log = logging.getLogger("frugalml.serve")


class ServeState:
    """What the routes share; touched only from the event loop (the batcher's thread only
    reads the model reference it was handed)."""

    def __init__(self, bundle: Path, settings: ServeSettings, loader: Loader) -> None:
        self.bundle, self.settings, self.loader = bundle, settings, loader
        self.model: ServedModel | None = None
        self.load_error: str | None = None
        self.batcher: MicroBatcher[ServedModel] = MicroBatcher(
            self.current,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
            on_batch=self.on_batch,
        )
        self.metrics = ServeMetrics(queue_depth=lambda: self.batcher.queued)
        self.cap = ConcurrencyCap(settings.max_concurrency)
        self.metrics.watch_requests(
            in_flight=lambda: self.cap.in_flight, receiving=lambda: self.batcher.arriving
        )
        self.reload_lock = asyncio.Lock()
        self.accepted = self.answered = 0  # predict requests, for the shutdown log line

    def accept(self) -> None:
        self.accepted += 1
        self.metrics.accepted.inc()

    def current(self) -> ServedModel:
        assert self.model is not None, "the batcher runs only once a model is loaded"
        return self.model

    def on_batch(self, stats: BatchStats) -> None:
        self.metrics.observe_batch(stats)

    def ready_model(self) -> ServedModel:
        if self.model is None:
            code, message = (
                ("load_failed", f"the model failed to load: {self.load_error}")
                if self.load_error
                else ("not_ready", "the model is still loading")
            )
            raise ApiError(503, code, message, headers=retry_after_header(1))
        return self.model

    async def load(self, path: Path) -> ServedModel:
        """Load on a loader thread (serving goes on), warm up on the inference thread."""
        model = await asyncio.to_thread(load_model, path, self.loader)
        await self.batcher.run_in_thread(model.warm_up)
        return model

    def install(self, model: ServedModel) -> ServedModel | None:
        previous, self.model = self.model, model
        manifest = model.bundle.manifest
        prices = Prices.from_dict(manifest.prices.model_dump() if manifest.prices else None)
        self.metrics.set_model(model.version, manifest.strategy, model.labels, prices)
        return previous

    async def load_initial(self) -> None:
        started = time.perf_counter()
        try:
            model = await self.load(self.bundle)
        except Exception as err:  # reported by /readyz and /livez; a bug also gets its traceback
            self.load_error = describe(err)
            log.error(
                "could not load %s: %s",
                self.bundle,
                self.load_error,
                exc_info=not isinstance(err, FrugalError),
            )
            return
        self.install(model)
        log.info(
            "ready in %.1f s: %s (%s, version %s)",
            time.perf_counter() - started,
            self.bundle,
            model.bundle.manifest.strategy,
            model.version,
        )

    def answer(self, proba: np.ndarray, model: ServedModel) -> dict[str, Any]:
        labels = model.labels
        predicted = [labels[i] for i in proba.argmax(1).tolist()]
        self.metrics.count_predictions(predicted)
        return {
            "predictions": [
                {
                    "label": label,
                    "probabilities": dict(zip(labels, row, strict=True)),
                    "model_version": model.version,
                }
                for label, row in zip(predicted, proba.tolist(), strict=True)
            ]
        }


def describe(err: Exception) -> str:
    """A load failure in words: a FrugalError says what to do; anything else is named."""
    if isinstance(err, FrugalError):
        return err.render()
    if isinstance(err, OSError):
        return str(err)
    return f"the bundle could not be loaded ({type(err).__name__}: {err})"


def create_app(
    bundle_path: str | Path, settings: ServeSettings | None = None, *, loader: Loader = load
) -> FastAPI:
    """An app serving `bundle_path`, a bundle or an application's folder (whose extension
    adds its routes: `serve/extensions.py`); `loader` is `frugalml.load` except in tests."""
    settings = settings or ServeSettings()
    tune_sessions(SessionTuning(settings.inference_threads(), settings.spinning))
    folder = Path(bundle_path)
    extension = find_extension(folder)
    state = ServeState(extension.bundle(folder) if extension else folder, settings, loader)
    context = ServeContext(folder, state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.batcher.start()
        loading = asyncio.create_task(state.load_initial())
        for hook in context.startup:
            await hook()
        try:
            yield
        finally:
            loading.cancel()
            for hook in context.shutdown:
                await hook()
            await state.batcher.close(settings.shutdown_timeout_s)
            log.info(
                "stopped; predict requests: %d accepted, %d answered",
                state.accepted,
                state.answered,
            )

    app = FastAPI(
        title="frugalml",
        summary="A frugalml bundle served over HTTP.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.serve = state
    _add_routes(app, state)
    if extension is not None:
        extension.mount(app, context)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(HTTPException, on_http_exception)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_middleware(BearerAuth, api_key=settings.api_key(), admin_key=settings.admin_key())
    routes = frozenset(getattr(r, "path", "") for r in app.routes)
    app.add_middleware(RequestMetrics, metrics=state.metrics, routes=routes)
    return app


def app_from_env() -> FastAPI:
    """The factory uvicorn's workers call: bundle and settings come from the environment."""
    bundle, settings = ServeSettings.from_env()
    return create_app(bundle, settings)


def _add_routes(app: FastAPI, state: ServeState) -> None:
    settings = state.settings

    @app.post("/v1/predict", responses={200: {"model": PredictResponse}})
    async def predict(request: Request) -> Response:
        """Labels and probabilities for `{"texts": [...]}`, batched with other requests."""
        deadline = asyncio.get_running_loop().time() + settings.request_timeout_s
        model = state.ready_model()
        with state.batcher.expecting():
            body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        with state.cap.slot():  # only now: a slow sender must not hold a slot while it sends
            state.accept()
            try:
                inputs = parse_predict(body, settings, tabular=model.tabular)
                check_records(model.record_problems(inputs))
                try:
                    proba, served = await state.batcher.predict(inputs, deadline)
                except RejectedError as r:
                    raise ApiError(
                        503, r.code, r.message, headers=retry_after_header(r.retry_after_s)
                    ) from None
                answer = state.answer(proba, served)
                reasons = await asyncio.to_thread(served.explain, inputs)
                for prediction, why in zip(answer["predictions"], reasons or (), strict=False):
                    prediction["reasons"] = why
                return JSONResponse(answer)
            finally:
                state.answered += 1

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        """The manifest's summary (quality, training cost card, speed) and serving cost so far."""
        summary = state.ready_model().summary()
        summary["serving"] = {
            "predictions": state.metrics.predictions_total,
            "inference_cpu_s": state.metrics.cpu_s_total,
            "usd_per_1k_predictions": state.metrics.usd_per_1k(),
            "max_batch": settings.max_batch,
            "max_wait_ms": settings.max_wait_ms,
        }
        return summary

    @app.post("/v1/model/reload")
    async def reload(request: Request) -> dict[str, Any]:
        """Load `{"bundle": PATH}` (default: the same path again) and swap it in atomically."""
        current = state.ready_model()
        body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        path = parse_reload(body, default=current.bundle.path)
        async with state.reload_lock:
            try:
                model = await state.load(path)  # loaded, checked and warmed up, or refused
            except Exception as err:  # whatever a bad bundle raises, the old model serves on
                state.metrics.reloads.labels("failed").inc()
                reason = describe(err)
                log.warning(
                    "reload refused, still serving version %s: %s",
                    current.version,
                    reason,
                    exc_info=not isinstance(err, (FrugalError, OSError)),
                )
                raise ApiError(422, "bad_bundle", f"{path}: {reason}") from None
            previous = state.install(model)
        state.metrics.reloads.labels("ok").inc()
        was = previous.version if previous else None
        log.info("reloaded: version %s → %s from %s", was, model.version, path)
        return {"previous_version": was, **model.summary()}

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        """The process is up and its event loop answers; fails only if the model never loads."""
        if state.load_error:
            state.ready_model()  # raises the 503 with the load error
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        """Ready once the model is loaded and warmed up: route traffic here."""
        return {"status": "ready", "model_version": state.ready_model().version}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)
