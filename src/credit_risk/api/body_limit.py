"""The declared-size 413: the outermost ASGI layer, before anything reads the body."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from credit_risk.api.errors import body_too_large_detail, error_response


class DeclaredBodyLimit:
    """Outermost ASGI layer: a Content-Length over the cap gets the JSON 413 before anything runs.

    Starlette's limiter (FastAPI's `max_body_size`) caps every body, streamed ones included, but
    answers a declared oversize with its own plain-text 413 from outside the exception handlers:
    this layer answers such a request first, in the one error shape, without reading the body.
    """

    def __init__(self, app: ASGIApp, max_body_size: int):
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            # ASCII digits only (str.isdigit also takes "²"), and no int() of thousands of digits;
            # anything odd is left to the HTTP parser and Starlette's limiter.
            if (
                declared.isascii()
                and declared.isdigit()
                and (len(declared) > 18 or int(declared) > self.max_body_size)
            ):
                detail = body_too_large_detail(self.max_body_size)
                await error_response(413, "body_too_large", detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)
