"""The version state machine, kept in the ``model_versions`` table.

A version is candidate, production or archived, and exactly one version is production. Promotion
sends the previous production version back to candidate (so that rollback can return to it);
rollback archives the current one and restores the one promoted before it; an archived version is
kept on disk but never chosen by rollback. Every status change runs in one transaction that is
serialised against the others.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.orm import Session

from recsys.db.engine import is_postgres, session_scope
from recsys.db.models import ModelVersion
from recsys.errors import RegistryError

CANDIDATE, PRODUCTION, ARCHIVED = "candidate", "production", "archived"
STATUSES = (CANDIDATE, PRODUCTION, ARCHIVED)

# Arbitrary constant key of the PostgreSQL advisory lock that serialises status changes.
_STATUS_LOCK_KEY = 0x7265_6373_7973  # "recsys"


@dataclass(frozen=True)
class VersionInfo:
    version: str
    model: str
    status: str
    path: Path
    params: dict[str, Any]
    metrics: dict[str, Any]
    watermark: int | None
    data_fingerprint: str
    created_at: datetime
    promoted_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (paths and times as strings)."""
        payload = asdict(self)
        payload["path"] = str(self.path)
        payload["created_at"] = self.created_at.isoformat()
        payload["promoted_at"] = self.promoted_at.isoformat() if self.promoted_at else None
        return payload


class VersionStates:
    """The rows of ``model_versions``; version folders are found under ``artifact_dir``."""

    def __init__(self, engine: Engine, artifact_dir: Path) -> None:
        self.engine = engine
        self.artifact_dir = artifact_dir

    def add(
        self,
        *,
        version: str,
        model: str,
        params: dict[str, Any],
        metrics: dict[str, Any],
        watermark: int | None,
        data_fingerprint: str,
        created_at: datetime,
    ) -> None:
        """Record a new candidate; it becomes production when no version is."""
        with session_scope(self.engine) as session:
            _serialise_status_changes(session)
            session.execute(
                insert(ModelVersion).values(
                    version=version,
                    model=model,
                    status=CANDIDATE,
                    path=str((self.artifact_dir / version).resolve()),
                    params=params,
                    metrics=_json_ready(metrics),
                    watermark=watermark,
                    data_fingerprint=data_fingerprint,
                    created_at=created_at,
                )
            )
            if _production_row(session) is None:
                _set_production(session, version)

    def add_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        """Merge ``metrics`` into the version's recorded metrics (for example a later backtest)."""
        with session_scope(self.engine) as session:
            row = _row(session, version)
            row.metrics = {**(row.metrics or {}), **_json_ready(metrics)}

    def names(self) -> set[str]:
        with session_scope(self.engine) as session:
            return set(session.scalars(select(ModelVersion.version)))

    def get(self, version: str) -> VersionInfo:
        with session_scope(self.engine) as session:
            return self._info(_row(session, version))

    def list(self, *, model: str | None = None, status: str | None = None) -> list[VersionInfo]:
        """Versions, newest first, optionally of one model and/or one status."""
        query = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.version.desc())
        if model is not None:
            query = query.where(ModelVersion.model == model)
        if status is not None:
            if status not in STATUSES:
                raise RegistryError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
            query = query.where(ModelVersion.status == status)
        with session_scope(self.engine) as session:
            return [self._info(row) for row in session.scalars(query)]

    def production(self) -> VersionInfo | None:
        with session_scope(self.engine) as session:
            row = _production_row(session)
            return None if row is None else self._info(row)

    def promote(self, version: str) -> None:
        """``version`` becomes production; the previous production version goes back to candidate."""
        with session_scope(self.engine) as session:
            _serialise_status_changes(session)
            _row(session, version)
            _set_production(session, version)

    def rollback(self) -> str:
        """Archive production and restore the version promoted before it; returns that version."""
        with session_scope(self.engine) as session:
            _serialise_status_changes(session)
            current = _production_row(session)
            if current is None:
                raise RegistryError("there is no production version to roll back")
            previous = session.scalars(
                select(ModelVersion)
                .where(
                    ModelVersion.status == CANDIDATE,
                    ModelVersion.promoted_at.is_not(None),
                    ModelVersion.promoted_at < current.promoted_at,
                    ModelVersion.version != current.version,
                )
                .order_by(ModelVersion.promoted_at.desc(), ModelVersion.version.desc())
                .limit(1)
            ).first()
            if previous is None:
                raise RegistryError(
                    f"{current.version} is the only version ever promoted (that is not archived); "
                    "nothing to roll back to"
                )
            current.status = ARCHIVED
            session.flush()
            # Its original promotion time stays, so a second rollback goes one step further back.
            previous.status = PRODUCTION
            return previous.version

    def archive(self, version: str) -> None:
        with session_scope(self.engine) as session:
            _serialise_status_changes(session)
            row = _row(session, version)
            if row.status == PRODUCTION:
                raise RegistryError(
                    f"{version} is the production version; promote another version or roll back first"
                )
            row.status = ARCHIVED

    def _info(self, row: ModelVersion) -> VersionInfo:
        # The folder is found under this registry's artifact_dir, not at the stored absolute path,
        # so containers that mount the artifacts at different places share one registry.
        return VersionInfo(
            version=row.version,
            model=row.model,
            status=row.status,
            path=self.artifact_dir / row.version,
            params=dict(row.params or {}),
            metrics=dict(row.metrics or {}),
            watermark=row.watermark,
            data_fingerprint=row.data_fingerprint,
            created_at=_as_utc(row.created_at),
            promoted_at=_as_utc(row.promoted_at) if row.promoted_at else None,
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


def _row(session: Session, version: str) -> ModelVersion:
    row = session.get(ModelVersion, version)
    if row is None:
        raise RegistryError(f"no model version {version!r}; `recsys models list` shows the versions")
    return row


def _serialise_status_changes(session: Session) -> None:
    """Make concurrent status changes run one after the other.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: a write as the first statement takes
    the database's single write lock for the rest of the transaction.
    """
    if is_postgres(session.get_bind()):  # type: ignore[arg-type]
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _STATUS_LOCK_KEY})
    else:
        session.execute(update(ModelVersion).where(ModelVersion.version == "").values(status=CANDIDATE))


def _production_row(session: Session) -> ModelVersion | None:
    rows = session.scalars(select(ModelVersion).where(ModelVersion.status == PRODUCTION)).all()
    if len(rows) > 1:
        raise RegistryError(
            f"{len(rows)} versions are marked production ({', '.join(r.version for r in rows)}); "
            "promote one of them to repair the registry"
        )
    return rows[0] if rows else None


def _set_production(session: Session, version: str) -> None:
    session.execute(update(ModelVersion).where(ModelVersion.status == PRODUCTION).values(status=CANDIDATE))
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.version == version)
        .values(status=PRODUCTION, promoted_at=utcnow())
    )


def _json_ready(value: dict[str, Any]) -> dict[str, Any]:
    # numpy scalars are not JSON serialisable by the database drivers.
    result: dict[str, Any] = json.loads(json.dumps(value, default=_to_builtin))
    return result


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time recsys writes is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
