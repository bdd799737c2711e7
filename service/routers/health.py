"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service import metrics
from service.deps import EngineDep, HolderDep
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", operation_id="health", response_model=Health)
async def health() -> Health:
    """The process is alive (it checks nothing else)."""
    return Health()


@router.get(
    "/ready",
    operation_id="ready",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "No model loaded, the production version fails to load, or the database "
            "does not answer.",
        }
    },
)
def ready(response: Response, holder: HolderDep, engine: EngineDep) -> Readiness:
    """Ready when the production version is loaded and the database answers ``SELECT 1``.

    A production version that fails to load (a damaged artifact) makes the service not ready, even
    while it still answers with the version it had loaded before: it is not serving production.
    """
    state = holder.current
    detail = None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = True
    except SQLAlchemyError as exc:
        database, detail = False, f"database unavailable: {type(exc).__name__}"
    if state is None:
        detail = "no model version loaded"
    if holder.load_error is not None:
        detail = holder.load_error + (f"; still serving {state.version}" if state is not None else "")
    is_ready = database and state is not None and holder.load_error is None
    if not is_ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(
        ready=is_ready, model_version=state.version if state else None, database=database, detail=detail
    )


@router.get("/metrics", operation_id="metrics", response_class=Response)
def prometheus_metrics() -> Response:
    """Prometheus exposition: requests and latency per endpoint, loaded version, fallbacks."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
