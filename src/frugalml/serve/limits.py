"""Refusals at the door: a body too large (413) and too many requests at once (429).

Both are checked before any work is queued, so an overloaded server spends almost nothing
on the requests it turns away.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from starlette.requests import Request

from frugalml.serve.errors import ApiError, retry_after


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(f"{declared} bytes", limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit} bytes", limit)
        chunks.append(chunk)
    return b"".join(chunks)


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
