"""Feedback: events are stored and change the user's next recommendation at once."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Request, status
from pydantic import Field
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from recsys.ingest.rules import Rules
from service.deps import ApiKeyDep, EngineDep, HolderDep, SettingsDep
from service.errors import unprocessable
from service.schemas import MAX_EVENTS, InteractionEvent, StoredInteractions, error_responses
from service.state import sync_feedback, touch_stamp
from service.writer import (
    DeadlinePassed,
    EventsConflict,
    EventsRejected,
    Problem,
    load_pipeline,
    pipeline_loaded,
    store_interactions,
)

logger = logging.getLogger("uvicorn.error")

router = APIRouter(tags=["interactions"], dependencies=[ApiKeyDep])

Events = Annotated[
    InteractionEvent | Annotated[list[InteractionEvent], Field(min_length=1, max_length=MAX_EVENTS)],
    Body(description=f"One event, or a list of 1 to {MAX_EVENTS} events."),
]
UNAVAILABLE = "the database is unavailable; retry the request later"


def _location(problem: Problem, in_list: bool) -> list[str | int]:
    """Where a rejected event's problem is, as FastAPI names body fields."""
    location: list[str | int] = ["body", problem.index] if in_list else ["body"]
    return location + ([problem.field] if problem.field else [])


@router.post(
    "/interactions",
    operation_id="post_interactions",
    response_model=StoredInteractions,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 409, 503),
)
async def post_interactions(
    request: Request, events: Events, engine: EngineDep, holder: HolderDep, settings: SettingsDep
) -> StoredInteractions:
    """Store events (users and items are created when new). The user's next recommendation
    excludes the item and is folded in from the updated history; items the model does not know
    are stored and become recommendable after retraining. Events that break the input rules
    (docs/operations.md) are refused with 422 and nothing of the request is stored."""
    batch = events if isinstance(events, list) else [events]
    rules: Rules = request.app.state.rules
    if not pipeline_loaded():  # this worker's first write: its imports do not count against the deadline
        await asyncio.to_thread(load_pipeline)
    timeout = settings.request_timeout_seconds
    deadline = time.monotonic() + timeout
    work = asyncio.to_thread(
        store_interactions,
        engine,
        batch,
        rules,
        now=request.app.state.clock(),
        timeout=timeout,
        deadline=deadline,
    )
    try:
        # The thread may hang on a frozen server that no timeout of its own can end; the client
        # gets its 503 on time and the deadline keeps the abandoned write from committing.
        result = await asyncio.wait_for(work, timeout + 1)
    except EventsRejected as rejected:
        raise unprocessable(
            (_location(problem, isinstance(events, list)), problem.reason) for problem in rejected.problems
        ) from None
    except EventsConflict as conflict:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{conflict}; nothing was stored") from None
    except DataError:
        raise  # the client's value: 422 (service.errors)
    except IntegrityError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "a concurrent request stored the same event; nothing was stored"
        ) from None
    except (SQLAlchemyError, TimeoutError, DeadlinePassed) as exc:
        logger.warning("storing interactions failed: %s", exc)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, UNAVAILABLE) from None
    state = holder.current
    not_in_model: list[str] = []
    if state is not None:
        not_in_model = sorted({event.item_id for event in batch if event.item_id not in state.items})
        try:
            await asyncio.to_thread(sync_feedback, engine, state)
        except SQLAlchemyError as exc:  # stored; other requests sync when the database answers
            logger.warning("feedback sync failed after a write: %s", exc)
    touch_stamp(request.app.state.stamp_path)
    return StoredInteractions(
        stored=result.stored,
        duplicates=result.duplicates,
        conflicting=result.conflicting,
        new_users=result.new_users,
        new_items=result.new_items,
        not_in_model=not_in_model,
    )
