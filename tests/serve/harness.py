"""A real server for tests: uvicorn on 127.0.0.1 in a thread, with `frugalml serve`'s limits."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import frugalml
from frugalml.bundle import Bundle
from frugalml.serve import ServeSettings, create_app
from frugalml.serve.connections import ConnectionLimits, GuardedProtocol
from frugalml.serve.launch import KEEP_ALIVE_S


@contextlib.contextmanager
def serving(
    bundle: Path,
    *,
    loader: Callable[[Path], Bundle] = frugalml.load,
    http: Any = None,
    **settings: Any,
) -> Iterator[str]:
    """A real uvicorn on 127.0.0.1 (a free port) in a thread, with the connection limits
    `frugalml serve` gives it (`http` overrides its protocol class); yields its base URL."""
    options = ServeSettings(**settings)
    app = create_app(bundle, options, loader=loader)
    limits = ConnectionLimits(options.header_timeout_s, options.max_connections_per_client)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        http=http or functools.partial(GuardedProtocol, limits=limits),
        timeout_keep_alive=KEEP_ALIVE_S,
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_ready(url: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while httpx.get(url + "/readyz").status_code != 200:
        assert time.monotonic() < end, "not ready in time"
        time.sleep(0.02)
