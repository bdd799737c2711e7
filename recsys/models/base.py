"""The model contract: one ``fit``, vectors out, and one shared ``recommend`` for every model.

Every model scores a (user, item) pair as the inner product of a user vector and an item vector,
so recommending, batch scoring and the FAISS index share one code path. Models implement only
``fit`` and ``fold_in`` (and extra state in ``_extra_arrays`` when they have some).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.data.recipe import Recipe
from recsys.errors import ArtifactError, ConfigError, NotFittedError
from recsys.index.exact import ExactIndex
from recsys.retrieval import RankOptions, Retriever
from recsys.runtime.arrays import map_npz, save_npz
from recsys.runtime.cluster import RayEngine
from recsys.runtime.epochs import EpochStep, StoppingRule, run_epochs

MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"


class ModelConfig(BaseModel):
    """Base of every model's hyper-parameters: typed, validated, documented defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 42
    """Random seed; every value (0 included) is a fixed seed."""


class EpochConfig(ModelConfig):
    """Hyper-parameters of every model that trains in epochs (sweeps, passes): one name for the
    limit and one early-stopping rule (:class:`recsys.runtime.epochs.StoppingRule`)."""

    #: Names the epoch settings had before they were shared; configs saved with them still load.
    FORMER_NAMES: ClassVar[dict[str, str]] = {"iterations": "epochs", "max_epochs": "epochs"}

    epochs: int = Field(default=20, ge=1)
    """Most epochs: the limit when early stopping on validation, the exact count otherwise."""
    patience: int = Field(default=3, ge=1)
    """Early stopping: epochs without a better smoothed validation metric before stopping."""
    min_epochs: int = Field(default=1, ge=1)
    """Early stopping never keeps fewer epochs than this (when the limit allows as many)."""
    smoothing: int = Field(default=3, ge=1)
    """Validation values averaged (trailing mean) before epochs are compared, so that one noisy
    epoch neither wins nor ends the fit."""

    @model_validator(mode="before")
    @classmethod
    def _former_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.keys() & cls.FORMER_NAMES.keys():
            data = dict(data)
            for old, new in cls.FORMER_NAMES.items():
                if old in data:
                    # The former name wins: the two-tower model's "epochs" was the count without
                    # validation, its "max_epochs" the limit that is now "epochs".
                    data[new] = data.pop(old)
        return data


@dataclass(frozen=True)
class SearchRange:
    """One tuned parameter's range: integers or floats from ``low`` to ``high`` (inclusive),
    sampled uniformly, or uniformly in log scale with ``log``."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass
class WarmStart:
    """Vectors of a previous version, aligned to the new id maps.

    Rows of ``user_factors`` / ``item_factors`` whose ``known_*`` flag is false belong to ids the
    previous version did not have; the model initialises them fresh.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    known_users: np.ndarray  # bool, one per user of the new data
    known_items: np.ndarray  # bool, one per item of the new data
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # for example biases


@dataclass
class FitOptions:
    """How to run a fit (as opposed to what to learn, which is the model's config)."""

    validate: Callable[[Recommender], dict[str, float]] | None = None
    """Validation metrics of the model as it stands after an epoch (``{"val_ndcg": ...}``), for
    early stopping. Built by the caller (``recsys.training.validation.validation_callback``), so
    that models never import the evaluation code."""
    epochs: int | None = None
    """Train exactly this many epochs/iterations without early stopping (the refit on all data)."""
    log_dir: Path | None = None
    """TensorBoard log folder (loss and validation metric per epoch)."""
    checkpoint_dir: Path | None = None
    """Where to checkpoint each epoch so that a killed fit can resume."""
    resume: bool = False
    """Continue from the newest checkpoint in ``checkpoint_dir``."""
    warm_start: WarmStart | None = None
    progress: bool = False
    """Show a progress bar."""
    features: dict[str, Any] | None = None
    """Side information (item titles and genres, user attributes) for models that use it."""
    engine: RayEngine | None = None
    """Ray workers to share the fit among (models whose ``engines`` include ``ray``); None: here."""


class Recommender(ABC):
    """Base of every model; subclasses set ``name`` and ``Config`` and declare what they need.

    The capability block below is all that the training path, the tuner, the pipeline and the
    benchmark know about a model: no list of model names exists elsewhere.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: The history key early stopping watches, and whether larger values are better.
    stopping_metric: ClassVar[tuple[str, Literal["max", "min"]]] = ("val_ndcg", "max")
    recipe: ClassVar[Recipe] = Recipe()
    """How the interaction log becomes this model's training matrix (kinds, weights, combine
    rule, value rule); ``recsys train --kinds/--weight/--combine`` override the first three."""
    predicts_ratings: ClassVar[bool] = False
    """The model has ``predict(user_index, item_index)``: validated by RMSE too, Protocol R."""
    uses_catalog: ClassVar[bool] = False
    """The model reads item titles and genres (``FitOptions.features``)."""
    search_space: ClassVar[tuple[SearchRange, ...]] = ()
    """Parameters ``recsys tune`` samples; empty: nothing to tune."""
    epoch_limit: ClassVar[str | None] = None
    """The config field bounding epochs/sweeps (None: a closed-form or one-pass model)."""
    fits_any_catalogue: ClassVar[bool] = True
    """The model trains at any catalogue size. False: it holds dense items x items matrices and
    refuses catalogues beyond its ``max_items`` (EASE, lowrank-ae). The ``ials-lowrank`` blend
    fits any size by serving iALS alone beyond its ``max_items`` (:meth:`fit_notes` says so).
    The default model (``RECSYS_DEFAULT_MODEL``) must fit any size."""
    engines: ClassVar[tuple[str, ...]] = ("local",)
    """Where the model can fit: ``local`` (this process), ``ray`` (Ray workers,
    ``FitOptions.engine``), ``tf_config`` (the workers ``TF_CONFIG`` names, under
    ``MultiWorkerMirroredStrategy``: :func:`recsys.runtime.device.distribution_strategy`)."""

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        if config is not None and params:
            raise ConfigError("pass either a config object or keyword parameters, not both")
        try:
            self.config = config if config is not None else self.Config(**params)
        except Exception as exc:  # pydantic's ValidationError names the field and the value
            raise ConfigError(f"invalid {self.name} parameters: {exc}") from exc
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.history: list[dict[str, float]] = []
        """One entry per epoch: loss and validation metrics, as logged."""
        self._index: ExactIndex | None = None
        self._stopping_rule: StoppingRule | None = None

    # --- what each model implements -------------------------------------------------------

    @abstractmethod
    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        """Learn from a users x items CSR matrix (values are ratings or interaction strengths)."""

    @abstractmethod
    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        """User vectors for the rows of ``user_items`` (histories over the known items)."""

    def fold_in_one(self, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The vector of one history, as a ``(1, factors)`` array: ``fold_in`` of the row with
        ``values`` at the (sorted, unique) item ``columns``. The service folds in one history per
        request; a model with a cheaper single-row solve overrides this with the same result."""
        indptr = np.array([0, len(columns)], dtype=np.int64)
        row = sp.csr_matrix((values, columns, indptr), shape=(1, len(self._require_items())))
        return self.fold_in(row)

    def prepare_fold_in(self) -> None:  # noqa: B027
        """Compute now what :meth:`fold_in_one` would otherwise compute on its first call for
        these item vectors (the service calls this when it loads a version, so that no request
        pays for it). Models whose single-history fold-in caches nothing keep this no-op."""

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        """Additional state to save next to the vectors."""
        return {}

    def _restore_extra_arrays(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027
        """Inverse of ``_extra_arrays``; models without extra state keep this no-op."""

    def refit_params(self) -> dict[str, Any]:
        """Config values this (validation) fit chose on ``FitOptions.validate``, besides the epochs,
        for the refit on all the data (the ``ials-lowrank`` blend: its weight); {} for most models."""
        return {}

    def fit_notes(self) -> dict[str, Any]:
        """What the last fit decided on its own that a reader of the version must know (the
        ``ials-lowrank`` blend: the part it skipped and why); {} for most models. The fitting
        path records it under ``training.fit_notes`` in version.json."""
        return {}

    @property
    def similarity_factors(self) -> np.ndarray:
        """Item vectors used for item-to-item similarity (models with bias columns drop them)."""
        return self._require_items()

    # --- the epoch loop (models that train in epochs) ----------------------------------------

    def stopping_rule(self) -> StoppingRule:
        """The rule that chose (or will choose) this model's epochs: the one its last fit used,
        else the one its config describes."""
        if self._stopping_rule is not None:
            return self._stopping_rule
        metric, mode = self.stopping_metric
        config = self.config
        if not isinstance(config, EpochConfig):
            return StoppingRule(metric=metric, mode=mode)
        return StoppingRule(
            metric=metric,
            mode=mode,
            patience=config.patience,
            min_epochs=config.min_epochs,
            window=config.smoothing,
        )

    def _run_epochs(
        self, step: EpochStep, options: FitOptions, *, limit: int, rule: StoppingRule | None = None
    ) -> None:
        """Train through the shared epoch loop: ``limit`` epochs at most (``options.epochs``
        exactly), early-stopped by ``rule`` (default :meth:`stopping_rule`) when validating."""
        self._stopping_rule = rule
        rule = self.stopping_rule()
        validate = options.validate
        self.history = run_epochs(
            step,
            name=self.name,
            limit=options.epochs if options.epochs is not None else limit,
            rule=rule,
            validate=None if validate is None else (lambda: validate(self)),
            early_stopping=options.epochs is None,
            checkpoint_dir=options.checkpoint_dir,
            resume=options.resume,
            log_dir=options.log_dir,
            progress=options.progress,
        )
        self._stopping_rule = rule

    # --- shared behaviour -------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return self.item_factors is not None

    @property
    def params(self) -> dict[str, Any]:
        return self.config.model_dump()

    def _require_items(self) -> np.ndarray:
        if self.item_factors is None:
            raise NotFittedError(f"the {self.name} model is not fitted; call fit() or load()")
        return self.item_factors

    @property
    def index(self) -> ExactIndex:
        """The exact index over the item vectors; recommend, scoring and evaluation share it."""
        items = self._require_items()
        if self._index is None or self._index.item_vectors.shape != items.shape:
            self._index = ExactIndex(items)
        return self._index

    def user_vectors(self, userids: np.ndarray, rows: sp.csr_matrix | None = None) -> np.ndarray:
        """Vectors of the given users; users beyond the trained ones are folded in from ``rows``.

        ``rows`` holds one interaction row per entry of ``userids``.
        """
        userids = np.atleast_1d(np.asarray(userids, dtype=np.int64))
        if self.user_factors is None:
            raise NotFittedError(f"the {self.name} model has no user vectors; fit() it first")
        known = userids < len(self.user_factors)
        vectors = np.empty((len(userids), self.user_factors.shape[1]), dtype=np.float32)
        vectors[known] = self.user_factors[userids[known]]
        if not known.all():
            if rows is None:
                raise NotFittedError(
                    f"user index {int(userids[~known][0])} is beyond the "
                    f"{len(self.user_factors)} trained users; pass their rows to fold them in"
                )
            vectors[~known] = self.fold_in(rows[np.flatnonzero(~known)])
        return vectors

    def recommend(
        self,
        userid: int | np.ndarray,
        user_items: sp.csr_matrix,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items: np.ndarray | None = None,
        recalculate_user: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``N`` item indices and scores for one user (1-d result) or many (2-d result).

        ``user_items`` holds exactly one row per requested user, in the order of ``userid``
        (as in implicit): row ``i`` is the history of ``userid[i]``. Pass ``matrix[userids]``,
        not the whole matrix; any other shape is refused. Seen items are excluded by default;
        slots that cannot be filled hold ``-1`` and ``-inf``.
        """
        single = np.ndim(userid) == 0
        userids = np.atleast_1d(np.asarray(userid, dtype=np.int64))
        n_items = len(self._require_items())
        if user_items.shape != (len(userids), n_items):
            raise ValueError(
                f"user_items must hold one row per requested user: got shape {user_items.shape}, "
                f"expected ({len(userids)}, {n_items}) for {len(userids)} users and {n_items} items "
                "(pass matrix[userids])"
            )
        rows = sp.csr_matrix(user_items)
        # Ranked by the retriever the service, scoring and evaluation use (recsys.retrieval).
        options = RankOptions(k=N, exclude_seen=filter_already_liked_items, exclude_items=filter_items)
        fold = np.full(len(userids), recalculate_user)
        ranking = Retriever.for_model(self, self.index).recommend(userids, rows, options, fold)
        ids, scores = ranking.item_ids, ranking.scores
        return (ids[0], scores[0]) if single else (ids, scores)

    def similar_items(self, itemid: int | np.ndarray, N: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` items with the most similar vectors (cosine), the item itself excluded."""
        single = np.ndim(itemid) == 0
        itemids = np.atleast_1d(np.asarray(itemid, dtype=np.int64))
        ranking = Retriever.for_model(self, self.index).similar(itemids, RankOptions(k=N))
        ids, scores = ranking.item_ids, ranking.scores
        return (ids[0], scores[0]) if single else (ids, scores)

    # --- persistence ------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the model into folder ``path`` (config as JSON, vectors as numpy)."""
        if not self.is_fitted:
            raise NotFittedError(f"cannot save an unfitted {self.name} model")
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"item_factors": self._require_items(), **self._extra_arrays()}
        if self.user_factors is not None:
            arrays["user_factors"] = self.user_factors
        save_npz(path / ARRAYS_FILE, arrays)
        meta = {"model": self.name, "config": self.params, "history": self.history}
        (path / MODEL_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save`, its arrays memory-mapped copy-on-write
        (:func:`recsys.runtime.arrays.map_npz`)."""
        meta = read_model_meta(path)
        if meta["model"] != cls.name:
            raise ArtifactError(f"{path} holds a {meta['model']!r} model, not {cls.name!r}")
        model = cls(**meta["config"])
        # Memory-mapped (copy-on-write): the service's workers share one copy of the factors.
        arrays = map_npz(path / ARRAYS_FILE)
        model.item_factors = arrays.pop("item_factors")
        model.user_factors = arrays.pop("user_factors", None)
        model.history = meta.get("history", [])
        model._restore_extra_arrays(arrays)
        return model


def refit_epochs(model: Recommender) -> int | None:
    """How many epochs a refit on all the data runs: the epoch the model's stopping rule chose on
    its validation history (every epoch that ran when it had no validation; None: no epochs)."""
    return model.stopping_rule().chosen_epoch(model.history)


def read_model_meta(path: Path) -> dict[str, Any]:
    meta_file = path / MODEL_FILE
    if not meta_file.is_file() or not (path / ARRAYS_FILE).is_file():
        raise ArtifactError(f"{path} is not a saved model (missing {MODEL_FILE} or {ARRAYS_FILE})")
    meta: dict[str, Any] = json.loads(meta_file.read_text())
    return meta
