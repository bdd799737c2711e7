"""The model registry: versioned model folders on disk plus one row per version in the database.

This is the one entry point callers use; the work is split along the registry's seams:
:mod:`recsys.registry.artifacts` (folder layout, atomic publish, checksums, leftovers),
:mod:`recsys.registry.versions` (the status state machine in the database) and
:mod:`recsys.registry.promotion` (which versions may become production).

A version's folder is published (renamed into place, complete and checksummed) before it gets
its database row, and removed again when the row cannot be written: a listed version always has
a complete folder.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from recsys.data.interactions import IdMap
from recsys.errors import ArtifactError, RegistryError
from recsys.models import load_model
from recsys.models.base import Recommender
from recsys.registry import artifacts
from recsys.registry.artifacts import (
    CHECKSUMS_FILE,
    ID_MAPS_FILE,
    MODEL_DIR,
    VERSION_FILE,
    WORK_DIR,
    library_versions,
    load_id_maps,
    save_id_maps,
    verify,
)
from recsys.registry.promotion import BASELINE_PREFIX, check_beats_baseline, check_intact, check_promotable
from recsys.registry.versions import (
    ARCHIVED,
    CANDIDATE,
    PRODUCTION,
    STATUSES,
    VersionInfo,
    VersionStates,
    utcnow,
)
from recsys.retrieval.snapshot import SEEN_DIR, SeenSnapshot, snapshot_from_database

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHIVED",
    "BASELINE_PREFIX",
    "CANDIDATE",
    "CHECKSUMS_FILE",
    "ID_MAPS_FILE",
    "MODEL_DIR",
    "PRODUCTION",
    "STATUSES",
    "VERSION_FILE",
    "LoadedVersion",
    "ModelRegistry",
    "VersionInfo",
    "check_beats_baseline",
    "load_id_maps",
    "verify",
]


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
        self.states = VersionStates(engine, self.artifact_dir)

    # --- writing versions -------------------------------------------------------------------

    def new_version_id(self, model_name: str) -> str:
        """``<model>-<UTC yyyymmddHHMMSS>-<random>``: sorts by time, unique without coordination."""
        return f"{model_name}-{utcnow():%Y%m%d%H%M%S}-{secrets.token_hex(3)}"

    def work_dir(self, version: str) -> Path:
        """A scratch folder for a version being trained (hidden; TensorBoard logs go here first)."""
        path = self.artifact_dir / WORK_DIR / version
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
        seen: SeenSnapshot | None = None,
    ) -> VersionInfo:
        """Write a fitted model as a new version and record it (status candidate).

        The first version becomes production when no production version exists. ``include``
        moves existing folders into the version (name -> folder, e.g. the TensorBoard logs);
        ``details`` is stored under ``"training"`` in version.json.

        The version gets its seen-items snapshot (``seen/``, :mod:`recsys.retrieval.snapshot`):
        ``seen`` when the caller has it (the trainer builds it from the log it trained on when
        that is the whole log), else read from the database now. Services memory-map it instead
        of reading the whole log at every start.
        """
        if model.user_factors is not None and len(model.user_factors) != len(users):
            raise ArtifactError(
                f"the model has {len(model.user_factors)} user vectors but the id map has {len(users)} users"
            )
        n_items = len(model._require_items())
        if n_items != len(items):
            raise ArtifactError(f"the model has {n_items} item vectors but the id map has {len(items)} items")
        version = version or self.new_version_id(model.name)
        if seen is None:
            seen = snapshot_from_database(self.engine, users, items, watermark)
        elif seen.seen.shape[1] != len(items) or seen.users.to_list()[: len(users)] != users.to_list():
            raise ArtifactError("the seen-items snapshot is not in the version's user and item order")
        created_at = utcnow()
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

        def write(folder: Path) -> None:
            model.save(folder / MODEL_DIR)
            save_id_maps(folder / ID_MAPS_FILE, users, items)
            seen.save(folder / SEEN_DIR, len(users))
            for name, source in (include or {}).items():
                if source.is_dir():
                    shutil.move(str(source), str(folder / name))
            (folder / VERSION_FILE).write_text(json.dumps(manifest, indent=2, default=str))

        final = artifacts.publish(self.artifact_dir / version, write)
        try:
            self.states.add(
                version=version,
                model=model.name,
                params=model.params,
                metrics=dict(metrics),
                watermark=watermark,
                data_fingerprint=data_fingerprint,
                created_at=created_at,
            )
        except BaseException:
            # No row, no version: do not leave an unregistered folder that looks like one.
            shutil.rmtree(final, ignore_errors=True)
            raise
        logger.info("registered %s in %s", version, final)
        return self.get(version)

    def add_metrics(self, version: str, metrics: Mapping[str, Any]) -> VersionInfo:
        """Record metrics measured after registration, such as the pipeline's backtest
        (``backtest_ndcg@10`` and its ``backtest_split``); version.json keeps the training ones."""
        self.states.add_metrics(version, dict(metrics))
        return self.get(version)

    def attach(self, version: str, name: str, write: Callable[[Path], None]) -> Path:
        """Add (or replace) sub-folder ``name`` of a version, e.g. its FAISS ``index/``."""
        return artifacts.attach(self.get(version).path, name, write)

    def remove_orphans(self, min_age_seconds: float = 24 * 3600) -> list[Path]:
        """Delete what killed processes left behind (see :func:`artifacts.abandoned_paths`), once
        older than ``min_age_seconds`` (younger ones may belong to a write in progress)."""
        cutoff = utcnow().timestamp() - min_age_seconds
        removed = artifacts.abandoned_paths(self.artifact_dir, self.states.names(), cutoff)
        artifacts.remove(removed)
        return removed

    # --- reading ----------------------------------------------------------------------------

    def get(self, version: str) -> VersionInfo:
        return self.states.get(version)

    def list(self, *, model: str | None = None, status: str | None = None) -> list[VersionInfo]:
        """Versions, newest first, optionally of one model and/or one status."""
        return self.states.list(model=model, status=status)

    def production(self) -> VersionInfo | None:
        return self.states.production()

    def verify(self, version: str) -> VersionInfo:
        """The version's info after checking every file against its checksum (ArtifactError
        naming the damaged file otherwise)."""
        info = self.get(version)
        check_intact(info)
        return info

    def load(self, version: str | None = None) -> LoadedVersion:
        """Load a version (None: the production one) after verifying every file's checksum (not
        hashed again when no file changed since the version was last verified in full: see
        :func:`recsys.registry.artifacts.verify`)."""
        if version is None:
            info = self.production()
            if info is None:
                raise RegistryError("there is no production model version; train one with `recsys train`")
        else:
            info = self.get(version)
        check_intact(info, reuse=True)
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

        Refuses a damaged version (whose checksums do not hold) always, and one whose validation
        metric is below the popularity baseline measured on the same split unless ``force``.
        """
        info = self.get(version)
        if info.status == PRODUCTION:
            return info
        check_promotable(info, force=force)
        self.states.promote(version)
        logger.info("promoted %s to production", version)
        return self.get(version)

    def rollback(self) -> VersionInfo:
        """Production goes back to the version promoted before the current one; the current
        one is archived. Returns the version that is production now."""
        restored = self.states.rollback()
        logger.info("rolled production back to %s", restored)
        return self.get(restored)

    def archive(self, version: str) -> VersionInfo:
        """Retire a version: it is kept on disk but never chosen by rollback."""
        self.states.archive(version)
        return self.get(version)
