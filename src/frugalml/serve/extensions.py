"""Serve extension points: an application adds its own routes to the one server.

`frugalml serve FOLDER` serves a bundle, or an application's folder. An application folder
holds `app.json` naming its application (`{"app": "desk", ...}`); a bundle may be claimed by
an application through its `task` (a recommendation bundle gets `/v1/recommend`). The
application's `ServeExtension` says which bundle `/v1/predict` serves and mounts its routes,
which reuse what the core already has through a `ServeContext`: the micro-batcher, the body
and concurrency limits, auth (a middleware, so every route gets it), metrics and errors.

Extensions are found by name, never by importing every application: the built-in ones are
import strings below (the serving layer may not import `frugalml.apps` directly), others are
the `frugalml.serve` entry-point group of any installed package, or `register_extension`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from frugalml.errors import BundleError

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from prometheus_client import CollectorRegistry

    from frugalml.serve.app import ServeState
    from frugalml.serve.batching import Operation
    from frugalml.serve.live_model import ServedModel
    from frugalml.serve.settings import ServeSettings

APP_FILE = "app.json"
ENTRY_POINT_GROUP = "frugalml.serve"


@dataclass(frozen=True)
class Builtin:
    target: str  # "module:attribute" of a ServeExtension
    tasks: tuple[str, ...] = ()  # bundle tasks it claims


# name → where the extension lives. Applications add their line here.
BUILTIN: dict[str, Builtin] = {
    "monitor": Builtin("frugalml.apps.monitor.serving:EXTENSION"),
    "recommend": Builtin("frugalml.apps.recommend.serving:EXTENSION", tasks=("recommendation",)),
    "desk": Builtin("frugalml.apps.desk.serving:EXTENSION"),
}


class ServeExtension(Protocol):
    """What an application gives the server."""

    name: str

    def bundle(self, folder: Path) -> Path:
        """The bundle inside `folder` that `/v1/predict` serves (`folder` itself for a bundle)."""
        ...

    def mount(self, app: FastAPI, context: ServeContext) -> None:
        """Add the application's routes (and its own state, loaded from `context.folder`)."""
        ...


_registered: dict[str, ServeExtension] = {}


def register_extension(extension: ServeExtension, *, tasks: tuple[str, ...] = ()) -> None:
    """Make `extension` available in this process (tests, notebooks); `tasks` are the bundle
    tasks it claims."""
    _registered[extension.name] = extension
    for task in tasks:
        _registered[f"task:{task}"] = extension


def unregister_extension(name: str) -> None:
    for key in [k for k, v in _registered.items() if v.name == name]:
        del _registered[key]


def find_extension(folder: Path) -> ServeExtension | None:
    """The extension that serves `folder`, or None for a plain bundle."""
    app_file = folder / APP_FILE
    if app_file.is_file() and not app_file.is_symlink():
        return _by_name(_app_name(app_file), app_file)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        task = json.loads(manifest.read_text(encoding="utf-8")).get("task")
    except (OSError, ValueError, AttributeError):
        return None  # the bundle loader reports what is wrong with it, with more detail
    if not isinstance(task, str):
        return None
    if (registered := _registered.get(f"task:{task}")) is not None:
        return registered
    for name, builtin in BUILTIN.items():
        if task in builtin.tasks:
            return _load(name, builtin.target)
    return None


def _app_name(app_file: Path) -> str:
    try:
        data = json.loads(app_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BundleError(
            f"{app_file} is not valid JSON ({err}); an application folder's {APP_FILE} "
            'names its application, e.g. {"app": "desk"}'
        ) from None
    name = data.get("app") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise BundleError(
            f"{app_file} has no 'app' field; an application folder's {APP_FILE} names its "
            'application, e.g. {"app": "desk"}'
        )
    return name


def _by_name(name: str, where: Path) -> ServeExtension:
    if name in _registered:
        return _registered[name]
    if name in BUILTIN:
        return _load(name, BUILTIN[name].target)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            return _check(name, entry.load())
    known = sorted({*BUILTIN, *(e.name for e in entry_points(group=ENTRY_POINT_GROUP))})
    raise BundleError(
        f"{where} names the application {name!r}, which no installed package serves "
        f"(known: {', '.join(known) or 'none'}); install the package that made this folder"
    )


def _load(name: str, target: str) -> ServeExtension:
    module, _, attribute = target.partition(":")
    return _check(name, getattr(importlib.import_module(module), attribute))


def _check(name: str, extension: Any) -> ServeExtension:
    if not all(callable(getattr(extension, m, None)) for m in ("bundle", "mount")):
        raise TypeError(f"the serve extension {name!r} has no bundle() and mount() methods")
    return extension  # type: ignore[no-any-return]


class ServeContext:
    """What an extension's routes may use of the server: the model now served, the batcher,
    the body and concurrency limits, the settings and the metrics registry."""

    def __init__(self, folder: Path, state: ServeState) -> None:
        self.folder = folder
        self._state = state
        self.startup: list[Callable[[], Awaitable[None]]] = []
        self.shutdown: list[Callable[[], Awaitable[None]]] = []

    @property
    def settings(self) -> ServeSettings:
        return self._state.settings

    @property
    def registry(self) -> CollectorRegistry:
        """The app's Prometheus registry: an extension's own metrics go here (`/metrics`)."""
        return self._state.metrics.registry

    def model(self) -> ServedModel:
        """The model now served; a 503 with Retry-After while it loads."""
        return self._state.ready_model()

    @asynccontextmanager
    async def request(self, request: Request) -> AsyncIterator[bytes]:
        """Read the body under the server's size and time limits, then hold a concurrency
        slot while the block runs (a slow sender never holds one), counted like a predict
        request."""
        from frugalml.serve.limits import read_body

        state, settings = self._state, self._state.settings
        self.model()
        with state.batcher.expecting():
            body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        with state.cap.slot():
            state.accept()
            try:
                yield body
            finally:
                state.answered += 1

    async def infer(
        self, inputs: list[Any], op: Operation | None = None
    ) -> tuple[np.ndarray, ServedModel]:
        """Rows of `op(model, inputs)` (default: probabilities) computed in a micro-batch with
        other requests of the same operation; a 503 when the server cannot answer in time."""
        from frugalml.serve.batching import RejectedError, predict_proba
        from frugalml.serve.errors import ApiError, retry_after

        deadline = asyncio.get_running_loop().time() + self.settings.request_timeout_s
        try:
            return await self._state.batcher.predict(inputs, deadline, op or predict_proba)
        except RejectedError as r:
            raise ApiError(503, r.code, r.message, headers=retry_after(r.retry_after_s)) from None

    def on_startup(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` once the server starts (after the batcher, while the model loads)."""
        self.startup.append(hook)

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` when the server stops, before the batcher drains."""
        self.shutdown.append(hook)
