"""Item-to-item similarity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status

from recsys.errors import UnknownIdError
from recsys.ingest.rules import normalise_id
from recsys.retrieval import Ranked, UnknownGenreError
from service.deps import current_state
from service.params import parse_query, query_openapi
from service.request_id import new_id
from service.routers.recommendations import LIST_RESPONSE, as_items, rank_options, unprocessable
from service.schemas import SimilarItems, SimilarQuery, error_responses

router = APIRouter(tags=["items"])


@router.get(
    "/items/{item_id:path}/similar",
    operation_id="get_similar_items",
    response_model=SimilarItems,
    responses={**LIST_RESPONSE, **error_responses(404, 503)},
    openapi_extra=query_openapi(SimilarQuery),
)
async def similar_items(
    request: Request,
    item_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=255,
            description="External item id; any characters, '/' included (percent-encode reserved ones).",
            examples=["50"],
        ),
    ],
) -> SimilarItems:
    """The k items whose vectors are most similar (cosine) to this item's, with the same paging,
    genre filters and exclusions as recommendations.

    ```
    curl 'http://127.0.0.1:8000/items/50/similar?k=5'
    curl 'http://127.0.0.1:8000/items/50/similar?k=5&offset=5&include_genres=Sci-Fi&exclude_items=181'
    curl 'http://127.0.0.1:8000/items/catalog%2Fdvd%2F7/similar'              # an id with '/'
    ```
    """
    state = await current_state(request)
    query = parse_query(SimilarQuery, request.query_params)
    item_id = normalise_id(item_id)  # as ingestion stored it
    try:
        index = state.retriever.item_indices([item_id])
        ranking = state.retriever.similar(index, rank_options(state, query))
    except UnknownIdError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except UnknownGenreError as exc:
        raise unprocessable(exc) from None
    return SimilarItems(
        item_id=item_id,
        items=as_items(state, Ranked.row(ranking)),
        model_version=state.version,
        recommendation_id=new_id(),
    )
