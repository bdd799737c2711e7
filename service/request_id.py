"""Every response carries ``X-Request-ID``: the client's, when it sent a usable one, else a new one.

A plain ASGI middleware (no task per request, unlike Starlette's BaseHTTPMiddleware). The id is
also put in ``scope["state"]["request_id"]`` for handlers, and in :data:`recsys.log.request_id`
for the duration of the request, so every log line written meanwhile (uvicorn's access line
included) carries it (``RECSYS_LOG_FORMAT=json``).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from recsys.log import request_id as current_request_id

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
#: What is echoed: up to 128 characters that are safe in a header and a log line.
_USABLE = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")

RESPONSE_HEADER_DOC = {
    HEADER: {
        "description": "The request's id: the X-Request-ID the client sent (letters, digits and "
        "._:/+=@- up to 128 characters), or a new one.",
        "schema": {"type": "string"},
    }
}


def new_id() -> str:
    """32 random hex digits (as many random bits as a UUID4, at a third of the cost)."""
    return secrets.token_hex(16)


class RequestIdMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for key, value in scope["headers"]:
            if key == _HEADER_KEY:
                if _USABLE.fullmatch(value):
                    request_id = value
                break
        header_value = request_id if request_id is not None else new_id().encode()
        scope.setdefault("state", {})["request_id"] = header_value.decode()

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (_HEADER_KEY, header_value)]
            await send(message)

        token = current_request_id.set(header_value.decode())
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)
