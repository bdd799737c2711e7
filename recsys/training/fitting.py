"""The one way recsys fits a model: validation carve-out, metrics next to popularity, epochs
chosen, refit on everything, register.

``recsys train``, ``recsys tune``, ``recsys pipeline run`` and ``recsys benchmark`` all call
:func:`fit_version` (the tuner's trials call its first half, :func:`validate`). What the model
learns from is its recipe applied to the log (:class:`recsys.data.recipe.Recipe`); validation
pairs are held out of the log as the user sees it, so every held-out pair is a positive, as in
the benchmark protocol.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from pydantic import ValidationError

from recsys.data.interactions import Interactions
from recsys.data.matrix import data_fingerprint
from recsys.data.recipe import Recipe
from recsys.data.splits import validation_split
from recsys.errors import ConfigError, DataError
from recsys.evaluation.metrics import rmse
from recsys.evaluation.ranking import evaluate_ranking
from recsys.models import get_model_class
from recsys.models.base import FitOptions, ModelConfig, Recommender, WarmStart, refit_epochs
from recsys.models.popularity import Popularity
from recsys.registry.comparison import HELD_OUT, SPLIT_KEY, split_record
from recsys.registry.registry import BASELINE_PREFIX, ModelRegistry, VersionInfo
from recsys.retrieval.snapshot import SeenSnapshot
from recsys.runtime.cluster import RayEngine, ray_session
from recsys.runtime.device import worker_role
from recsys.settings import get_settings
from recsys.training.validation import sample_users, validation_callback

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Cut-off of the validation ranking metrics (the protocol's k).
VALIDATION_K = 10
#: Seed of the validation carve-out (the Protocol K rule with another seed than the test split's).
VALIDATION_SEED = 43
#: Interactions a user needs before the carve-out holds some of theirs out (the protocol's rule).
MIN_VALIDATED_USER_INTERACTIONS = 5


@dataclass
class ValidationSplit:
    """The data of one training run and its validation carve-out (same id maps throughout)."""

    data: Interactions
    train: Interactions
    valid: Interactions

    @classmethod
    def carve(cls, data: Interactions, seed: int = VALIDATION_SEED) -> ValidationSplit:
        """Hold out validation pairs by the Protocol K rule; refuses data too small to validate."""
        split = cls.try_carve(data, seed)
        if split is None:
            raise DataError(f"the validation split is empty: {too_small(data)}")
        return split

    @classmethod
    def try_carve(cls, data: Interactions, seed: int = VALIDATION_SEED) -> ValidationSplit | None:
        """The carve-out, or None when no user has enough interactions to hold some out."""
        if len(data) == 0:
            raise DataError("there are no interactions to train on; ingest some first (`recsys ingest`)")
        train_part, valid = validation_split(data, seed=seed)
        return cls(data=data, train=train_part, valid=valid) if len(valid) else None


def too_small(data: Interactions) -> str:
    """Why ``data`` cannot be validated, in words."""
    return (
        f"no user has the {MIN_VALIDATED_USER_INTERACTIONS} interactions needed to hold some out "
        f"({len(data)} interactions from {len(np.unique(data.user_index))} users)"
    )


@dataclass
class Validated:
    """The first half of a fit: the model fitted on the carve-out's train part and its figures."""

    model: Recommender
    metrics: dict[str, Any]
    epochs: int | None
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    """Config values the fit chose on validation for the refit (``Recommender.refit_params``)."""


@dataclass
class Fitted:
    """A whole fit: the model refitted on everything, its validation figures, its version."""

    model: Recommender
    metrics: dict[str, Any]
    epochs: int | None
    recipe: Recipe
    info: VersionInfo | None = None
    details: dict[str, Any] = field(default_factory=dict)
    validation_history: list[dict[str, float]] = field(default_factory=list)
    """The validation fit's history: one entry per epoch with its validation metric."""


def parse_config(model_name: str, params: Mapping[str, Any]) -> ModelConfig:
    """The model's validated config; errors name the parameter, the value and what is expected."""
    config_class = get_model_class(model_name).Config
    try:
        return config_class(**params)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "?"
            if error["type"] == "extra_forbidden":
                known = ", ".join(sorted(config_class.model_fields))
                problems.append(f"unknown parameter {name!r} (known: {known})")
            else:
                problems.append(f"{name}={error.get('input')!r}: {error['msg']}")
        raise ConfigError(f"invalid {model_name} parameters: {'; '.join(problems)}") from None


def validate(
    model_name: str,
    config: ModelConfig,
    split: ValidationSplit,
    recipe: Recipe,
    *,
    catalog: pd.DataFrame | None = None,
    warm_start: WarmStart | None = None,
    log_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = False,
    engine: RayEngine | None = None,
) -> Validated:
    """Fit on the carve-out's train part with early stopping on its held-out part; measure the
    model next to popularity and choose the epochs of the refit."""
    model_class = get_model_class(model_name)
    learned = recipe.apply(split.train)
    model = model_class(config)
    started = time.perf_counter()
    model.fit(
        learned.to_csr(),
        FitOptions(
            validate=validation_callback(
                split.train.to_csr(), split.valid.to_csr(), ratings=model_class.predicts_ratings
            ),
            log_dir=log_dir,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            warm_start=warm_start,
            progress=progress,
            features=fit_features(learned, catalog),
            engine=engine,
        ),
    )
    seconds = time.perf_counter() - started
    limit, users = get_settings().metric_users, len(np.unique(split.valid.user_index))
    logger.info(
        "%s: validation metrics of the chosen epoch and of popularity on %d of %d validation users",
        model_name, min(users, limit) if limit else users, users,
    )  # fmt: skip
    measuring = time.perf_counter()
    metrics = validation_metrics(model, split)
    logger.info(
        "%s: validation nDCG@10 %.4f (%.1f s)",
        model_name, metrics.get("ndcg@10", float("nan")), time.perf_counter() - measuring,
    )  # fmt: skip
    return Validated(
        model=model,
        metrics=metrics,
        epochs=refit_epochs(model),
        seconds=seconds,
        params=model.refit_params(),
    )


def fit_version(
    model_name: str,
    params: Mapping[str, Any],
    data: Interactions,
    *,
    recipe: Recipe | None = None,
    catalog: pd.DataFrame | None = None,
    registry: ModelRegistry | None = None,
    warm_start: WarmStart | None = None,
    validation: ValidationSplit | None = None,
    checkpoint_root: Path | None = None,
    resume: bool = False,
    progress: bool = False,
    details: Mapping[str, Any] | None = None,
    split_kind: str = HELD_OUT,
    engine: RayEngine | None = None,
    seen: SeenSnapshot | None = None,
) -> Fitted:
    """Validate, refit ``model_name`` on all of ``data`` for the chosen epochs and register it.

    ``data`` is the log as the recipe selected and combined it, values as stored
    (:func:`recsys.data.matrix.recipe_interactions`); ``recipe`` defaults to the model's own.
    ``validation`` replaces the default carve-out (a warm start validates on newer pairs only).
    Without a ``registry`` nothing is written (a backtest, a test). ``split_kind`` says what the
    validation pairs are (:func:`recsys.registry.comparison.split_record`), so that the registry can
    tell which versions' metrics compare.

    ``seen`` is the version's seen-items snapshot when the caller has it (the registry reads it
    from the database otherwise; :meth:`ModelRegistry.register`).

    Data too small to hold validation pairs out is fitted on everything with the model's own
    epoch default and recorded as unvalidated: no metrics, so promotion needs ``--force``.

    With a Ray ``engine`` both fits share their work among the Ray workers of one session (models
    whose ``engines`` include ``ray``: iALS). MF and the two-tower model train on several machines
    through ``TF_CONFIG`` instead (:func:`recsys.runtime.device.distribution_strategy`).
    """
    model_class = get_model_class(model_name)
    if engine is not None and "ray" not in model_class.engines:
        raise ConfigError(
            f"the {model_name} model does not train on the ray engine (models that do: iALS); "
            "MF and two-tower train on several workers through TF_CONFIG (docs/scaling.md)"
        )
    role = worker_role()
    if role is not None and "tf_config" not in model_class.engines:
        raise ConfigError(
            f"TF_CONFIG names {role.workers} workers, but the {model_name} model does not train "
            "across them (models that do: mf, two-tower); unset TF_CONFIG"
            + (" and use --engine ray" if "ray" in model_class.engines else "")
        )
    with contextlib.ExitStack() as stack:
        if engine is not None:
            stack.enter_context(ray_session(engine))  # one session for the validation fit and the refit
        return _fit_version(
            model_name, params, data, recipe=recipe, catalog=catalog, registry=registry,
            warm_start=warm_start, validation=validation, checkpoint_root=checkpoint_root, resume=resume,
            progress=progress, details=details, split_kind=split_kind, engine=engine, seen=seen,
        )  # fmt: skip


def _fit_version(
    model_name: str,
    params: Mapping[str, Any],
    data: Interactions,
    *,
    recipe: Recipe | None,
    catalog: pd.DataFrame | None,
    registry: ModelRegistry | None,
    warm_start: WarmStart | None,
    validation: ValidationSplit | None,
    checkpoint_root: Path | None,
    resume: bool,
    progress: bool,
    details: Mapping[str, Any] | None,
    split_kind: str,
    engine: RayEngine | None,
    seen: SeenSnapshot | None,
) -> Fitted:
    model_class = get_model_class(model_name)
    recipe = recipe or model_class.recipe
    config = parse_config(model_name, params)
    split = validation or ValidationSplit.try_carve(data)
    fingerprint = data_fingerprint(data)
    version = registry.new_version_id(model_name) if registry else None
    work = registry.work_dir(version) if registry and version else None
    checkpoints = None
    if checkpoint_root is not None:
        params_hash = hashlib.sha256(json.dumps(config.model_dump(), sort_keys=True).encode()).hexdigest()[:8]
        checkpoints = checkpoint_root / f"{model_name}-{fingerprint[:16]}-{params_hash}"
    logger.info(
        "fitting %s on %d interactions (%d users, %d items); recipe %s",
        model_name, len(data), *data.shape, recipe.describe(),
    )  # fmt: skip
    try:
        validated = None
        if split is not None:
            validated = validate(
                model_name,
                config,
                split,
                recipe,
                catalog=catalog,
                warm_start=warm_start,
                log_dir=work / "tensorboard" / "validation" if work else None,
                checkpoint_dir=checkpoints / "validation" if checkpoints else None,
                resume=resume,
                progress=progress,
                engine=engine,
            )
        else:
            logger.warning(
                "could not validate %s: %s; fitting on everything with its default epochs, and the "
                "version is recorded as unvalidated (promoting it needs --force)",
                model_name, too_small(data),
            )  # fmt: skip
        epochs = validated.epochs if validated else None
        logger.info(
            "refitting %s on all %d interactions (%s epochs)",
            model_name, len(data), epochs if epochs is not None else "default",
        )  # fmt: skip
        chosen = validated.params if validated else {}
        if chosen:  # what the validation fit chose (a blend's weight) holds for the refit too
            config = parse_config(model_name, {**config.model_dump(), **chosen})
        learned = recipe.apply(data)
        final = model_class(config)
        started = time.perf_counter()
        final.fit(
            learned.to_csr(),
            FitOptions(
                epochs=epochs,
                log_dir=work / "tensorboard" / "full" if work else None,
                checkpoint_dir=checkpoints / "full" if checkpoints else None,
                resume=resume,
                warm_start=warm_start,
                progress=progress,
                features=fit_features(learned, catalog),
                engine=engine,
            ),
        )
        metrics: dict[str, Any] = dict(validated.metrics) if validated else {}
        metrics.update(fit_seconds=time.perf_counter() - started, best_epoch=epochs)
        if validated:
            metrics["validation_fit_seconds"] = validated.seconds
            metrics[SPLIT_KEY] = split_record(split_kind, fingerprint, VALIDATION_SEED)
        recorded = {
            **dict(details or {}),
            "engine": "local" if engine is None else "ray",
            "recipe": recipe.model_dump(mode="json"),
            "interactions": len(data),
            "validation_interactions": len(split.valid) if split else 0,
        }
        if chosen:
            recorded["chosen_on_validation"] = chosen
        notes = final.fit_notes()
        if notes:
            recorded["fit_notes"] = notes
        if split is None:
            recorded["validation"] = f"none, the version is unvalidated: {too_small(data)}"
        fitted = Fitted(
            model=final,
            metrics=metrics,
            epochs=epochs,
            recipe=recipe,
            details=recorded,
            validation_history=validated.model.history if validated else [],
        )
        if registry is not None:
            fitted.info = registry.register(
                final,
                data.users,
                data.items,
                metrics=metrics,
                watermark=int(data.timestamps.max()),
                data_fingerprint=fingerprint,
                version=version,
                include={"tensorboard": work / "tensorboard"} if work else None,
                details=recorded,
                seen=seen,
            )
    finally:
        # Checkpoints stay on failure (for --resume); the scratch folder never does.
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    if checkpoints is not None:
        shutil.rmtree(checkpoints, ignore_errors=True)  # fitted: nothing left to resume
    return fitted


def validation_metrics(model: Recommender, split: ValidationSplit) -> dict[str, float]:
    """Ranking metrics at k=10 of ``model`` and of the popularity baseline on the same split
    (``baseline_*`` keys); rating models add RMSE on the held-out ratings, and that of predicting
    the mean training rating as ``baseline_rmse``. Every pair of the train part counts as seen.
    The ranking metrics use a seeded sample of at most ``RECSYS_METRIC_USERS`` validation users
    (both models the same users); RMSE uses every held-out rating."""
    seen = split.train.to_csr()
    valid_csr = sample_users(split.valid.to_csr(), get_settings().metric_users)
    metrics = _ranking(model, seen, valid_csr)
    baseline = Popularity().fit(Popularity.recipe.apply_matrix(seen))
    metrics.update(
        {f"{BASELINE_PREFIX}{key}": value for key, value in _ranking(baseline, seen, valid_csr).items()}
    )
    if model.predicts_ratings:
        predict = getattr(model, "predict", None)
        if predict is None:
            raise ConfigError(f"the {model.name} model declares predicts_ratings but has no predict()")
        low, high = float(split.train.values.min()), float(split.train.values.max())
        predicted = np.clip(predict(split.valid.user_index, split.valid.item_index), low, high)
        metrics["rmse"] = rmse(predicted, split.valid.values)
        # The rating analogue of popularity: everyone predicts the mean training rating.
        mean = np.full(len(split.valid), float(split.train.values.mean()))
        metrics[f"{BASELINE_PREFIX}rmse"] = rmse(mean, split.valid.values)
    return metrics


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


def _ranking(model: Recommender, seen: sp.csr_matrix, valid_csr: sp.csr_matrix) -> dict[str, float]:
    measured = evaluate_ranking(model, seen, valid_csr, k=VALIDATION_K)
    users = measured.pop("users")
    result = {f"{key}@{VALIDATION_K}": value for key, value in measured.items()}
    result["validation_users"] = users
    return result
