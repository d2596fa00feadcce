"""What uvicorn leaves unbounded on a connection: the time to send a request's headers, and
how many connections one address may hold open.

uvicorn has a keep-alive timeout, but it starts only after a response and stops at the next
byte, so a client that sends headers a byte at a time (or never finishes them) holds its
connection forever. Here a connection gets `header_timeout_s` from its first byte (or from
being opened) to finish a request's headers; a late one is closed. The body has its own
deadline in the app (`limits.read_body`). Past `max_per_client` connections from one
address, each request on a new connection is answered 429 and the connection closed.

uvicorn takes its HTTP protocol as a class; these are its own two (httptools when installed,
else h11) with three methods extended. `frugalml serve` names the class by import string, and
each process reads the limits from the same environment variable as its app (a worker that
unpickled anything of frugalml's would import it before answering uvicorn's health check,
and a slow import gets it killed); tests pass the limits to the class.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from frugalml.serve.errors import ApiError, error_response, retry_after

try:  # what uvicorn's "auto" picks: httptools when installed, else h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Protocol
except ImportError:  # pragma: no cover - the 'serve' extra installs httptools
    _Protocol = H11Protocol  # type: ignore[assignment,misc]

log = logging.getLogger("frugalml.serve")

if TYPE_CHECKING:  # a mixin for either protocol class; mypy checks it against one
    _Base = _Protocol
else:
    _Base = object


@dataclass
class ConnectionLimits:
    """One server's limits, and its count of open connections per address."""

    header_timeout_s: float
    max_per_client: int | None
    open: Counter[str] = field(default_factory=Counter)


class _Guarded(_Base):
    """Arms a header timer while no request is under way; counts connections per address."""

    def __init__(self, *args: Any, limits: ConnectionLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or limits_from_env()
        self.header_timer: asyncio.TimerHandle | None = None
        self.address: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.address = self.client[0] if self.client else None
        if self.address is not None:
            self.limits.open[self.address] += 1
            cap = self.limits.max_per_client
            if cap is not None and self.limits.open[self.address] > cap:
                self.app = functools.partial(_too_many_connections, self.address, cap)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.address is not None:
            self.limits.open[self.address] -= 1
            if self.limits.open[self.address] <= 0:
                del self.limits.open[self.address]
            self.address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_request():
            self._arm()  # a new request's first bytes; already armed if its headers are partial
        super().data_received(data)
        if self._in_request():
            self._disarm()  # headers complete: the app's body deadline takes over

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._headers_late
            )

    def _disarm(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_late(self) -> None:
        self.header_timer = None
        if not self._in_request() and not self.transport.is_closing():
            log.debug(
                "closed a connection from %s: no complete request headers in %g s",
                self.address,
                self.limits.header_timeout_s,
            )
            self.transport.close()


class GuardedProtocol(_Guarded, _Protocol):
    """uvicorn's own HTTP protocol with a header deadline and a per-address cap."""


class GuardedH11Protocol(_Guarded, H11Protocol):  # type: ignore[misc]
    """The same on h11 (uvicorn's pure-Python parser)."""


async def _too_many_connections(
    address: str, cap: int, scope: Any, receive: Any, send: Any
) -> None:
    error = ApiError(
        429,
        "too_many_connections",
        f"{address} has more than {cap} connections open to this server; reuse connections "
        "(keep-alive) or open fewer at once",
        headers={"Connection": "close", **retry_after(1)},
    )
    await error_response(error)(scope, receive, send)


PROTOCOL = f"{__name__}:GuardedProtocol"  # what `frugalml serve` passes as uvicorn's `http=`


@functools.cache
def limits_from_env() -> ConnectionLimits:
    """This process's limits, from the settings `frugalml serve` put in the environment."""
    from frugalml.serve.settings import ServeSettings

    _, settings = ServeSettings.from_env()
    return ConnectionLimits(settings.header_timeout_s, settings.max_connections_per_client)
