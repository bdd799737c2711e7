"""Administration of the model registry: list versions, promote one, roll production back.

The same registry operations as ``recsys models promote`` and ``recsys models rollback``. After a
change this worker loads the new production version at once; other workers pick it up at their
next poll (``RECSYS_RELOAD_POLL_SECONDS``) or through ``POST /admin/reload``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from recsys.errors import ArtifactError, RecsysError, RegistryError
from recsys.registry.registry import ModelRegistry, VersionInfo
from recsys.settings import Settings
from service.deps import ApiKeyDep, EngineDep, HolderDep, SettingsDep
from service.schemas import ErrorMessage, error_responses
from service.state import StateHolder, reload_production

logger = logging.getLogger("uvicorn.error")

T = TypeVar("T")

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[ApiKeyDep])

VersionId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f]+$",  # no control characters: the database would refuse a NUL
        description="A registered version id.",
    ),
]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorMessage, "description": "No registered version has this id."}
}
PROMOTION_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorMessage,
        "description": "The version is below its popularity baseline (or has none recorded): send "
        "force=true to promote it anyway; or its files are damaged (force does not help).",
    }
}
NOTHING_TO_RESTORE: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorMessage, "description": "No version was promoted before the current one."}
}


class ModelVersionSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    model: str
    status: str = Field(description="candidate, production or archived.")
    metrics: dict[str, Any] = Field(description="Validation metrics recorded when the version was trained.")
    created_at: datetime
    promoted_at: datetime | None

    @classmethod
    def of(cls, info: VersionInfo) -> ModelVersionSummary:
        return cls(
            version=info.version,
            model=info.model,
            status=info.status,
            metrics=info.metrics,
            created_at=info.created_at,
            promoted_at=info.promoted_at,
        )


class PromoteRequest(BaseModel):
    # Strict: 0 or "yes" for a flag that can bypass the promotion guard is a client mistake (422).
    model_config = ConfigDict(extra="forbid", strict=True)

    force: bool = Field(default=False, description="Promote even below the popularity baseline.")


class ProductionChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    production: ModelVersionSummary = Field(description="The production version after the change.")
    previous: str | None = Field(description="The production version before the change.")
    serving: str | None = Field(description="The version this worker answers with after the change.")
    detail: str | None = Field(default=None, description="Why this worker could not load the new version.")


@router.get(
    "/versions",
    operation_id="list_model_versions",
    response_model=list[ModelVersionSummary],
    responses=error_responses(401, 503),
)
def list_versions(engine: EngineDep, settings: SettingsDep) -> list[ModelVersionSummary]:
    """Registered versions, newest first."""
    registry = ModelRegistry(engine, settings.artifacts)
    return [ModelVersionSummary.of(info) for info in _registry_call(registry.list)]


@router.post(
    "/versions/{version}/promote",
    operation_id="promote_model_version",
    response_model=ProductionChange,
    responses={**error_responses(401, 503), **NOT_FOUND, **PROMOTION_REFUSED},
)
def promote_version(
    version: VersionId,
    holder: HolderDep,
    engine: EngineDep,
    settings: SettingsDep,
    request: Annotated[PromoteRequest | None, Body()] = None,
) -> ProductionChange:
    """Make a version production (refused below its popularity baseline unless ``force``); the
    previous production version stays a candidate, so that a rollback can return to it."""
    registry = ModelRegistry(engine, settings.artifacts)
    try:
        registry.get(version)
    except RegistryError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    previous = _registry_call(registry.production)
    force = request.force if request is not None else False
    promoted = _registry_call(lambda: registry.promote(version, force=force))
    return _after_change(holder, engine, settings, promoted, previous)


@router.post(
    "/rollback",
    operation_id="rollback_production",
    response_model=ProductionChange,
    responses={**error_responses(401, 503), **NOTHING_TO_RESTORE},
)
def rollback(holder: HolderDep, engine: EngineDep, settings: SettingsDep) -> ProductionChange:
    """Return production to the version promoted before the current one, which is archived."""
    registry = ModelRegistry(engine, settings.artifacts)
    previous = _registry_call(registry.production)
    restored = _registry_call(registry.rollback)
    return _after_change(holder, engine, settings, restored, previous)


def _registry_call(action: Callable[[], T]) -> T:
    """Run a registry operation; a refusal (or a damaged version) is a 409 naming the reason, an
    unreachable database a 503."""
    try:
        return action()
    except (RegistryError, ArtifactError) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except SQLAlchemyError as exc:
        logger.warning("registry operation failed: %s", exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the database is unavailable; retry the request later"
        ) from None


def _after_change(
    holder: StateHolder,
    engine: Engine,
    settings: Settings,
    production: VersionInfo,
    previous: VersionInfo | None,
) -> ProductionChange:
    detail = None
    try:
        reload_production(holder, engine, settings, force=False)
    except (RecsysError, SQLAlchemyError, OSError) as exc:
        logger.error("could not load the new production version %s: %s", production.version, exc)
        detail = f"the registry changed but this worker could not load {production.version}: {exc}"
    current = holder.current
    return ProductionChange(
        production=ModelVersionSummary.of(production),
        previous=previous.version if previous else None,
        serving=current.version if current else None,
        detail=detail,
    )
