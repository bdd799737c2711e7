"""How errors become responses: client mistakes are 4xx, outages 503, bugs a logged 500.

- Every 422 has FastAPI's shape, ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``, the
  one the OpenAPI schema documents, including 422s raised by the endpoints themselves.
- Error bodies never fail to render: values JSON cannot carry (NaN, infinities, lone surrogates)
  are shown as text.
- A database *data* error (a value out of the column's range, a NUL character) is the client's
  422; an unreachable or timed-out database is 503.
- Anything else is a JSON 500 carrying a request id, with the traceback in the log.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.ingest.rules import ID_PATTERN, printable_text
from service.routing import is_json_media_type

logger = logging.getLogger("uvicorn.error")

INTERNAL = "internal server error: the request could not be completed; quote the request_id when reporting it"


def unprocessable(problems: Iterable[tuple[Sequence[str | int], str]]) -> RequestValidationError:
    """A 422 naming each problem's location (e.g. ``("body", 0, "value")``) and reason."""
    return RequestValidationError(
        [{"loc": tuple(location), "msg": message, "type": "value_error"} for location, message in problems]
    )


def _safe(value: Any) -> Any:
    """``value`` with what JSON cannot encode (NaN, inf, lone surrogates, bytes) turned into text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return printable_text(value)
        return value
    if isinstance(value, bytes):
        return printable_text(value.decode("utf-8", errors="backslashreplace"))
    if isinstance(value, dict):
        return {str(_safe(key)): _safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _safe(str(value))


def request_id(request: Request) -> str:
    found = getattr(request.state, "request_id", None) or request.headers.get("x-request-id")
    return str(found) if found else uuid.uuid4().hex


def _not_json(request: Request) -> str | None:
    """The content type of a body FastAPI did not read as JSON (None: JSON or no body), by
    FastAPI's rule: ``application/json`` or ``application/*+json``."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    content_type = request.headers.get("content-type", "")
    return None if content_type and is_json_media_type(content_type) else content_type or "none"


#: How pydantic names a union member in an error's location: a model ("InteractionEvent") or a
#: generic ("list[InteractionEvent]"); field names are lower case.
_UNION_MEMBER = re.compile(r"^(?:[A-Z]\w*|list\[.*\])$")


def _body_member_errors(errors: Sequence[dict[str, Any]], body: Any) -> list[dict[str, Any]]:
    """The errors of the union member the body was meant as, located as if it were the only one.

    A body that is one event or a list of events is validated against both, and pydantic reports
    both members' errors under their type names (``["body", "InteractionEvent", "value"]`` next
    to "Input should be a valid list"); the client sent one of them: a list is the list member,
    anything else the other. So a list's errors read ``["body", 2, "value"]`` and one event's
    ``["body", "value"]``."""

    def member(error: dict[str, Any]) -> str | None:
        loc = tuple(error.get("loc", ()))
        if len(loc) > 1 and loc[0] == "body" and isinstance(loc[1], str) and _UNION_MEMBER.match(loc[1]):
            return loc[1]
        return None

    members = {name for error in errors if (name := member(error)) is not None}
    if len(members) < 2:
        return list(errors)
    as_list = isinstance(body, list)
    kept = []
    for error in errors:
        name = member(error)
        if name is not None and name.startswith("list[") != as_list:
            continue
        if name is not None:
            loc = tuple(error["loc"])
            error = {**error, "loc": (loc[0], *loc[2:])}
        kept.append(error)
    return kept or list(errors)


#: Inputs echoed in an error up to this many entries (a list of 5001 events is not sent back).
MAX_ECHOED = 100


def _readable(error: dict[str, Any]) -> dict[str, Any]:
    """Pydantic's error in the words file ingestion uses where its own name a regular expression,
    and without echoing a long list or object back."""
    if (
        error.get("type") == "string_pattern_mismatch"
        and (error.get("ctx") or {}).get("pattern") == ID_PATTERN
    ):
        error = {
            **error,
            "msg": "an id must hold something other than white space, and no control characters",
        }
        error.pop("ctx", None)
    value = error.get("input")
    if isinstance(value, list | dict) and len(value) > MAX_ECHOED:
        error = {**error, "input": f"a {type(value).__name__} of {len(value)} entries (not echoed)"}
    return error


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    sent_as = _not_json(request)
    if sent_as is not None and any(tuple(error.get("loc", ()))[:1] == ("body",) for error in exc.errors()):
        # FastAPI validated the body as form data or bytes, and its errors ("Input should be a
        # valid dictionary") do not say what is wrong: the content type.
        message = (
            f"send the body as JSON with Content-Type: application/json (the content type was {sent_as!r})"
        )
        detail = [{"loc": ["body"], "msg": printable_text(message), "type": "content_type"}]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    errors = [
        {
            key: _safe(value)
            for key, value in _readable(error).items()
            if key in ("loc", "msg", "type", "input", "ctx")
        }
        for error in _body_member_errors(exc.errors(), exc.body)
    ]
    return JSONResponse(
        {"detail": jsonable_encoder(errors)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail: Any = exc.detail
    if exc.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT and not isinstance(detail, list):
        detail = [{"loc": ["request"], "msg": str(detail), "type": "value_error"}]
    elif exc.status_code == status.HTTP_400_BAD_REQUEST:  # FastAPI's "error parsing the body"
        detail = [{"loc": ["body"], "msg": str(detail), "type": "json_invalid"}]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    return JSONResponse({"detail": _safe(detail)}, status_code=exc.status_code, headers=exc.headers)


async def database_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
    if isinstance(exc, DataError):
        first = str(exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc).splitlines()
        message = f"the database refused a value: {first[0] if first else 'data error'}"
        detail = [{"loc": ["body"], "msg": printable_text(message), "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated is False and not _is_outage(exc):
        return await unhandled(request, exc)
    logger.warning("database unavailable: %s", exc)
    return JSONResponse(
        {"detail": "the database is unavailable; retry the request later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def _is_outage(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)


async def unhandled(request: Request, exc: Exception) -> JSONResponse:
    identifier = request_id(request)
    logger.error(
        "request %s %s failed (request id %s)", request.method, request.url.path, identifier, exc_info=exc
    )
    return JSONResponse(
        {"detail": INTERNAL, "request_id": identifier},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        headers={"X-Request-ID": identifier},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(SQLAlchemyError, database_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unhandled)
