"""Bearer-key auth as ASGI middleware, so no route (404s and /metrics included) is missed.

Only the probes `/livez` and `/readyz` stay open: an orchestrator must reach them without a
secret. Keys are compared with `hmac.compare_digest`, whose time does not depend on where the
first differing byte is. The admin key opens every route and is the only one that opens
`/v1/model/reload`; without an admin key configured, reload is off.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from frugalml.serve.errors import ApiError, error_response

OPEN_PATHS = frozenset({"/livez", "/readyz"})
ADMIN_PATHS = frozenset({"/v1/model/reload"})


class BearerAuth:
    def __init__(self, app: ASGIApp, *, api_key: str | None, admin_key: str | None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.admin_key = admin_key.encode() if admin_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            error = self.check(scope["path"], _bearer(scope))
            if error is not None:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, path: str, token: bytes | None) -> ApiError | None:
        admin = path in ADMIN_PATHS
        if admin and self.admin_key is None:
            return ApiError(
                403,
                "reload_disabled",
                "model reload is off on this server; start it with --admin-key-env VAR",
            )
        if not admin and self.api_key is None:
            return None
        if token is None:
            return ApiError(
                401,
                "unauthorized",
                "this server needs a key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": 'Bearer realm="frugalml"'},
            )
        is_admin = _same(token, self.admin_key)
        if is_admin or (not admin and _same(token, self.api_key)):
            return None
        what = "the admin key" if admin else "a valid key"
        return ApiError(403, "forbidden", f"the key sent is not {what} for {path}")


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    return None


def _same(token: bytes, key: bytes | None) -> bool:
    return key is not None and hmac.compare_digest(token, key)
