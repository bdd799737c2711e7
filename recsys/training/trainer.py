"""`recsys train`: database -> the one fitting path -> registered version -> index -> promotion.

The fitting itself (validation carve-out, metrics next to popularity, epochs, refit on
everything, register) is :func:`recsys.training.fitting.fit_version`, which the tuner, the
retraining pipeline and the benchmark call too. This module reads the data the recipe selects
from the database, aligns a warm start, and builds the serving index of the new version.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine

from recsys.data.interactions import IdMap, Interactions
from recsys.data.recipe import Recipe, recorded_recipe
from recsys.errors import ConfigError, DataError
from recsys.models import get_model_class
from recsys.models.base import WarmStart
from recsys.registry.comparison import HELD_OUT, IN_SAMPLE
from recsys.registry.registry import LoadedVersion, ModelRegistry, VersionInfo
from recsys.retrieval.snapshot import LogMarks, SeenSnapshot
from recsys.runtime.device import worker_role
from recsys.settings import Settings
from recsys.training.fitting import ValidationSplit, fit_version, parse_config

if TYPE_CHECKING:
    import pandas as pd

    from recsys.runtime.cluster import RayEngine

logger = logging.getLogger(__name__)


def train(
    engine: Engine,
    settings: Settings,
    model_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    kinds: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    combine: str | None = None,
    until: int | None = None,
    warm_start: str | None = None,
    resume: bool = False,
    promote: bool = False,
    force: bool = False,
    progress: bool = False,
    cluster: RayEngine | None = None,
) -> VersionInfo:
    """Train ``model_name`` (default: ``settings.default_model``) on the database's interactions,
    register it and return the version; with a Ray ``cluster``, the fits share their work among
    its workers (:func:`recsys.training.fitting.fit_version`).

    ``kinds``, ``weights`` and ``combine`` override the model's recipe. ``warm_start`` names a
    version of the same model to start from (its parameters are the defaults of this run);
    ``resume`` continues killed fits from their checkpoints. The new version becomes production
    when ``promote`` (refused below the popularity baseline unless ``force``) or when there is no
    production version yet.
    """
    role = worker_role()
    if role is not None and not role.is_chief:
        raise ConfigError(
            f"TF_CONFIG makes this process {role.task_type} {role.index}, not the chief: run it with "
            "`recsys train`, which trains there without registering (the chief registers)"
        )
    info = _train(
        engine, settings, model_name, params, kinds=kinds, weights=weights, combine=combine, until=until,
        warm_start=warm_start, resume=resume, promote=promote, force=force, progress=progress,
        cluster=cluster,
    )  # fmt: skip
    assert info is not None  # the chief (or a single machine) registers
    return info


def train_as_worker(
    engine: Engine,
    settings: Settings,
    model_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    kinds: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    combine: str | None = None,
    until: int | None = None,
    warm_start: str | None = None,
    resume: bool = False,
    progress: bool = False,
) -> None:
    """The part of :func:`train` a non-chief ``TF_CONFIG`` worker runs: the same data, the same
    fits in step with the other workers, nothing registered (the chief registers the version)."""
    _train(
        engine, settings, model_name, params, kinds=kinds, weights=weights, combine=combine, until=until,
        warm_start=warm_start, resume=resume, promote=False, force=False, progress=progress, cluster=None,
    )  # fmt: skip


def _train(
    engine: Engine,
    settings: Settings,
    model_name: str | None,
    params: Mapping[str, Any] | None,
    *,
    kinds: Sequence[str] | None,
    weights: Mapping[str, float] | None,
    combine: str | None,
    until: int | None,
    warm_start: str | None,
    resume: bool,
    promote: bool,
    force: bool,
    progress: bool,
    cluster: RayEngine | None,
) -> VersionInfo | None:
    """:func:`train`; on a non-chief ``TF_CONFIG`` worker, without registering (returns None)."""
    role = worker_role()
    if role is not None and until is None:
        raise ConfigError(
            "training on several TF_CONFIG workers needs --until: every worker must read the same "
            "interactions, and new ones may arrive between their reads"
        )
    chief = role is None or role.is_chief
    checkpoints = settings.artifacts / "checkpoints"
    if role is not None and not chief:  # each worker resumes from its own, all from the same epoch
        checkpoints /= f"worker-{role.index}"
    model_name = model_name or settings.default_model
    model_class = get_model_class(model_name)
    registry = ModelRegistry(engine, settings.artifacts)
    previous = _load_warm_start(registry, model_name, warm_start) if warm_start else None
    merged = {**(previous.info.params if previous else {}), **dict(params or {})}
    parse_config(model_name, merged)  # a bad parameter fails before any data is read
    recipe = model_class.recipe.override(kinds=kinds, weights=weights, combine=combine)
    now = int(time.time())
    marks = LogMarks.read(engine)  # before the read: what the version's seen-items snapshot covers
    # One scan (the column has no index) for the clamp and for the snapshot's check below. Counted
    # after the marks, it sees every future-stamped event the snapshot would cover.
    future = future_interactions(engine, now)
    data = load_data(engine, recipe, until=not_after_now(until, now, future))
    split = ValidationSplit.try_carve(data)  # None: too small to validate (fit_version says so)
    validation, split_kind = "held-out", HELD_OUT
    if split is not None and previous is not None and previous.info.watermark is not None:
        unseen = unseen_validation(split, previous.info.watermark)
        if unseen is None:
            validation, split_kind = "held-out, seen by the warm-start version (optimistic)", IN_SAMPLE
            logger.warning(
                "no held-out interaction is newer than the watermark %s of %s: validating the warm "
                "start on pairs that version was fitted on, so its metrics are optimistic",
                previous.info.watermark,
                previous.info.version,
            )
        else:
            split, validation = unseen, "held-out, newer than the warm-start version"
            split_kind = f"{HELD_OUT}, newer than {previous.info.watermark}"
    seen = None
    if chief and until is None and recipe.reads_whole_log() and future[0] == 0:
        # The data is the log as the service reads it: its snapshot needs no second read.
        seen = SeenSnapshot.from_interactions(data, data.users, data.items, None, marks)
    fitted = fit_version(
        model_name,
        merged,
        data,
        recipe=recipe,
        catalog=load_catalog(engine, data.items) if model_class.uses_catalog else None,
        registry=registry if chief else None,
        warm_start=align_warm_start(previous, data.users, data.items) if previous else None,
        validation=split,
        checkpoint_root=checkpoints,
        resume=resume,
        progress=progress,
        details={"until": until, "warm_start": warm_start, "validation": validation, "resumed": resume},
        split_kind=split_kind,
        engine=cluster,
        seen=seen,
    )
    info = fitted.info
    if not chief:
        logger.info("trained as a TF_CONFIG worker; the chief registers the version")
        return None
    assert info is not None  # fit_version registers when given a registry
    _build_index(registry, info.version, settings)
    if promote and info.status != "production":
        info = registry.promote(info.version, force=force)
    return info


# --- steps shared with tuning and the pipeline --------------------------------------------------


def parse_param_options(options: Iterable[str]) -> dict[str, Any]:
    """``["factors=64", "solver=cg"]`` -> ``{"factors": 64, "solver": "cg"}``.

    Values are read as JSON when they parse (numbers, true/false, null, lists), else kept as
    strings; the model's pydantic config then checks the types.
    """
    params: dict[str, Any] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param takes key=value, got {option!r}")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def not_after_now(until: int | None, now: int, future: tuple[int, int | None]) -> int:
    """``until`` clamped to ``now``: events stamped in the future (``future``: their count and the
    newest stamp, :func:`future_interactions`) are skipped, and logged, until their time comes,
    so that no version's watermark is ever past now."""
    skipped, newest = future
    if skipped:
        logger.warning(
            "skipping %d interaction(s) stamped in the future (the newest at %s): they are "
            "trained on once their time has come",
            skipped,
            datetime.fromtimestamp(newest or now, UTC).isoformat(),
        )
    return now if until is None else min(until, now)


def future_interactions(engine: Engine, now: int) -> tuple[int, int | None]:
    """How many interactions are stamped after ``now``, and the newest stamp among them."""
    from sqlalchemy import func, select

    from recsys.db.models import Interaction

    with engine.connect() as connection:
        count, newest = connection.execute(
            select(func.count(), func.max(Interaction.ts)).where(Interaction.ts > now)
        ).one()
    return int(count or 0), None if newest is None else int(newest)


def load_data(engine: Engine, recipe: Recipe, *, until: int | None = None) -> Interactions:
    """The interactions ``recipe`` selects (kinds, weights, combine rule), values as stored."""
    from recsys.data.matrix import recipe_interactions

    logger.info("reading the interactions from the database (recipe %s)", recipe.describe())
    started = time.perf_counter()
    data = recipe_interactions(engine, recipe, until=until)
    logger.info("read %d interactions in %.1f s", len(data), time.perf_counter() - started)
    if len(data) == 0:
        selection = f" of kinds {list(recipe.kinds)}" if recipe.kinds else ""
        selection += f" up to {until}" if until is not None else ""
        raise DataError(f"the database has no interactions{selection}; ingest some first (`recsys ingest`)")
    return data


def unseen_validation(split: ValidationSplit, watermark: int) -> ValidationSplit | None:
    """Keep in validation only interactions newer than ``watermark``; the rest go back to train.
    None when no held-out interaction is that new.

    A warm start begins from vectors fitted on everything up to the previous version's watermark,
    validation pairs included: measured on those, it would look better than it is and pick too
    few epochs. Only what the previous version never saw tells how well it generalises.
    """
    valid = split.valid
    newer = valid.timestamps > watermark
    if not newer.any():
        return None
    seen = valid.subset(~newer)
    train_part = split.train
    train_part = Interactions(
        users=train_part.users,
        items=train_part.items,
        user_index=np.concatenate([train_part.user_index, seen.user_index]),
        item_index=np.concatenate([train_part.item_index, seen.item_index]),
        values=np.concatenate([train_part.values, seen.values]),
        timestamps=np.concatenate([train_part.timestamps, seen.timestamps]),
    )
    return ValidationSplit(data=split.data, train=train_part, valid=valid.subset(newer))


def align_warm_start(previous: LoadedVersion, users: IdMap, items: IdMap) -> WarmStart:
    """The previous version's vectors re-indexed to the new id maps by external id.

    Ids the previous version knew keep their vectors; new ids get zero rows flagged unknown (the
    model initialises them fresh). Extra arrays (biases, embeddings) are re-indexed the same way
    when they have one row per user or per item.
    """
    model = previous.model
    user_rows = previous.users.indices(users.external_ids)
    item_rows = previous.items.indices(items.external_ids)
    if model.user_factors is None:
        raise ConfigError(f"version {previous.info.version} has no user vectors to warm-start from")
    extra = {}
    for key, array in model._extra_arrays().items():
        rows = _extra_rows(key, array, len(previous.users), len(previous.items), user_rows, item_rows)
        extra[key] = array if rows is None else _take_rows(array, rows)
    return WarmStart(
        user_factors=_take_rows(model.user_factors, user_rows),
        item_factors=_take_rows(model._require_items(), item_rows),
        known_users=user_rows >= 0,
        known_items=item_rows >= 0,
        extra=extra,
    )


# --- helpers --------------------------------------------------------------------------------


def _take_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    taken = np.zeros((len(rows), *array.shape[1:]), dtype=array.dtype)
    known = rows >= 0
    taken[known] = array[rows[known]]
    return taken


def _extra_rows(
    key: str, array: np.ndarray, n_users: int, n_items: int, user_rows: np.ndarray, item_rows: np.ndarray
) -> np.ndarray | None:
    """Which re-indexing an extra array needs: by its name when it says, else by its length."""
    if array.ndim == 0:
        return None
    name = key.lower()
    if "user" in name and len(array) == n_users:
        return user_rows
    if "item" in name and len(array) == n_items:
        return item_rows
    if len(array) == n_items:
        return item_rows
    if len(array) == n_users:
        return user_rows
    return None


def _load_warm_start(registry: ModelRegistry, model_name: str, version: str) -> LoadedVersion:
    previous = registry.load(version)
    if previous.info.model != model_name:
        raise ConfigError(
            f"cannot warm-start a {model_name} model from {version}, which is a {previous.info.model} model"
        )
    return previous


def load_catalog(engine: Engine, items: IdMap) -> pd.DataFrame:
    from recsys.data.catalog import item_catalog

    return item_catalog(engine, items)


def _build_index(registry: ModelRegistry, version: str, settings: Settings) -> None:
    """Attach the serving index to the new version when the index module provides the builder."""
    try:
        from recsys.index import build_for_version
    except ImportError:
        logger.warning("recsys.index.build_for_version is not available; %s has no index/ yet", version)
        return
    build_for_version(registry, version, settings)


def version_recipe(info: VersionInfo) -> Recipe | None:
    """The recipe a version was trained with (None for versions from before recipes)."""
    return recorded_recipe(info.path)


def version_summary(info: VersionInfo) -> dict[str, Any]:
    """The machine-readable result of a training run (``recsys train --json``)."""
    payload = info.to_dict()
    payload["fit_seconds"] = info.metrics.get("fit_seconds")
    recipe = version_recipe(info)
    payload["recipe"] = recipe.model_dump(mode="json") if recipe else None
    return payload
