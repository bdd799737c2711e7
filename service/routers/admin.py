"""Administration: swap to the current production version."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy.exc import SQLAlchemyError

from recsys.errors import RecsysError
from service.deps import ApiKeyDep, EngineDep, HolderDep, SettingsDep
from service.schemas import ReloadResult, error_responses
from service.state import reload_production

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[ApiKeyDep])


@router.post(
    "/reload",
    operation_id="reload_model",
    response_model=ReloadResult,
    responses=error_responses(401, 503),
)
def reload_model(holder: HolderDep, engine: EngineDep, settings: SettingsDep) -> ReloadResult:
    """Load the current production version completely, then swap it in: requests in flight
    finish on the old version, later ones use the new one."""
    try:
        outcome = reload_production(holder, engine, settings, force=True)
    except (RecsysError, SQLAlchemyError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"reload failed: {exc}") from None
    if outcome is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "there is no production version to load")
    return ReloadResult(
        reloaded=outcome.reloaded, version=outcome.version, previous=outcome.previous, seconds=outcome.seconds
    )
