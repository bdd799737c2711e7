"""Typed dependencies: settings, engine, the served state, and the API-key check."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from recsys.settings import Settings
from service.state import ServingState, StateHolder, stamp_time, sync_feedback

logger = logging.getLogger("uvicorn.error")

INVALID_KEY = "missing or invalid API key: send the key configured in RECSYS_API_KEY in the X-API-Key header"
NO_KEY_CONFIGURED = "write and admin endpoints are disabled: set RECSYS_API_KEY on the server to enable them"
NO_MODEL = "no model version is loaded yet: train and promote one (recsys train ... --promote)"


# Dependencies are ``async def`` although they do no I/O: FastAPI runs a plain ``def`` dependency
# in its thread pool, which costs more than the recommendation itself on the hot path.


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_holder(request: Request) -> StateHolder:
    holder: StateHolder = request.app.state.holder
    return holder


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
HolderDep = Annotated[StateHolder, Depends(get_holder)]


async def current_state(request: Request) -> ServingState:
    """The state to answer with, taken once per request; synced first when another worker
    stored feedback since this one last looked (one stat call when nothing changed).

    Reads the app state directly instead of through sub-dependencies: every recommendation
    request resolves this, and each dependency level costs FastAPI measurable time."""
    holder: StateHolder = request.app.state.holder
    engine: Engine = request.app.state.engine
    state = holder.current
    if state is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, NO_MODEL)
    stamp = stamp_time(request.app.state.stamp_file)
    if stamp != holder.stamp_seen:
        holder.stamp_seen = stamp
        try:
            await asyncio.to_thread(sync_feedback, engine, state)
        except SQLAlchemyError as exc:  # reads go on from memory while the database is away
            logger.warning("feedback sync failed, serving the last known interactions: %s", exc)
    return state


StateDep = Annotated[ServingState, Depends(current_state)]


async def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="The key set in RECSYS_API_KEY.")] = None,
) -> None:
    """Write and admin endpoints need X-API-Key; missing and wrong keys get the same answer."""
    if settings.api_key is None or not settings.api_key.get_secret_value():
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, NO_KEY_CONFIGURED)
    expected = settings.api_key.get_secret_value().encode()
    if not secrets.compare_digest((x_api_key or "").encode(), expected):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, INVALID_KEY)


ApiKeyDep = Depends(require_api_key)
