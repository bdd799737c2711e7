"""A route class for the hottest endpoints: FastAPI documents them, the endpoint does the rest.

FastAPI resolves an endpoint's parameters through its dependency machinery on every request:
for ``GET /users/{id}/recommendations`` that machinery cost more than ranking the items. With
:class:`DirectRoute` (FastAPI's documented extension point, a custom ``APIRoute`` class) the
endpoint is called with the request and its validated path parameters only, and reads its query
itself (:func:`service.params.parse_query`). The OpenAPI schema still comes from the declared
signature, and invalid path parameters get the 422 answer FastAPI would give.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError, create_model
from starlette.types import Receive, Scope, Send


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose endpoint takes ``(request, **path_params)`` and returns a Response.

    Only path parameters and the request are resolved; an endpoint routed this way must not
    declare dependencies, query, header or body parameters (it reads them from the request).
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
        declared = dependant.query_params or dependant.header_params or dependant.body_params
        if declared or dependant.dependencies or dependant.cookie_params:
            raise TypeError(f"{self.path}: a DirectRoute endpoint takes the request and path parameters only")
        path_model = _path_model(self)
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            try:
                params = path_model.model_validate(request.path_params)
            except ValidationError as exc:
                errors = [
                    {**error, "loc": ("path", *error["loc"])} for error in exc.errors(include_url=False)
                ]
                raise RequestValidationError(errors) from None
            response: Response = await endpoint(request, **params.__dict__)
            return response

        return handler


def _path_model(route: APIRoute) -> type[BaseModel]:
    """A model of the route's path parameters with their declared types and constraints."""
    fields: dict[str, Any] = {
        field.name: (field.field_info.annotation, field.field_info) for field in route.dependant.path_params
    }
    return create_model(f"{route.name}_path", **fields)
