"""Refuse request bodies over a byte limit with 413, whether or not the client says their size upfront.

Why not FastAPI's own ``FastAPI(max_body_size=...)`` (FastAPI 0.165.0, Starlette 1.10.0): for a declared
``Content-Length`` over the limit, Starlette's ``RequestBodyLimitMiddleware`` replaces whatever response
the app starts with a plain-text ``Content Too Large``, so no exception handler can say what the limit is;
and it sits outside every user middleware. Speed is no reason either way: both cost the same CPU per
request, within the noise. ``tests/test_api.py::
test_fastapi_body_limit_still_answers_a_bare_413`` fails once FastAPI's answer can be worded: then switch.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit.

    An ``HTTPException`` on purpose: FastAPI re-raises those from body parsing (other errors become a
    generic 400), so the app's exception handling turns it into a normal JSON 413.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=too_large_message(limit))


def too_large_message(limit: int) -> str:
    """What a client is told."""
    return f"The request body is larger than the {limit:,}-byte limit; send fewer or shorter texts."


class BodyLimitMiddleware:
    """Pure-ASGI body size limit.

    A declared ``Content-Length`` over the limit is refused before the app runs or a byte is read; a
    chunked (or lying) body is counted as it is received, and reading stops at the first byte too many.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await JSONResponse({"detail": too_large_message(limit)}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, receive_within_limit, send)


def _content_length(scope: Scope) -> int | None:
    # A plain scan of the raw headers: cheaper than building a Headers object on every request.
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
