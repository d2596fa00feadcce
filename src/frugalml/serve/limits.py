"""Refusals at the door: a body too large (413) or too slow (408), a client gone (499),
and too many requests at once (429).

All are decided before any work is queued, so an overloaded server spends almost nothing
on the requests it turns away. A request takes a concurrency slot only once its body is in:
a client that sends its body slowly holds a connection, never a slot another client needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.requests import ClientDisconnect, Request

from frugalml.serve.errors import ApiError, retry_after

log = logging.getLogger("frugalml.serve")
CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection first"


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body; 413 as soon as it is known to exceed `limit` (declared or streamed), 408 if it
    is not all in after `timeout_s`, 499 (one log line) if the client hangs up while sending."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(f"{declared} bytes", limit)
    chunks: list[bytes] = []
    try:
        await asyncio.wait_for(_read(request, limit, chunks), timeout_s)
    except TimeoutError:
        raise ApiError(
            408,
            "body_timeout",
            f"the body was not all received within {timeout_s:g} s "
            f"({sum(map(len, chunks))} bytes arrived); send it at once",
            headers={"Connection": "close"},  # the rest of the body may still be on its way
        ) from None
    except ClientDisconnect:
        client = request.client.host if request.client else "a client"
        log.info(
            "%s closed the connection while sending %s %s (%d bytes received)",
            client,
            request.method,
            request.url.path,
            sum(map(len, chunks)),
        )
        raise ApiError(CLIENT_CLOSED, "client_closed", "the client closed the connection") from None
    return b"".join(chunks)


async def _read(request: Request, limit: int, chunks: list[bytes]) -> None:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit} bytes", limit)
        chunks.append(chunk)


def _too_large(size: str, limit: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the body has {size}; the limit is {limit} bytes: send fewer or shorter texts per request",
    )


class ConcurrencyCap:
    """Counts predict requests in flight; past `limit` a new one gets 429 at once.

    Only touched from the event loop, so a plain counter needs no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise ApiError(
                429,
                "too_many_requests",
                f"{self.in_flight} requests are in flight, the most this server takes at once; "
                "retry after a short wait or send more texts per request",
                headers=retry_after(1),
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
