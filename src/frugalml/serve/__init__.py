"""`frugalml serve`: any bundle as an HTTP service with micro-batching, metrics, auth,
limits, hot reload and graceful shutdown. Needs the 'serve' extra.

One module per HTTP concept: `app` (routes and shared state), `batching` (the micro-batcher),
`limits` (408, 413, 429, 499), `connections` (header deadline, connections per client),
`auth` (bearer keys), `metrics` (Prometheus), `schemas` (the request and response contract),
`errors` (the one error shape), `live_model` (the model and its version), `settings` (the
options), `launch` (uvicorn and workers).

Exports are imported on first use, so `frugalml serve` without the extra says which extra to
install instead of failing on `import fastapi`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugalml.serve.app import create_app
    from frugalml.serve.launch import run
    from frugalml.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "run"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from frugalml.serve.app import create_app

        return create_app
    if name == "run":
        from frugalml.serve.launch import run

        return run
    if name == "ServeSettings":
        from frugalml.serve.settings import ServeSettings

        return ServeSettings
    raise AttributeError(f"module 'frugalml.serve' has no attribute {name!r}")
