"""Erasure: users, items and single events, removed from the database and the served state."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status
from sqlalchemy.exc import SQLAlchemyError
from starlette.convertors import PathConvertor, register_url_convertor

from recsys.db.erasure import Erased, Target, erase
from recsys.ingest.rules import normalise_id
from service.deps import ApiKeyDep, SettingsDep
from service.schemas import Deleted, error_responses
from service.state import touch_stamp

logger = logging.getLogger("uvicorn.error")

router = APIRouter(tags=["deletion"], dependencies=[ApiKeyDep])


class _UserPath(PathConvertor):
    """A user id with any characters, '/' included, except a trailing '/recommendations': DELETE
    on a user's recommendations stays a 405 (such an id is erased with ``recsys delete user``)."""

    regex = r".*(?<!/recommendations)"


class _ItemPath(PathConvertor):
    """An item id as :class:`_UserPath`, for the similar items path."""

    regex = r".*(?<!/similar)"


register_url_convertor("user_path", _UserPath())
register_url_convertor("item_path", _ItemPath())

#: Ids may hold any character, '/' included (hence the path convertors).
ANY_ID = "Any characters, '/' included (percent-encode reserved ones)."
Identifier = Annotated[str, Path(min_length=1, max_length=255, description=ANY_ID)]


async def _erase(request: Request, target: Target, external_id: str, settings: SettingsDep) -> Deleted:
    engine = request.app.state.engine
    timeout = settings.request_timeout_seconds
    try:
        work = asyncio.to_thread(erase, engine, target, external_id, source="api", timeout=timeout)
        erased: Erased = await asyncio.wait_for(work, timeout + 1)
    except (SQLAlchemyError, TimeoutError) as exc:
        logger.warning("deleting %s %r failed: %s", target, external_id, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the database is unavailable; retry the request later"
        ) from None
    if not erased.found:
        what = "event_id" if target == "interaction" else f"{target} id"
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stored {target} with {what} {external_id!r}")
    state = request.app.state.holder.current
    if state is not None and target == "user":
        state.forget_user(external_id)
    elif state is not None and target == "item":
        state.forget_item(external_id)
    touch_stamp(request.app.state.stamp_path)
    return Deleted(target=target, id=external_id, interactions=erased.interactions)


@router.delete(
    "/users/{user_id:user_path}",
    operation_id="delete_user",
    response_model=Deleted,
    responses=error_responses(401, 404, 503),
)
async def delete_user(request: Request, user_id: Identifier, settings: SettingsDep) -> Deleted:
    """Erase a user: their interactions, offline recommendations and the user itself. Their next
    recommendation is the one of an unknown user, and the next trained version never sees them."""
    return await _erase(request, "user", normalise_id(user_id), settings)


@router.delete(
    "/items/{item_id:item_path}",
    operation_id="delete_item",
    response_model=Deleted,
    responses=error_responses(401, 404, 503),
)
async def delete_item(request: Request, item_id: Identifier, settings: SettingsDep) -> Deleted:
    """Erase an item: its interactions, its places in offline recommendations and the item itself.
    It is never recommended again."""
    return await _erase(request, "item", normalise_id(item_id), settings)


@router.delete(
    "/interactions/{event_id:path}",
    operation_id="delete_interaction",
    response_model=Deleted,
    responses=error_responses(401, 404, 503),
)
async def delete_interaction(request: Request, event_id: Identifier, settings: SettingsDep) -> Deleted:
    """Delete the event posted with this ``event_id``."""
    return await _erase(request, "interaction", event_id, settings)
