"""Feedback: events are stored and change the user's next recommendation at once."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Request, status
from sqlalchemy.exc import SQLAlchemyError

from service.deps import ApiKeyDep, EngineDep, HolderDep
from service.schemas import MAX_EVENTS, InteractionEvent, StoredInteractions, error_responses
from service.state import sync_feedback, touch_stamp
from service.writer import store_interactions

logger = logging.getLogger("uvicorn.error")

router = APIRouter(tags=["interactions"], dependencies=[ApiKeyDep])

Events = Annotated[
    InteractionEvent | list[InteractionEvent],
    Body(description=f"One event, or a list of up to {MAX_EVENTS} events."),
]


@router.post(
    "/interactions",
    operation_id="post_interactions",
    response_model=StoredInteractions,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 503),
)
def post_interactions(
    request: Request, events: Events, engine: EngineDep, holder: HolderDep
) -> StoredInteractions:
    """Store events (users and items are created when new). The user's next recommendation
    excludes the item and is folded in from the updated history; items the model does not know
    are stored and become recommendable after retraining."""
    batch = events if isinstance(events, list) else [events]
    if not batch or len(batch) > MAX_EVENTS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"body: send 1 to {MAX_EVENTS} events, got {len(batch)}",
        )
    try:
        result = store_interactions(engine, batch)
    except SQLAlchemyError as exc:
        logger.warning("storing interactions failed: %s", exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the database is unavailable; retry the request later"
        ) from None
    state = holder.current
    not_in_model: list[str] = []
    if state is not None:
        not_in_model = sorted({event.item_id for event in batch if event.item_id not in state.items})
        try:
            sync_feedback(engine, state)
        except SQLAlchemyError as exc:  # stored; other requests sync when the database answers
            logger.warning("feedback sync failed after a write: %s", exc)
    touch_stamp(request.app.state.stamp_path)
    return StoredInteractions(
        stored=result.stored,
        duplicates=result.duplicates,
        new_users=result.new_users,
        new_items=result.new_items,
        not_in_model=not_in_model,
    )
