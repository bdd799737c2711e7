"""Recommendations for a known user and for an anonymous history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status

from recsys.errors import UnknownIdError
from service import metrics
from service.deps import StateDep, current_state
from service.params import parse_query, query_openapi
from service.render import recommendations_json
from service.schemas import (
    HistoryRequest,
    RecommendationQuery,
    Recommendations,
    RecommendedItem,
    error_responses,
)
from service.state import Ranked, ServingState, UnknownGenreError

router = APIRouter(tags=["recommendations"])


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
        state.item_json, user_id, ranked.item_ids, ranked.scores, state.version, ranked.strategy
    )
    return Response(body, media_type="application/json")


def unprocessable(exc: Exception) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


@router.get(
    "/users/{user_id}/recommendations",
    operation_id="get_user_recommendations",
    response_model=Recommendations,
    responses=error_responses(503),
    openapi_extra=query_openapi(RecommendationQuery),
)
async def user_recommendations(
    request: Request, user_id: Annotated[str, Path(min_length=1, max_length=255)]
) -> Response:
    """Top k items for a user. Users without interactions get popular items (strategy "popular")."""
    # The hottest endpoint reads its state and query itself: as a dependency and a Query()
    # model they cost FastAPI more time than the recommendation (see service/params.py).
    state = await current_state(request)
    query = parse_query(RecommendationQuery, request.query_params)
    try:
        ranked = state.recommend_user(
            user_id, query.k, query.exclude_seen, query.include_genres, query.exclude_genres
        )
    except UnknownGenreError as exc:
        raise unprocessable(exc) from None
    if ranked.strategy == "popular":
        metrics.FALLBACKS.labels("unknown_user").inc()
    return recommendations_response(state, user_id, ranked)


@router.post(
    "/recommendations",
    operation_id="recommend_for_history",
    response_model=Recommendations,
    responses=error_responses(404, 503),
)
async def history_recommendations(state: StateDep, request: HistoryRequest) -> Response:
    """Top k items for an anonymous user, folded in from the items of their history."""
    try:
        ranked = state.recommend_history(
            request.items,
            request.values,
            request.k,
            request.exclude_seen,
            request.include_genres,
            request.exclude_genres,
        )
    except UnknownIdError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except UnknownGenreError as exc:
        raise unprocessable(exc) from None
    return recommendations_response(state, None, ranked)
