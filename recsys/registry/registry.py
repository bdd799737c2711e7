"""The model registry: versioned model folders on disk plus one row per version in the database.

A version folder ``<artifact_dir>/<version>/`` holds::

    model/             the model as written by Recommender.save (config JSON, numpy vectors)
    id_maps.npz        external user and item ids (string arrays, no pickle), position = index
    version.json       model, params, watermark, data fingerprint, metrics, library versions
    tensorboard/       training logs (when the model wrote any)
    index/ ...         sub-folders attached later (for example the FAISS index)
    checksums.sha256   SHA-256 of every other file, in ``sha256sum`` format

Writes are atomic: a version is built in a hidden temporary folder inside ``artifact_dir``,
fsynced and renamed into place, and only then gets its database row. A process killed half-way
leaves a hidden ``.tmp-*`` folder at most, never a listed version.

Status is one of candidate, production, archived, with exactly one production version: every
status change runs in one transaction that is serialised against the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.orm import Session

from recsys.data.interactions import IdMap
from recsys.db.engine import is_postgres, session_scope
from recsys.db.models import ModelVersion
from recsys.errors import ArtifactError, RegistryError
from recsys.models import load_model
from recsys.models.base import Recommender

logger = logging.getLogger(__name__)

CANDIDATE, PRODUCTION, ARCHIVED = "candidate", "production", "archived"
STATUSES = (CANDIDATE, PRODUCTION, ARCHIVED)

MODEL_DIR = "model"
ID_MAPS_FILE = "id_maps.npz"
VERSION_FILE = "version.json"
CHECKSUMS_FILE = "checksums.sha256"
#: Files every complete version has (besides the model folder's own files).
REQUIRED_FILES = (VERSION_FILE, ID_MAPS_FILE)

#: The validation metric promotion compares with the baseline measured on the same split (stored
#: by the trainer as ``metrics["baseline_" + metric]``): nDCG@10 against popularity, or, for rating
#: models, RMSE against predicting the mean training rating. True: larger is better.
GUARD_METRIC = "ndcg@10"
RATING_GUARD_METRIC = "rmse"
BASELINE_PREFIX = "baseline_"

#: Libraries whose versions are recorded with each version (read from package metadata, so
#: recording them imports nothing).
RECORDED_LIBRARIES = (
    "recsys",
    "numpy",
    "scipy",
    "tensorflow",
    "tf-keras",
    "tensorflow-recommenders",
    "faiss-cpu",
    "faiss-gpu",
    "implicit",
)

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


@dataclass
class LoadedVersion:
    info: VersionInfo
    model: Recommender
    users: IdMap
    items: IdMap
    path: Path


class ModelRegistry:
    """Model versions under ``artifact_dir`` and their rows in the ``model_versions`` table."""

    def __init__(self, engine: Engine, artifact_dir: Path) -> None:
        self.engine = engine
        self.artifact_dir = Path(artifact_dir)

    # --- writing versions -------------------------------------------------------------------

    def new_version_id(self, model_name: str) -> str:
        """``<model>-<UTC yyyymmddHHMMSS>-<random>``: sorts by time, unique without coordination."""
        return f"{model_name}-{_utcnow():%Y%m%d%H%M%S}-{secrets.token_hex(3)}"

    def work_dir(self, version: str) -> Path:
        """A scratch folder for a version being trained (hidden; TensorBoard logs go here first)."""
        path = self.artifact_dir / ".work" / version
        path.mkdir(parents=True, exist_ok=True)
        return path

    def register(
        self,
        model: Recommender,
        users: IdMap,
        items: IdMap,
        *,
        metrics: Mapping[str, Any],
        watermark: int | None,
        data_fingerprint: str,
        version: str | None = None,
        include: Mapping[str, Path] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> VersionInfo:
        """Write a fitted model as a new version and record it (status candidate).

        The first version becomes production when no production version exists. ``include``
        moves existing folders into the version (name -> folder, e.g. the TensorBoard logs);
        ``details`` is stored under ``"training"`` in version.json.
        """
        if model.user_factors is not None and len(model.user_factors) != len(users):
            raise ArtifactError(
                f"the model has {len(model.user_factors)} user vectors but the id map has {len(users)} users"
            )
        n_items = len(model._require_items())
        if n_items != len(items):
            raise ArtifactError(f"the model has {n_items} item vectors but the id map has {len(items)} items")
        version = version or self.new_version_id(model.name)
        final = self.artifact_dir / version
        if final.exists():
            raise RegistryError(f"version folder {final} already exists")
        created_at = _utcnow()
        manifest = {
            "version": version,
            "model": model.name,
            "params": model.params,
            "watermark": watermark,
            "data_fingerprint": data_fingerprint,
            "metrics": dict(metrics),
            "n_users": len(users),
            "n_items": len(items),
            "created_at": created_at.isoformat(),
            "libraries": library_versions(),
            "training": dict(details or {}),
        }
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        temp = self.artifact_dir / f".tmp-{version}"
        try:
            model.save(temp / MODEL_DIR)
            save_id_maps(temp / ID_MAPS_FILE, users, items)
            for name, source in (include or {}).items():
                if source.is_dir():
                    shutil.move(str(source), str(temp / name))
            (temp / VERSION_FILE).write_text(json.dumps(manifest, indent=2, default=str))
            _write_checksums(temp, compute_checksums(temp))
            _fsync_tree(temp)
            os.replace(temp, final)
            _fsync_dir(self.artifact_dir)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        try:
            with session_scope(self.engine) as session:
                _serialise_status_changes(session)
                session.execute(
                    insert(ModelVersion).values(
                        version=version,
                        model=model.name,
                        status=CANDIDATE,
                        path=str(final.resolve()),
                        params=model.params,
                        metrics=_json_ready(dict(metrics)),
                        watermark=watermark,
                        data_fingerprint=data_fingerprint,
                        created_at=created_at,
                    )
                )
                if _production_row(session) is None:
                    _set_production(session, version)
        except BaseException:
            # No row, no version: do not leave an unregistered folder that looks like one.
            shutil.rmtree(final, ignore_errors=True)
            raise
        logger.info("registered %s in %s", version, final)
        return self.get(version)

    def attach(self, version: str, name: str, write: Callable[[Path], None]) -> Path:
        """Add (or replace) sub-folder ``name`` of a version, e.g. its FAISS ``index/``.

        ``write(folder)`` fills a temporary folder that is fsynced and renamed into place; the
        checksum file is then rewritten atomically to cover the new files.
        """
        if not name or "/" in name or "\\" in name or name.startswith(".") or name == MODEL_DIR:
            raise RegistryError(f"cannot attach {name!r}: use a plain folder name other than {MODEL_DIR!r}")
        root = self.get(version).path
        final = root / name
        if final.exists() and not final.is_dir():
            raise RegistryError(f"{final} exists and is not a folder")
        temp = root / f".tmp-{name}-{secrets.token_hex(3)}"
        temp.mkdir()
        try:
            write(temp)
            _fsync_tree(temp)
            added = {f"{name}/{rel}": digest for rel, digest in compute_checksums(temp).items()}
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        checksums = {
            rel: digest for rel, digest in read_checksums(root).items() if not rel.startswith(f"{name}/")
        }
        old = root / f".old-{name}-{secrets.token_hex(3)}"
        if final.exists():
            os.replace(final, old)
        os.replace(temp, final)
        _write_checksums(root, {**checksums, **added})
        _fsync_dir(root)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def remove_orphans(self, min_age_seconds: float = 24 * 3600) -> list[Path]:
        """Delete what killed processes left behind: hidden ``.tmp-*`` builds, ``.work/`` scratch
        folders and version folders without a database row, once older than ``min_age_seconds``
        (younger ones may belong to a registration in progress). Returns the removed paths."""
        if not self.artifact_dir.is_dir():
            return []
        with session_scope(self.engine) as session:
            registered = set(session.scalars(select(ModelVersion.version)))
        work = self.artifact_dir / ".work"
        candidates = [
            *self.artifact_dir.glob(".tmp-*"),
            *(work.iterdir() if work.is_dir() else []),
            *(
                path
                for path in self.artifact_dir.iterdir()
                if path.is_dir()
                and not path.name.startswith(".")
                and path.name != "checkpoints"
                and (path / VERSION_FILE).exists()
                and path.name not in registered
            ),
        ]
        cutoff = _utcnow().timestamp() - min_age_seconds
        removed = [path for path in candidates if path.stat().st_mtime < cutoff]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed

    # --- reading ----------------------------------------------------------------------------

    def get(self, version: str) -> VersionInfo:
        with session_scope(self.engine) as session:
            row = session.get(ModelVersion, version)
            if row is None:
                raise RegistryError(f"no model version {version!r}; `recsys models list` shows the versions")
            return self._info(row)

    def list(self, *, model: str | None = None, status: str | None = None) -> list[VersionInfo]:
        """Versions, newest first, optionally of one model and/or one status."""
        query = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.version.desc())
        if model is not None:
            query = query.where(ModelVersion.model == model)
        if status is not None:
            _check_status(status)
            query = query.where(ModelVersion.status == status)
        with session_scope(self.engine) as session:
            return [self._info(row) for row in session.scalars(query)]

    def production(self) -> VersionInfo | None:
        with session_scope(self.engine) as session:
            row = _production_row(session)
            return None if row is None else self._info(row)

    def load(self, version: str | None = None) -> LoadedVersion:
        """Load a version (None: the production one) after verifying every file's checksum."""
        if version is None:
            info = self.production()
            if info is None:
                raise RegistryError("there is no production model version; train one with `recsys train`")
        else:
            info = self.get(version)
        verify(info.path)
        manifest = json.loads((info.path / VERSION_FILE).read_text())
        if manifest.get("model") != info.model:
            raise ArtifactError(
                f"{info.path / VERSION_FILE} names model {manifest.get('model')!r}, "
                f"the registry says {info.model!r}"
            )
        model = load_model(info.path / MODEL_DIR)
        users, items = load_id_maps(info.path / ID_MAPS_FILE)
        return LoadedVersion(info=info, model=model, users=users, items=items, path=info.path)

    # --- status changes ---------------------------------------------------------------------

    def promote(self, version: str, force: bool = False) -> VersionInfo:
        """Make ``version`` production; the previous production version goes back to candidate
        (so that ``rollback`` can return to it).

        Refuses a version whose validation metric is below the popularity baseline measured on
        the same split, unless ``force``.
        """
        info = self.get(version)
        if info.status == PRODUCTION:
            return info
        if not force:
            check_beats_baseline(info)
        with session_scope(self.engine) as session:
            _serialise_status_changes(session)
            _set_production(session, version)
        logger.info("promoted %s to production", version)
        return self.get(version)

    def rollback(self) -> VersionInfo:
        """Production goes back to the version promoted before the current one; the current
        one is archived. Returns the version that is production now."""
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
            restored = previous.version
        logger.info("rolled production back to %s", restored)
        return self.get(restored)

    def archive(self, version: str) -> VersionInfo:
        """Retire a version: it is kept on disk but never chosen by rollback."""
        with session_scope(self.engine) as session:
            _serialise_status_changes(session)
            row = session.get(ModelVersion, version)
            if row is None:
                raise RegistryError(f"no model version {version!r}; `recsys models list` shows the versions")
            if row.status == PRODUCTION:
                raise RegistryError(
                    f"{version} is the production version; promote another version or roll back first"
                )
            row.status = ARCHIVED
        return self.get(version)

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


def check_beats_baseline(info: VersionInfo) -> None:
    """Raise RegistryError unless the version's validation metric reaches its baseline.

    Rating models (with a validated RMSE) must predict better than the mean rating; every other
    model must rank at least as well as popularity (nDCG@10).
    """
    metrics = info.metrics
    rating = RATING_GUARD_METRIC in metrics and BASELINE_PREFIX + RATING_GUARD_METRIC in metrics
    metric = RATING_GUARD_METRIC if rating else GUARD_METRIC
    baseline_name = "mean-rating baseline" if rating else "popularity baseline"
    value, baseline = metrics.get(metric), metrics.get(BASELINE_PREFIX + metric)
    if value is None or baseline is None:
        raise RegistryError(
            f"{info.version} has no validation {metric} and {baseline_name} to compare; "
            "pass --force to promote it anyway"
        )
    worse = float(value) > float(baseline) if rating else float(value) < float(baseline)
    if worse:
        relation = "worse than" if rating else "below"
        raise RegistryError(
            f"{info.version} has validation {metric} {float(value):.4f}, {relation} the {baseline_name} "
            f"{float(baseline):.4f} on the same split; pass --force to promote it anyway"
        )


# --- files ---------------------------------------------------------------------------------


def save_id_maps(path: Path, users: IdMap, items: IdMap) -> None:
    # Fixed-width unicode arrays load without pickle (allow_pickle stays False).
    np.savez(path, users=np.asarray(users.to_list(), dtype=str), items=np.asarray(items.to_list(), dtype=str))


def load_id_maps(path: Path) -> tuple[IdMap, IdMap]:
    with np.load(path, allow_pickle=False) as stored:
        return IdMap(stored["users"].astype(object)), IdMap(stored["items"].astype(object))


def compute_checksums(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative POSIX path -> hex digest)."""
    return {
        path.relative_to(root).as_posix(): _sha256(path)
        for path in sorted(_files(root))
        if path.relative_to(root).as_posix() != CHECKSUMS_FILE
    }


def read_checksums(root: Path) -> dict[str, str]:
    checksum_file = root / CHECKSUMS_FILE
    if not checksum_file.is_file():
        raise ArtifactError(f"{checksum_file} is missing: the version at {root} is incomplete")
    checksums = {}
    for number, line in enumerate(checksum_file.read_text().splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ArtifactError(f"{checksum_file} line {number} is malformed: {line!r}")
        checksums[rel] = digest
    return checksums


def verify(root: Path) -> None:
    """Raise ArtifactError naming the first missing or corrupt file of the version at ``root``."""
    if not root.is_dir():
        raise ArtifactError(f"the version folder {root} is missing")
    checksums = read_checksums(root)
    listing = root / CHECKSUMS_FILE
    for required in REQUIRED_FILES:
        if required not in checksums:
            raise ArtifactError(f"{listing} does not list {required}: the version is incomplete")
    if not any(rel.startswith(f"{MODEL_DIR}/") for rel in checksums):
        raise ArtifactError(f"{listing} lists no {MODEL_DIR}/ files: the version is incomplete")
    for rel, digest in checksums.items():
        path = root / rel
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: the version is incomplete")
        if _sha256(path) != digest:
            raise ArtifactError(f"{path} does not match its checksum: the file is corrupt")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _files(root: Path) -> Iterator[Path]:
    return (path for path in root.rglob("*") if path.is_file())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_checksums(root: Path, checksums: Mapping[str, str]) -> None:
    temp = root / f".{CHECKSUMS_FILE}.tmp"
    with temp.open("w") as handle:
        handle.writelines(f"{digest}  {rel}\n" for rel, digest in sorted(checksums.items()))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, root / CHECKSUMS_FILE)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` to disk before the rename publishes them."""
    for path in _files(root):
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        _fsync_dir(folder)


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- database -------------------------------------------------------------------------------


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
        .values(status=PRODUCTION, promoted_at=_utcnow())
    )


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise RegistryError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")


def _json_ready(value: dict[str, Any]) -> dict[str, Any]:
    # numpy scalars are not JSON serialisable by the database drivers.
    result: dict[str, Any] = json.loads(json.dumps(value, default=_to_builtin))
    return result


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time recsys writes is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
