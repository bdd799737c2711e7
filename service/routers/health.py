"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import threading

from fastapi import APIRouter, Response, status
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from service import metrics
from service.deps import EngineDep, HolderDep, SettingsDep
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
def ready(response: Response, holder: HolderDep, engine: EngineDep, settings: SettingsDep) -> Readiness:
    """Ready when the production version is loaded and the database answers ``SELECT 1``.

    A production version that fails to load (a damaged artifact) makes the service not ready, even
    while it still answers with the version it had loaded before: it is not serving production.
    """
    state = holder.current
    detail = _probe_database(engine, settings.request_timeout_seconds)
    database = detail is None
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


def _probe_database(engine: Engine, seconds: float) -> str | None:
    """None when the database answers ``SELECT 1`` within ``seconds``, else why not.

    The probe runs in a daemon thread: a frozen server (stopped, or behind a dropped network)
    accepts the connection and never answers, and no server-side timeout can fire then.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            outcome.append(None)
        except SQLAlchemyError as exc:
            outcome.append(f"database unavailable: {type(exc).__name__}")

    thread = threading.Thread(target=probe, name="ready-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        return f"database unavailable: no answer within {seconds:g} s"
    return outcome[0]


@router.get("/metrics", operation_id="metrics", response_class=Response)
def prometheus_metrics() -> Response:
    """Prometheus exposition: requests and latency per endpoint, loaded version, fallbacks."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
