"""`frugalml serve FOLDER` for a monitor folder: `POST /v1/monitor/events`, the live page
`/monitor`, its data, and the monitor's Prometheus metrics.

The folder holds `app.json`: `{"app": "monitor", "model": "model", ...MonitorConfig}`
(relative paths from the folder). Events sent to the route are scored by the server's
micro-batcher together with other requests, then committed like any batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from frugalml.serve.extensions import ServeContext


class MonitorExtension:
    name = "monitor"

    def bundle(self, folder: Path) -> Path:
        from frugalml.apps.monitor.config import resolve_bundle

        return resolve_bundle(folder / app_settings(folder).get("model", "model"))

    def mount(self, app: FastAPI, context: ServeContext) -> None:
        from frugalml.apps.monitor.routes import mount

        mount(app, context)


def app_settings(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "app.json").read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


EXTENSION = MonitorExtension()
