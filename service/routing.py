"""A route class for the hottest endpoints: FastAPI documents them, the endpoint does the rest.

FastAPI resolves an endpoint's parameters through its dependency machinery on every request:
for ``GET /users/{id}/recommendations`` that machinery cost more than ranking the items. With
:class:`DirectRoute` (FastAPI's documented extension point, a custom ``APIRoute`` class) the
endpoint is called with the request, its validated path parameters and its JSON body model (read
in one pydantic call), and reads its query itself (:func:`service.params.parse_query`). The
OpenAPI schema still comes from the declared signature, and invalid path parameters and bodies get
the 422 answers FastAPI would give (``tests/service/test_routing.py`` compares them).
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, params
from fastapi.datastructures import DefaultPlaceholder
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError, create_model
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose endpoint takes ``(request, **path_params[, body])`` and returns a
    Response.

    Only path parameters, the request and at most one body parameter (a pydantic model sent as
    JSON) are resolved; an endpoint routed this way must not declare dependencies, query, header
    or cookie parameters (it reads them from the request).
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        handler = self.get_route_handler()

        # The route's ASGI app calls the handler directly: FastAPI's request_response wrapper
        # opens two exit stacks per request for dependencies with ``yield``, which this route
        # refuses, and the app's exception middleware answers errors with the same handlers.
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        dependant = self.dependant
        declared = dependant.query_params or dependant.header_params or dependant.cookie_params
        if declared or dependant.dependencies or len(dependant.body_params) > 1:
            raise TypeError(
                f"{self.path}: a DirectRoute endpoint takes the request, path parameters and one "
                "body model only"
            )
        path_model = _path_model(self)
        body = JsonBody(self) if dependant.body_params else None
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            try:
                path = path_model.model_validate(request.path_params)
            except ValidationError as exc:
                raise RequestValidationError(_located("path", exc)) from None
            arguments = path.__dict__
            if body is not None:
                arguments = {**arguments, body.name: await body.read(request)}
            response: Response = await endpoint(request, **arguments)
            return response

        return handler


class JsonBody:
    """A route's one body parameter, a pydantic model, read from the request as FastAPI reads it.

    A JSON body is validated in one pydantic call (``model_validate_json``). Anything that call
    refuses, and any other body, takes FastAPI's own steps (the content type decides whether the
    body is parsed as JSON; ``json.loads``; validation of the result), so every error is the one
    FastAPI answers: 422 ``json_invalid`` at the decode error's position, ``missing`` for an empty
    body, a model error for a body that is not JSON, 400 when the body cannot be read.
    """

    def __init__(self, route: APIRoute) -> None:
        (field,) = route.dependant.body_params
        model = field.field_info.annotation
        embedded = route.body_field is not field  # FastAPI wraps embedded bodies in a model
        if (
            embedded
            or isinstance(field.field_info, params.Form)
            or not isinstance(model, type)
            or not issubclass(model, BaseModel)
            or not field.field_info.is_required()
        ):
            raise TypeError(f"{route.path}: a DirectRoute body is one required pydantic model sent as JSON")
        self.name = field.name
        self.model: type[BaseModel] = model
        strict = getattr(route, "strict_content_type", True)  # FastAPI >= 0.118 has the option
        self.strict_content_type = strict.value if isinstance(strict, DefaultPlaceholder) else strict
        if getattr(route, "max_body_size", None) is not None:  # FastAPI wraps the route's app in it
            raise TypeError(f"{route.path}: set max_body_size on the app for a DirectRoute")

    async def read(self, request: Request) -> BaseModel:
        try:
            raw = await request.body()
        except ClientDisconnect as exc:
            raise HTTPException(400, "There was an error parsing the body") from exc
        content_type = request.headers.get("content-type")
        if raw and content_type == "application/json":  # the common case: one pydantic call
            try:
                return self.model.model_validate_json(raw)
            except ValidationError:
                pass  # FastAPI's steps below give FastAPI's error
        if not raw:
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
            )
        value: Any = raw  # a body that is not JSON is validated as bytes, as FastAPI does
        if self._is_json(content_type):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                error = {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
                raise RequestValidationError([error], body=exc.doc) from None
            except Exception as exc:  # not UTF-8, UTF-16 or UTF-32
                raise HTTPException(400, "There was an error parsing the body") from exc
        try:
            return self.model.model_validate(value, from_attributes=True)
        except ValidationError as exc:
            raise RequestValidationError(_located("body", exc), body=value) from None

    def _is_json(self, content_type: str | None) -> bool:
        """:func:`is_json_media_type`; no content type only when the route is not strict about it."""
        if not content_type:
            return not self.strict_content_type
        return is_json_media_type(content_type)


def is_json_media_type(content_type: str) -> bool:
    """FastAPI's rule for a JSON body: ``application/json`` or ``application/*+json``
    (parameters allowed)."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _located(where: str, exc: ValidationError) -> list[dict[str, Any]]:
    """The errors of ``exc`` with their locations under ``where`` ("path", "body")."""
    return [{**error, "loc": (where, *error["loc"])} for error in exc.errors(include_url=False)]


def _path_model(route: APIRoute) -> type[BaseModel]:
    """A model of the route's path parameters with their declared types and constraints."""
    fields: dict[str, Any] = {
        field.name: (field.field_info.annotation, field.field_info) for field in route.dependant.path_params
    }
    return create_model(f"{route.name}_path", **fields)
