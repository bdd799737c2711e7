"""DirectRoute reads a body model as FastAPI does: the same value, the same errors.

Two apps take ``HistoryRequest`` at ``POST /echo``: one declared the ordinary way (FastAPI reads
the body), one through :class:`service.routing.DirectRoute`. Every body below must get the same
status and the same response body from both, with FastAPI's default error handlers and with the
service's own (``service.errors``).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from service import errors
from service.routing import DirectRoute
from service.schemas import HistoryRequest

JSON = {"content-type": "application/json"}

#: (content, headers): valid bodies, then every way a body can be wrong.
BODIES: list[tuple[bytes, dict[str, str]]] = [
    (b'{"items": ["a", "b"], "k": 3, "values": [1, 2.5]}', JSON),
    (b'{"items": ["a"], "k": "7", "exclude_seen": "yes", "offset": 10.0}', JSON),  # lax conversions
    (b'{"items": ["a"], "items": ["b", "c"]}', JSON),  # a repeated key: the last one counts
    (b'{"items": ["\\u00e9t\\u00e9", "\\ud83c\\udfac"]}', JSON),
    (b'{"items": ["a"]}', {"content-type": "application/json; charset=utf-8"}),
    (b'{"items": ["a"]}', {"content-type": "application/vnd.shop+json"}),
    (b"", JSON),  # missing body
    (b"", {}),
    (b'{"items": ["a"]}', {}),  # no content type: FastAPI does not parse it as JSON
    (b'{"items": ["a"]}', {"content-type": "text/plain"}),  # wrong content type
    (b'{"items": ["a"]}', {"content-type": "application/x-www-form-urlencoded"}),
    (b'{"items": [', JSON),  # invalid JSON
    (b"{not json", JSON),
    (b'{"items": ["a"]} trailing', JSON),
    (b'{"items": ["\xff"]}', JSON),  # not UTF-8
    (b'{"items": ["\\ud800"]}', JSON),  # a lone surrogate
    (b"[" * 100_000 + b"]" * 100_000, JSON),  # nested too deep
    (b"null", JSON),
    (b"[1, 2]", JSON),
    (b'"items"', JSON),
    (b"{}", JSON),
    (b'{"items": []}', JSON),
    (b'{"items": ["a"], "colour": "red"}', JSON),
    (b'{"items": ["a"], "k": 0}', JSON),
    (b'{"items": ["a"], "k": "many"}', JSON),
    (b'{"items": ["a"], "k": 1e400}', JSON),
    (b'{"items": ["a"], "k": true}', JSON),
    (b'{"items": ["a", "b"], "values": [1.0]}', JSON),  # the model's own validator
    (b'{"items": ["a"], "values": [NaN]}', JSON),
    (b'{"items": ["a"], "values": [Infinity]}', JSON),
    (b'{"items": [""], "exclude_items": [5]}', JSON),
    (b'{"items": ["' + b"x" * 300 + b'"]}', JSON),
]


def echo_apps(service_handlers: bool) -> tuple[TestClient, TestClient]:
    """The body read by FastAPI, and the same body read by DirectRoute."""
    stock, direct = FastAPI(), FastAPI()

    @stock.post("/echo")
    async def stock_echo(history: HistoryRequest) -> dict[str, Any]:
        return history.model_dump()

    async def direct_echo(request: Request, history: HistoryRequest) -> Response:
        return JSONResponse(history.model_dump())

    router = APIRouter()
    router.add_api_route("/echo", direct_echo, methods=["POST"], route_class_override=DirectRoute)
    direct.include_router(router)
    if service_handlers:
        errors.install(stock)
        errors.install(direct)
    return (
        TestClient(stock, raise_server_exceptions=False),
        TestClient(direct, raise_server_exceptions=False),
    )


@pytest.mark.parametrize("service_handlers", [False, True], ids=["fastapi-handlers", "service-handlers"])
def test_direct_route_reads_a_body_as_fastapi_does(service_handlers: bool) -> None:
    stock, direct = echo_apps(service_handlers)
    statuses = set()
    for content, headers in BODIES:
        expected = stock.post("/echo", content=content, headers=headers)
        answered = direct.post("/echo", content=content, headers=headers)
        case = (content[:60], headers)
        assert answered.status_code == expected.status_code, case
        assert answered.content == expected.content, case
        statuses.add(expected.status_code)
    assert statuses >= {200, 422}  # both answers were exercised
    if not service_handlers:
        assert 400 in statuses  # FastAPI's "error parsing the body" (the service makes it a 422)


def test_direct_route_errors_have_fastapis_shape() -> None:
    """The cases a client meets most, spelled out (the comparison above holds them to FastAPI)."""
    _, direct = echo_apps(service_handlers=True)
    invalid = direct.post("/echo", content=b'{"items": [', headers=JSON).json()["detail"]
    assert invalid == [
        {
            "type": "json_invalid",
            "loc": ["body", 11],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": "Expecting value"},
        }
    ]
    missing = direct.post("/echo", headers=JSON).json()["detail"]
    assert missing == [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
    plain = direct.post("/echo", content=b'{"items": ["a"]}', headers={"content-type": "text/plain"})
    assert plain.status_code == 422
    # FastAPI's own errors ("Input should be a valid dictionary", twice) do not name the problem.
    assert plain.json()["detail"] == [
        {
            "loc": ["body"],
            "msg": "send the body as JSON with Content-Type: application/json "
            "(the content type was 'text/plain')",
            "type": "content_type",
        }
    ]


def test_direct_route_refuses_what_it_does_not_resolve() -> None:
    async def with_query(request: Request, k: int) -> Response:
        return Response()

    async def two_bodies(request: Request, first: HistoryRequest, second: HistoryRequest) -> Response:
        return Response()

    for endpoint in (with_query, two_bodies):
        with pytest.raises(TypeError, match="DirectRoute"):
            DirectRoute("/x", endpoint, methods=["POST"])
