"""Training orchestration: database -> validation fit -> metrics -> refit on everything -> registry.

The validation carve-out (the Protocol K rule with the validation seed) chooses the number of
epochs and gives the reported metrics, measured next to the popularity baseline on the same split
so that promotion can compare the two. The registered model is then refitted on all the selected
interactions for that many epochs, so production never silently loses a fifth of its data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from pydantic import ValidationError
from sqlalchemy import Engine

from recsys.data.interactions import IdMap, Interactions
from recsys.errors import ConfigError, DataError
from recsys.evaluation.metrics import rmse
from recsys.evaluation.ranking import evaluate_ranking
from recsys.models import get_model_class
from recsys.models.base import FitOptions, ModelConfig, Recommender, WarmStart, refit_epochs
from recsys.models.popularity import Popularity
from recsys.registry.comparison import HELD_OUT, IN_SAMPLE, SPLIT_KEY, split_record
from recsys.registry.registry import BASELINE_PREFIX, LoadedVersion, ModelRegistry, VersionInfo
from recsys.settings import Settings
from recsys.training.validation import validation_callback

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Cut-off of the validation ranking metrics (the protocol's k).
VALIDATION_K = 10
#: Models fitted on explicit ratings: validated by RMSE too (their early stopping watches it).
RATING_MODELS = frozenset({"mf"})
#: Models that read item titles and genres from ``FitOptions.features``.
CATALOG_MODELS = frozenset({"two-tower"})


@dataclass
class ValidationSplit:
    """The data of one training run and its validation carve-out (same id maps throughout)."""

    data: Interactions
    train: Interactions
    valid: Interactions

    @property
    def train_csr(self) -> sp.csr_matrix:
        return self.train.to_csr()

    @property
    def valid_csr(self) -> sp.csr_matrix:
        return self.valid.to_csr()


def train(
    engine: Engine,
    settings: Settings,
    model_name: str,
    params: Mapping[str, Any] | None = None,
    *,
    kinds: Sequence[str] | None = None,
    until: int | None = None,
    warm_start: str | None = None,
    resume: bool = False,
    promote: bool = False,
    force: bool = False,
    progress: bool = False,
) -> VersionInfo:
    """Train ``model_name`` on the database's interactions, register it and return the version.

    ``warm_start`` names a version of the same model to start from (its parameters are the
    defaults of this run); ``resume`` continues killed fits from their checkpoints. The new version
    becomes production when ``promote`` (refused below the popularity baseline unless ``force``)
    or when there is no production version yet.
    """
    registry = ModelRegistry(engine, settings.artifacts)
    previous = _load_warm_start(registry, model_name, warm_start) if warm_start else None
    merged = {**(previous.info.params if previous else {}), **dict(params or {})}
    config = parse_config(model_name, merged)
    model_class = get_model_class(model_name)

    split = load_split(engine, kinds=kinds, until=until)
    validation, split_kind = "held-out", HELD_OUT
    if previous is not None and previous.info.watermark is not None:
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
    data = split.data
    fingerprint = data_fingerprint(data)
    warm = align_warm_start(previous, data.users, data.items) if previous else None
    catalog = load_catalog(engine, data.items) if model_name in CATALOG_MODELS else None

    version = registry.new_version_id(model_name)
    work = registry.work_dir(version)
    run_key = f"{model_name}-{fingerprint[:16]}-{_params_hash(config)}"
    checkpoints = settings.artifacts / "checkpoints" / run_key
    logger.info("training %s on %d interactions (%d users, %d items)", version, len(data), *data.shape)

    try:
        model = model_class(config)
        started = time.perf_counter()
        model.fit(
            split.train_csr,
            FitOptions(
                validate=validation_callback(split.train_csr, split.valid_csr),
                log_dir=work / "tensorboard" / "validation",
                checkpoint_dir=checkpoints / "validation",
                resume=resume,
                warm_start=warm,
                progress=progress,
                features=fit_features(split.train, catalog),
            ),
        )
        validation_seconds = time.perf_counter() - started
        metrics: dict[str, Any] = validation_metrics(model, split, model_name)
        metrics[SPLIT_KEY] = split_record(split_kind, fingerprint)
        epochs = refit_epochs(model)

        final = model_class(config)
        started = time.perf_counter()
        final.fit(
            data.to_csr(),
            FitOptions(
                epochs=epochs,
                log_dir=work / "tensorboard" / "full",
                checkpoint_dir=checkpoints / "full",
                resume=resume,
                warm_start=warm,
                progress=progress,
                features=fit_features(data, catalog),
            ),
        )
        fit_seconds = time.perf_counter() - started
        metrics.update(fit_seconds=fit_seconds, validation_fit_seconds=validation_seconds, best_epoch=epochs)
        info = registry.register(
            final,
            data.users,
            data.items,
            metrics=metrics,
            watermark=int(data.timestamps.max()),
            data_fingerprint=fingerprint,
            version=version,
            include={"tensorboard": work / "tensorboard"},
            details={
                "kinds": list(kinds) if kinds else None,
                "until": until,
                "warm_start": warm_start,
                "interactions": len(data),
                "validation": validation,
                "validation_interactions": len(split.valid),
                "resumed": resume,
            },
        )
    finally:
        # Checkpoints stay on failure (for --resume); the scratch folder never does.
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the version is safe; nothing left to resume
    _build_index(registry, info.version, settings)
    if promote and info.status != "production":
        info = registry.promote(info.version, force=force)
    return info


# --- steps shared with tuning ------------------------------------------------------------------


def parse_config(model_name: str, params: Mapping[str, Any]) -> ModelConfig:
    """The model's validated config; errors name the parameter, the value and what is expected."""
    config_class = get_model_class(model_name).Config
    try:
        return config_class(**params)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "?"
            if error["type"] == "extra_forbidden":
                known = ", ".join(sorted(config_class.model_fields))
                problems.append(f"unknown parameter {field!r} (known: {known})")
            else:
                problems.append(f"{field}={error.get('input')!r}: {error['msg']}")
        raise ConfigError(f"invalid {model_name} parameters: {'; '.join(problems)}") from None


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


def load_split(
    engine: Engine, *, kinds: Sequence[str] | None = None, until: int | None = None
) -> ValidationSplit:
    """The selected interactions and their validation carve-out."""
    from recsys.data.matrix import build_interactions
    from recsys.data.splits import validation_split

    data = build_interactions(engine, kinds=list(kinds) if kinds else None, until=until)
    if len(data) == 0:
        selection = f" of kinds {list(kinds)}" if kinds else ""
        selection += f" up to {until}" if until is not None else ""
        raise DataError(f"the database has no interactions{selection}; ingest some first (`recsys ingest`)")
    train_part, valid = validation_split(data)
    if len(valid) == 0:
        raise DataError(
            f"the validation split is empty: no user has the 5 interactions needed to hold some out "
            f"({len(data)} interactions from {len(data.users)} users)"
        )
    return ValidationSplit(data=data, train=train_part, valid=valid)


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


def validation_metrics(model: Recommender, split: ValidationSplit, model_name: str) -> dict[str, float]:
    """Ranking metrics at k=10 of ``model`` and of the popularity baseline on the same split
    (``baseline_*`` keys); rating models add RMSE on the held-out ratings, and that of predicting
    the mean training rating as ``baseline_rmse``."""
    train_csr, valid_csr = split.train_csr, split.valid_csr
    metrics = _ranking(model, train_csr, valid_csr)
    baseline = Popularity().fit(train_csr)
    metrics.update(
        {f"{BASELINE_PREFIX}{key}": value for key, value in _ranking(baseline, train_csr, valid_csr).items()}
    )
    if model_name in RATING_MODELS:
        predict = getattr(model, "predict", None)
        if predict is None:
            raise ConfigError(f"the {model_name} model has no predict(); cannot measure its RMSE")
        low, high = float(split.train.values.min()), float(split.train.values.max())
        predicted = np.clip(predict(split.valid.user_index, split.valid.item_index), low, high)
        metrics["rmse"] = rmse(predicted, split.valid.values)
        # The rating analogue of popularity: everyone predicts the mean training rating.
        mean = np.full(len(split.valid), float(split.train.values.mean()))
        metrics[f"{BASELINE_PREFIX}rmse"] = rmse(mean, split.valid.values)
    return metrics


def data_fingerprint(data: Interactions) -> str:
    """SHA-256 over the id maps and the interaction arrays: equal data, equal fingerprint."""
    digest = hashlib.sha256()
    for ids in (data.users.to_list(), data.items.to_list()):
        digest.update("\x1f".join(ids).encode())
        digest.update(b"\x1e")
    for array, dtype in (
        (data.user_index, np.int64),
        (data.item_index, np.int64),
        (data.values, np.float64),
        (data.timestamps, np.int64),
    ):
        digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return digest.hexdigest()


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


def _ranking(model: Recommender, train_csr: sp.csr_matrix, valid_csr: sp.csr_matrix) -> dict[str, float]:
    measured = evaluate_ranking(model, train_csr, valid_csr, k=VALIDATION_K)
    users = measured.pop("users")
    result = {f"{key}@{VALIDATION_K}": value for key, value in measured.items()}
    result["validation_users"] = users
    return result


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


def fit_features(data: Interactions, catalog: pd.DataFrame | None) -> dict[str, Any]:
    """Side information for ``FitOptions.features``: interaction times for every model (the
    popularity window uses them), item titles and genres for the models that read them."""
    features: dict[str, Any] = {
        "timestamps": sp.csr_matrix(
            (data.timestamps.astype(np.float64), (data.user_index, data.item_index)), shape=data.shape
        )
    }
    if catalog is not None:
        features["item_titles"] = catalog["title"].fillna("").astype(str).tolist()
        features["item_genres"] = [list(genres) if genres is not None else [] for genres in catalog["genres"]]
    return features


def _params_hash(config: ModelConfig) -> str:
    # Checkpoints of other parameters must not be resumed: part of the checkpoint folder name.
    return hashlib.sha256(json.dumps(config.model_dump(), sort_keys=True).encode()).hexdigest()[:8]


def _build_index(registry: ModelRegistry, version: str, settings: Settings) -> None:
    """Attach the serving index to the new version when the index module provides the builder."""
    try:
        from recsys.index import build_for_version
    except ImportError:
        logger.warning("recsys.index.build_for_version is not available; %s has no index/ yet", version)
        return
    build_for_version(registry, version, settings)


def version_summary(info: VersionInfo) -> dict[str, Any]:
    """The machine-readable result of a training run (``recsys train --json``)."""
    payload = info.to_dict()
    payload["fit_seconds"] = info.metrics.get("fit_seconds")
    return payload
