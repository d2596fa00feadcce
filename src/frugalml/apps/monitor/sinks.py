"""Where alerts go: a JSONL file, a webhook, the log. A sink never stops the stream: the
webhook posts from its own thread, retries with backoff, then logs what it could not send."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from frugalml.errors import ConfigError

log = logging.getLogger("frugalml.monitor")
SECRET_ENV = "FRUGALML_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Frugalml-Signature"

Sink = Callable[[dict[str, Any]], None]


def encode(alert: dict[str, Any]) -> bytes:
    return json.dumps(alert, default=float, sort_keys=True).encode("utf-8")


def sign(body: bytes, secret: str) -> str:
    """`sha256=<hex HMAC of the body>`: the receiver recomputes it with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class JsonlSink:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, alert: dict[str, Any]) -> None:
        with self.path.open("ab") as f:
            f.write(encode(alert) + b"\n")


def log_sink(alert: dict[str, Any]) -> None:
    log.warning("ALERT %s", alert["message"])


class WebhookSink:
    """POSTs each alert as JSON, signed with HMAC-SHA256 when a secret is set; retries
    `retries` times with exponential backoff on errors and 5xx answers, then logs and drops."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        retries: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
    ) -> None:
        self.url, self.secret, self.retries = url, secret, retries
        self.backoff_s, self.timeout_s = backoff_s, timeout_s
        self.sent = self.failed = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, daemon=True, name="monitor-webhook")
        self._thread.start()

    def __call__(self, alert: dict[str, Any]) -> None:
        self._queue.put(alert)

    def close(self, timeout: float = 30.0) -> None:
        """Send what is queued (within `timeout`), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout_s) as client:
            while (alert := self._queue.get()) is not None:
                if self._send(client, alert):
                    self.sent += 1
                else:
                    self.failed += 1
                    log.error("webhook %s: gave up on alert %s", self.url, alert.get("message"))

    def _send(self, client: Any, alert: dict[str, Any]) -> bool:
        import httpx

        body = encode(alert)
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(body, self.secret)
        for attempt in range(self.retries + 1):
            try:
                answer = client.post(self.url, content=body, headers=headers)
                if answer.status_code < 500:
                    return bool(answer.is_success)
                problem = f"HTTP {answer.status_code}"
            except httpx.HTTPError as err:
                problem = type(err).__name__
            log.warning("webhook %s: %s (attempt %d)", self.url, problem, attempt + 1)
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        return False


def make_sink(spec: str) -> Sink:
    """`log`, `jsonl:PATH` or `webhook:URL` (signed with $FRUGALML_WEBHOOK_SECRET when set)."""
    kind, _, target = spec.partition(":")
    if kind == "log" and not target:
        return log_sink
    if kind == "jsonl" and target:
        return JsonlSink(Path(target))
    if kind == "webhook" and target.startswith(("http://", "https://")):
        return WebhookSink(target, secret=os.environ.get(SECRET_ENV))
    raise ConfigError(
        f"--alerts {spec!r} is not a sink; use log, jsonl:PATH or webhook:https://HOST/PATH"
    )
