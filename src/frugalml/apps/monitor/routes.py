"""The monitor's HTTP routes (imported only when a monitor folder is served)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from frugalml.apps.monitor.config import MonitorConfig, build_monitor
from frugalml.apps.monitor.events import Raw, RawBatch
from frugalml.apps.monitor.pipeline import BatchReport, Monitor
from frugalml.apps.monitor.report import alerts_table, dashboard_data, live_page, plotly_js
from frugalml.apps.monitor.serving import app_settings
from frugalml.serve.errors import ApiError
from frugalml.serve.extensions import ServeContext

MAX_EVENTS = 1000


def mount(app: FastAPI, context: ServeContext) -> None:
    settings = {k: v for k, v in app_settings(context.folder).items() if k != "app"}
    config = MonitorConfig(**{"model": "model", **settings})
    monitor: Monitor = build_monitor(config, base=context.folder)
    metrics = _Metrics(context)

    @app.post("/v1/monitor/events")
    async def events(request: Request) -> dict[str, Any]:
        async with context.request(request) as body:
            try:
                records = json.loads(body)["events"]
                assert isinstance(records, list) and len(records) <= MAX_EVENTS
            except (ValueError, KeyError, TypeError, AssertionError):
                raise ApiError(
                    422,
                    "bad_events",
                    f'send {{"events": [{{"id", "time", "text"}}, ...]}}, at most {MAX_EVENTS}',
                ) from None
            batch = RawBatch(
                [
                    Raw(
                        r if isinstance(r, dict) else None,
                        f"events[{i}]",
                        "" if isinstance(r, dict) else "not an object",
                    )
                    for i, r in enumerate(records)
                ]
            )
            prepared = await asyncio.to_thread(monitor.prepare, batch)
            texts = [e.text for e in prepared.events]
            proba = (await context.infer(texts))[0] if texts else None
            report = await asyncio.to_thread(monitor.commit, prepared, proba)
            metrics.record(report)
            return {
                "accepted": report.new,
                "duplicates": report.duplicates,
                "late": report.late,
                "bad": [{"where": w, "problem": p} for w, p in report.bad],
                "alerts": [a["message"] for a in report.alerts],
            }

    @app.get("/monitor", response_class=HTMLResponse)
    async def page() -> str:
        return live_page()

    @app.get("/monitor/plotly.js")
    async def script() -> Response:
        return Response(
            plotly_js(),
            media_type="application/javascript",
            headers={"Cache-Control": "max-age=86400"},
        )

    @app.get("/monitor/data")
    async def data(window: int | None = None) -> JSONResponse:
        size = window or monitor.settings.windows[0]
        found = await asyncio.to_thread(dashboard_data, monitor.engine, size)
        found["table"] = alerts_table(found["alerts"][:50])
        return JSONResponse(json.loads(json.dumps(found, default=float)))


class _Metrics:
    """monitor_* series on the server's registry."""

    def __init__(self, context: ServeContext) -> None:
        from prometheus_client import Counter, Gauge

        registry = context.registry
        self.alerts = Counter(
            "monitor_alerts", "Alerts raised.", ["topic", "kind"], registry=registry
        )
        self.events = Counter(
            "monitor_events", "Events received, by outcome.", ["outcome"], registry=registry
        )
        self.share = Gauge(
            "monitor_negative_share",
            "Negative share of the open primary window.",
            ["topic"],
            registry=registry,
        )
        self.lag = Gauge(
            "monitor_lag_seconds", "Now minus the newest event time.", registry=registry
        )

    def record(self, report: BatchReport) -> None:
        for outcome, n in (
            ("new", report.new),
            ("duplicate", report.duplicates),
            ("bad", len(report.bad)),
            ("late", len(report.late)),
        ):
            self.events.labels(outcome).inc(n)
        for alert in report.alerts:
            self.alerts.labels(alert["topic"], alert["kind"]).inc()
        for topic, share in list(report.shares.items())[:50]:
            self.share.labels(topic).set(share)
        if report.latest is not None:
            self.lag.set(time.time() - report.latest)
