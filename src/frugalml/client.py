"""A small client for `frugalml serve`: what an application (and the tests) call.

Needs only httpx (`pip install httpx`, or the 'serve' extra). Errors come back as
`ServeError` with the server's stable `code`, its message and, for back-pressure answers,
how long to wait before retrying.

    from frugalml import client
    client.predict("http://127.0.0.1:8000", ["my card never arrived"])
    # [{'label': 'card_not_arrived', 'probabilities': {...}, 'model_version': '1f0c...'}]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import httpx


class ServeError(Exception):
    """A non-2xx answer, e.g. `status=422, code='text_too_long', item=3`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        item: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.item, self.retry_after_s = item, retry_after_s


def predict(
    url: str,
    texts: Sequence[str],
    *,
    api_key: str | None = None,
    timeout: float = 30.0,
    client: httpx.Client | None = None,
) -> list[dict[str, Any]]:
    """One `{'label', 'probabilities', 'model_version'}` per text, in order.

    `api_key` defaults to $FRUGALML_API_KEY; pass an `httpx.Client` to reuse connections.
    """
    body = request(
        "POST",
        url,
        "/v1/predict",
        json={"texts": list(texts)},
        api_key=api_key,
        timeout=timeout,
        client=client,
    )
    return list(body["predictions"])


def model_info(url: str, *, api_key: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """The served model's summary: version, strategy, quality, cost card, serving cost."""
    return request("GET", url, "/v1/model", api_key=api_key, timeout=timeout)


def reload(
    url: str, bundle: str | None = None, *, admin_key: str, timeout: float = 120.0
) -> dict[str, Any]:
    """Swap in the bundle at `bundle` (default: the path being served) and return its summary."""
    return request(
        "POST",
        url,
        "/v1/model/reload",
        json={"bundle": bundle} if bundle else {},
        api_key=admin_key,
        timeout=timeout,
    )


def request(
    method: str,
    url: str,
    path: str,
    *,
    json: Any = None,
    api_key: str | None = None,
    timeout: float = 30.0,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Any route; raises `ServeError` for an error answer in the server's error shape."""
    key = api_key if api_key is not None else os.environ.get("FRUGALML_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    target = url.rstrip("/") + path
    if client is None:
        response = httpx.request(method, target, json=json, headers=headers, timeout=timeout)
    else:
        response = client.request(method, target, json=json, headers=headers, timeout=timeout)
    if response.is_success:
        body: dict[str, Any] = response.json()
        return body
    raise _error(response)


def _error(response: httpx.Response) -> ServeError:
    try:
        error = response.json()["error"]
        code, message, item = str(error["code"]), str(error["message"]), error.get("item")
    except (ValueError, KeyError, TypeError):  # not our shape: a proxy's page, say
        code, message, item = "http_error", response.text[:200], None
    retry = response.headers.get("retry-after")
    return ServeError(
        response.status_code,
        code,
        message,
        item=item,
        retry_after_s=float(retry) if retry and retry.isdigit() else None,
    )
