"""One JSON shape for every error the server answers, so clients parse one thing.

    {"error": {"code": "text_too_long", "message": "...", "item": 3, "problems": [...]}}

`code` is stable and machine-readable; `message` says what was wrong and how to fix it;
`item` is the index of the first offending input (null when the error is not about one);
`problems` lists every offending input when there are several, so a client fixes all at once.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger("frugalml.serve")


class ApiError(Exception):
    """An answer other than 200, raised anywhere below a route and rendered by `error_response`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        item: int | None = None,
        problems: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.item, self.problems = item, problems or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "item": self.item,
                "problems": self.problems,
            }
        }


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def retry_after(seconds: float) -> dict[str, str]:
    """Retry-After is whole seconds; never 0, which would invite an immediate retry storm."""
    return {"Retry-After": str(max(1, round(seconds)))}


async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404 and 405 in our shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    error = ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))
    return error_response(error)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback, answered without one."""
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(ApiError(500, "internal", "internal server error; see the server log"))
