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

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import SQLAlchemyError
from threadpoolctl import threadpool_limits

import recsys
from recsys.db import get_engine
from recsys.errors import RecsysError
from recsys.settings import Settings, get_settings
from service.metrics import MetricsMiddleware
from service.request_id import HEADER, RequestIdMiddleware
from service.routers import admin, dashboard, health, interactions, items, recommendations, versions
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
    for module in (recommendations, items, interactions, admin, versions, health, dashboard):
        app.include_router(module.router)
    dashboard.mount_static(app)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    started = time.perf_counter()
    # One BLAS thread per worker: a request's products and fold-in solves are small, and on a
    # busy machine OpenBLAS threads waiting for a core made a 128 x 128 solve 50x slower.
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
