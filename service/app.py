"""The FastAPI application factory (``uvicorn service.app:create_app --factory``).

Nothing happens at import: the lifespan loads the production version, its index, the seen items
and the catalogue, prints the start-up time, and starts the task that swaps in newly promoted
versions. Without a loaded version the service still starts and answers 503 until one appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import scipy.linalg  # noqa: F401  (loads SciPy's own OpenBLAS before the lifespan limits it)
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import SQLAlchemyError
from threadpoolctl import threadpool_limits

import recsys
from recsys.db import get_engine
from recsys.errors import RecsysError
from recsys.ingest.rules import Rules
from recsys.settings import Settings, get_settings
from service import errors
from service.metrics import MetricsMiddleware
from service.request_id import HEADER, RequestIdMiddleware
from service.routers import (
    admin,
    dashboard,
    deletions,
    health,
    interactions,
    items,
    recommendations,
    versions,
)
from service.state import StateHolder, describe, feedback_stamp, reload_production, stamp_time

logger = logging.getLogger("uvicorn.error")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: the process settings from the environment)."""
    settings = settings or get_settings()
    # Swagger UI from the assets fastapi-offline ships (no CDN), like the dashboard. No ReDoc:
    # its page loads a logo from the internet.
    app = FastAPIOffline(
        redoc_url=None,
        title="recsys",
        version=recsys.__version__,
        summary="Top-k recommendations, similar items and real-time feedback.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.holder = StateHolder()
    app.state.stamp_path = feedback_stamp(settings)
    app.state.stamp_file = str(app.state.stamp_path)  # what each request stats
    app.state.rules = Rules.from_settings(settings)
    app.state.clock = time.time  # the "now" of the timestamp rule; tests may fix it
    app.add_middleware(MetricsMiddleware)
    if settings.cors_origins:  # off unless configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key", HEADER],
            expose_headers=[HEADER],
        )
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer carries the id
    errors.install(app)
    # The recommendation routes join the app's own routes rather than being included: FastAPI
    # matches an included router's routes through per-request context lookups, which cost the
    # hottest endpoint about a tenth of its time. (That router has no prefix or dependencies.)
    app.router.routes.extend(recommendations.router.routes)
    for module in (items, interactions, deletions, admin, versions, health, dashboard):
        app.include_router(module.router)
    dashboard.mount_static(app)
    app.openapi = lambda: _openapi_with_rules(app)  # type: ignore[method-assign]
    return app


def _openapi_with_rules(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema with the configured input rules as bounds of the event fields.

    The latest accepted timestamp moves with the clock: each request for the schema states it
    as of that moment, so a client that obeys the schema it read is never refused by the rule."""
    if app.openapi_schema is None:
        app.openapi_schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
    schema = app.openapi_schema
    rules: Rules = app.state.rules
    event = schema.get("components", {}).get("schemas", {}).get("InteractionEvent")
    if event is not None:
        low, high = rules.value_envelope
        event["properties"]["value"].update(minimum=low, maximum=high)
        for option in event["properties"]["timestamp"]["anyOf"]:
            if option.get("type") == "integer":
                option.update(minimum=rules.timestamp_min, maximum=rules.timestamp_max(app.state.clock()))
    return schema


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    started = time.perf_counter()
    # One BLAS thread per worker: a request's products and fold-in solves are small, and on a
    # busy machine OpenBLAS threads waiting for a core made a 128 x 128 solve 50x slower. The
    # limit reaches only the libraries loaded by now: SciPy ships a second OpenBLAS (its LAPACK
    # solves the fold-in) and is imported above for that reason; loaded later, by the model, its
    # two threads made POST /recommendations 100x slower under load.
    blas_limit = threadpool_limits(limits=1, user_api="blas")
    settings: Settings = app.state.settings
    holder: StateHolder = app.state.holder
    app.state.engine = get_engine(settings.database_url)
    holder.stamp_seen = stamp_time(app.state.stamp_path)
    await _load_production(app, force=True)
    state = holder.current
    if state is None:
        logger.warning(
            "started in %.2fs without a model: waiting for a production version",
            time.perf_counter() - started,
        )
    else:
        logger.info("ready in %.2fs: %s", time.perf_counter() - started, describe(state))
    poller = None
    if settings.reload_poll_seconds > 0:
        poller = asyncio.create_task(_poll_for_new_versions(app, settings.reload_poll_seconds))
    try:
        yield
    finally:
        blas_limit.restore_original_limits()
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller


async def _load_production(app: FastAPI, force: bool) -> None:
    """Load the production version in a worker thread (requests are served meanwhile)."""
    try:
        await asyncio.to_thread(
            reload_production, app.state.holder, app.state.engine, app.state.settings, force=force
        )
    except (RecsysError, SQLAlchemyError, OSError) as exc:
        logger.error("could not load the production version: %s", exc)


async def _poll_for_new_versions(app: FastAPI, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await _load_production(app, force=False)
