"""Item-to-item similarity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from recsys.errors import UnknownIdError
from service.deps import StateDep
from service.routers.recommendations import as_items
from service.schemas import MAX_K, SimilarItems, error_responses

router = APIRouter(tags=["items"])


@router.get(
    "/items/{item_id}/similar",
    operation_id="get_similar_items",
    response_model=SimilarItems,
    responses=error_responses(404, 503),
)
async def similar_items(
    state: StateDep,
    item_id: Annotated[str, Path(min_length=1, max_length=255)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
) -> SimilarItems:
    """The k items whose vectors are most similar (cosine) to this item's."""
    try:
        ranked = state.similar(item_id, k)
    except UnknownIdError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return SimilarItems(item_id=item_id, items=as_items(state, ranked), model_version=state.version)
