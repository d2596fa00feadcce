"""Start uvicorn on a bundle: the checks a user should see before any process is forked.

Workers are uvicorn's own (`workers=N` with the app factory as an import string); each one
rebuilds the settings from the environment and loads its own copy of the model.
"""

from __future__ import annotations

import copy
import math
import signal
import sys
from pathlib import Path
from typing import Any

from frugalml.bundle import read_manifest, require_dependencies
from frugalml.errors import require_extra
from frugalml.serve.settings import ServeSettings

FACTORY = "frugalml.serve.app:app_from_env"
KEEP_ALIVE_S = 5  # uvicorn's default idle time between requests on one connection


def require_serve() -> None:
    require_extra("frugalml serve", "serve", "fastapi", "uvicorn", "prometheus_client")


def check_bundle(folder: Path) -> None:
    """Fail in the terminal, not in a worker's log: the folder is a bundle (or an application
    folder holding one) whose predictor's dependencies are installed. (Checksums are verified
    again when each worker loads it.)"""
    from frugalml.serve.extensions import find_extension

    extension = find_extension(folder)
    require_dependencies(read_manifest(extension.bundle(folder) if extension else folder))


def run(bundle: Path, settings: ServeSettings) -> None:
    """Serve until SIGTERM or Ctrl-C, then drain: in-flight requests are answered first."""
    import uvicorn

    from frugalml.serve.connections import PROTOCOL

    require_serve()
    check_bundle(bundle)
    settings.api_key(), settings.admin_key()  # an unset key variable fails here, once
    settings.to_env(bundle)
    # uvicorn drains on SIGTERM, then re-raises the signal to whatever handler was there
    # before it: make that a clean exit, since a drained shutdown is a success.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(
        FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        lifespan="on",
        log_config=log_config(),
        access_log=settings.access_log,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
        http=PROTOCOL,  # headers deadline, per-client cap (serve/connections.py)
        timeout_keep_alive=KEEP_ALIVE_S,
        ws="none",  # no WebSocket routes: an upgrade request stays plain HTTP
    )


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with frugalml's own lines (ready, reloaded, stopped) beside its own."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["frugalml"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
