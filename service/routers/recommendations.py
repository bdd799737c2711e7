"""Recommendations for a known user and for an anonymous history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response, status

from recsys.errors import DataError, UnknownIdError
from recsys.ingest.rules import Rules, normalise_id
from recsys.retrieval import Ranked, RankOptions, UnknownGenreError
from service import metrics
from service.deps import current_state
from service.errors import unprocessable as unprocessable_at
from service.params import parse_query, query_openapi
from service.render import recommendations_json
from service.request_id import RESPONSE_HEADER_DOC, new_id
from service.routing import DirectRoute
from service.schemas import (
    HistoryRequest,
    ListQuery,
    RecommendationQuery,
    Recommendations,
    RecommendedItem,
    error_responses,
)
from service.state import ServingState

router = APIRouter(tags=["recommendations"])

#: Success response documentation shared by the list endpoints (the request id header).
LIST_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"headers": RESPONSE_HEADER_DOC}}

USER_ID_EXAMPLES = {
    "plain": {"summary": "an ordinary id", "value": "196"},
    "reserved characters": {
        "summary": "an id with '/' (send it percent-encoded or as is)",
        "value": "shop/eu/42",
    },
}


def rank_options(
    state: ServingState, query: ListQuery | HistoryRequest, exclude_seen: bool = True
) -> RankOptions:
    """The retriever's options for a list query (item ids the version does not know are dropped:
    they cannot be recommended anyway)."""
    return RankOptions(
        k=query.k,
        offset=query.offset,
        exclude_seen=exclude_seen,
        include_genres=tuple(query.include_genres),
        exclude_genres=tuple(query.exclude_genres),
        exclude_items=state.retriever.known_item_indices(query.exclude_items)
        if query.exclude_items
        else None,
    )


def as_items(state: ServingState, ranked: Ranked) -> list[RecommendedItem]:
    titles = state.catalogue.titles
    genres = state.catalogue.genres
    external = state.items.external_ids
    return [
        RecommendedItem(item_id=str(external[i]), title=titles[i], genres=genres[i], score=float(score))
        for i, score in zip(ranked.item_ids.tolist(), ranked.scores.tolist(), strict=True)
    ]


def recommendations_response(state: ServingState, user_id: str | None, ranked: Ranked) -> Response:
    """A ``Recommendations`` body written without building models (see service/render.py)."""
    body = recommendations_json(
        state.item_json, user_id, ranked.item_ids, ranked.scores, state.version, ranked.strategy, new_id()
    )
    return Response(body, media_type="application/json")


def unprocessable(exc: Exception) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


async def user_recommendations(
    request: Request,
    user_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=255,
            description="External user id; any characters, '/' included (percent-encode reserved ones).",
            openapi_examples=USER_ID_EXAMPLES,
        ),
    ],
) -> Response:
    """Top k items for a user. Users without interactions get popular items (strategy "popular");
    users whose feedback arrived after the model was trained are folded in ("folded-in").

    Ids may hold any character, `/` included. Examples:

    ```
    curl 'http://127.0.0.1:8000/users/196/recommendations?k=5'
    curl 'http://127.0.0.1:8000/users/shop%2Feu%2F42/recommendations'       # an id with '/'
    curl 'http://127.0.0.1:8000/users/196/recommendations?k=5&offset=5'     # the second page
    curl 'http://127.0.0.1:8000/users/196/recommendations?exclude_items=50&exclude_items=181'
    curl 'http://127.0.0.1:8000/users/196/recommendations?include_genres=Comedy&exclude_genres=Horror'
    curl -H 'X-Request-ID: req-42' -i 'http://127.0.0.1:8000/users/196/recommendations'  # echoed
    ```

    Every response carries `X-Request-ID` (the one sent, or a new one), and every list a
    `recommendation_id` to send back with feedback on its items. Browser apps on other origins
    need `RECSYS_CORS_ORIGINS` (off by default):

    ```
    RECSYS_CORS_ORIGINS='["https://shop.example"]' recsys serve
    curl -i -H 'Origin: https://shop.example' 'http://127.0.0.1:8000/users/196/recommendations'
    ```
    """
    # The hottest endpoint reads its state and query itself (a DirectRoute): FastAPI's
    # dependency machinery cost more time than the recommendation (see service/routing.py).
    state = await current_state(request)
    query = parse_query(RecommendationQuery, request.query_params)
    user_id = normalise_id(user_id)  # " 42 " and a decomposed "é" name the user ingestion stored
    try:
        ranked = state.retriever.recommend_user(user_id, rank_options(state, query, query.exclude_seen))
    except UnknownGenreError as exc:
        raise unprocessable(exc) from None
    if ranked.strategy == "popular":
        metrics.FALLBACKS.labels("unknown_user").inc()
    return recommendations_response(state, user_id, ranked)


router.add_api_route(
    "/users/{user_id:path}/recommendations",
    user_recommendations,
    methods=["GET"],
    operation_id="get_user_recommendations",
    response_model=Recommendations,
    responses={**LIST_RESPONSE, **error_responses(503)},
    openapi_extra=query_openapi(RecommendationQuery),
    route_class_override=DirectRoute,
)


async def history_recommendations(request: Request, history: HistoryRequest) -> Response:
    """Top k items for an anonymous user, folded in from the items of their history.

    ```
    curl -X POST http://127.0.0.1:8000/recommendations -H 'Content-Type: application/json' \\
         -d '{"items": ["50", "181", "172"], "k": 5, "offset": 5, "exclude_items": ["100"]}'
    ```
    """
    state = await current_state(request)  # a DirectRoute as well: the body is one pydantic call
    if history.values is not None:  # only values an event could store (the input rules)
        rules: Rules = request.app.state.rules
        if problems := rules.history_value_problems(history.values):
            raise unprocessable_at((("body", "values", position), reason) for position, reason in problems)
    try:
        options = rank_options(state, history, history.exclude_seen)
        ranked = state.retriever.recommend_history(history.items, history.values, options)
    except UnknownIdError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except DataError as exc:  # an unknown genre, or values the model cannot fold in (negative for iALS)
        raise unprocessable(exc) from None
    return recommendations_response(state, None, ranked)


router.add_api_route(
    "/recommendations",
    history_recommendations,
    methods=["POST"],
    operation_id="recommend_for_history",
    response_model=Recommendations,
    responses={**LIST_RESPONSE, **error_responses(404, 503)},
    route_class_override=DirectRoute,
)
