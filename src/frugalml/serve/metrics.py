"""Prometheus metrics, one registry per app (never the global one), so two apps in one
process (tests, a reload) never mix their numbers.

Cost per 1k predictions reads off the scrape: 1000 * `frugalml_inference_cpu_seconds_total`
/ `frugalml_predictions_total` * `frugalml_price_usd_per_cpu_second` (also precomputed, over
the process's life, as `frugalml_inference_usd_per_1k_predictions`). The price is the served
bundle's (the `Prices` it was trained under, from its manifest). In PromQL, over a window:
    1000 * rate(frugalml_inference_cpu_seconds_total[5m])
         / sum(rate(frugalml_predictions_total[5m])) * frugalml_price_usd_per_cpu_second
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frugalml.costs import Prices
from frugalml.serve.batching import BatchStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """Everything `/metrics` shows; the app and the batcher call the `observe_*` methods."""

    def __init__(self, queue_depth: Callable[[], float], prices: Prices | None = None) -> None:
        self.registry = CollectorRegistry()
        self.prices = prices or Prices()
        self.cpu_s_total = 0.0  # mirrors of two counters, for the cost gauge and /v1/model
        self.predictions_total = 0
        r = self.registry
        self.request_seconds = Histogram(
            "frugalml_http_request_duration_seconds",
            "Time from receiving a request to sending its response.",
            ["route", "method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "frugalml_http_requests", "Requests answered.", ["route", "code"], registry=r
        )
        self.batch_size = Histogram(
            "frugalml_batch_size", "Texts per inference batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "frugalml_inference_duration_seconds",
            "Wall time of one inference batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_cpu = Counter(
            "frugalml_inference_cpu_seconds",
            "CPU time spent in inference (all threads but the event loop's).",
            registry=r,
        )
        self.predictions = Counter(
            "frugalml_predictions", "Predictions made, by predicted label.", ["label"], registry=r
        )
        queue = Gauge("frugalml_queue_depth", "Texts waiting for an inference batch.", registry=r)
        queue.set_function(queue_depth)
        self.model_info = Gauge(
            "frugalml_model_info",
            "The model being served (value 1).",
            ["version", "strategy"],
            registry=r,
        )
        self.reloads = Counter(
            "frugalml_model_reloads", "Model reloads, by outcome.", ["outcome"], registry=r
        )
        self.accepted = Counter(
            "frugalml_predict_accepted",
            "Predict requests accepted: body received and a concurrency slot taken.",
            registry=r,
        )
        self.price = Gauge(
            "frugalml_price_usd_per_cpu_second",
            "Price of one CPU-second (the served bundle's frugalml.costs.Prices).",
            registry=r,
        )
        self.price.set(self.prices.usd_per_cpu_s)
        r.register(_CostPer1k(self))
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes

    def observe_request(self, route: str, method: str, code: int, seconds: float) -> None:
        self.request_seconds.labels(route, method, str(code)).observe(seconds)
        self.requests.labels(route, str(code)).inc()

    def watch_requests(
        self, in_flight: Callable[[], float], receiving: Callable[[], float]
    ) -> None:
        """Gauges read at scrape time: requests holding a concurrency slot, and requests still
        receiving their body (a crowd of these and few in flight means slow senders)."""
        Gauge(
            "frugalml_predict_in_flight",
            "Predict requests holding a concurrency slot.",
            registry=self.registry,
        ).set_function(in_flight)
        Gauge(
            "frugalml_predict_receiving",
            "Predict requests still receiving their body (they hold no slot).",
            registry=self.registry,
        ).set_function(receiving)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.size)
        self.batch_seconds.observe(stats.wall_s)
        self.inference_cpu.inc(stats.cpu_s)
        self.cpu_s_total += stats.cpu_s

    def count_predictions(self, labels: Iterable[str]) -> None:
        for label, n in Tally(labels).items():
            self.predictions.labels(label).inc(n)
            self.predictions_total += n

    def set_model(
        self, version: str, strategy: str, labels: Iterable[str], prices: Prices | None = None
    ) -> None:
        """`prices`: the new model's price basis; the price gauge and the cost per 1k use it."""
        if prices is not None:
            self.prices = prices
            self.price.set(prices.usd_per_cpu_s)
        self.model_info.clear()
        self.model_info.labels(version, strategy).set(1)
        for label in labels:  # every label shows, at 0 until predicted
            self.predictions.labels(label)

    def usd_per_1k(self) -> float:
        """Inference CPU cost of 1,000 predictions over the process's life (0 before any)."""
        if not self.predictions_total:
            return 0.0
        return 1000 * self.cpu_s_total / self.predictions_total * self.prices.usd_per_cpu_s

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CostPer1k(Collector):
    """Computed at scrape time from the two counters, so it never drifts from them."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "frugalml_inference_usd_per_1k_predictions",
            "Inference CPU cost of 1,000 predictions, averaged over the process's life.",
            value=self.metrics.usd_per_1k(),
        )


class RequestMetrics:
    """ASGI middleware timing every request by route and status code, refusals included.

    Unknown paths are labelled "other", so a scan of random URLs cannot grow the label set.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServeMetrics, routes: frozenset[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.observe_request(
                route, scope["method"], status, time.perf_counter() - started
            )
