"""Hyper-parameter search on the validation split with Optuna's TPE sampler (seeded).

Each model class declares its search space (``Recommender.search_space``: parameter -> range);
trials go through the first half of the one fitting path (:func:`recsys.training.fitting.validate`):
fit on the train part of the validation carve-out with the model's recipe, scored on its
held-out part, exactly as ``recsys train`` measures its reported metrics. The test part of any
benchmark split is never seen here. The number of epochs is not searched: every trial stops
early on the validation metric, and the refit uses the epochs it chose.

``recsys tune`` (:func:`tune`) and the retraining pipeline's bounded tuning step both run
:func:`search` on a validation split; they differ only in the data they hand it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import optuna
from sqlalchemy import Engine

from recsys.data.recipe import Recipe
from recsys.errors import ConfigError
from recsys.models import get_model_class
from recsys.models.base import Recommender, SearchRange
from recsys.registry.registry import VersionInfo
from recsys.settings import Settings
from recsys.training.fitting import ValidationSplit, parse_config, validate
from recsys.training.trainer import load_catalog, load_data, train

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


class Suggester(Protocol):
    """What a search space asks of a trial (an ``optuna.Trial`` or :class:`_FixedFirst`)."""

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...


def sample(space: Sequence[SearchRange], trial: Suggester) -> dict[str, Any]:
    """One point of a model's declared search space."""
    return {
        r.name: trial.suggest_int(r.name, int(r.low), int(r.high), log=r.log)
        if r.integer
        else trial.suggest_float(r.name, float(r.low), float(r.high), log=r.log)
        for r in space
    }


@dataclass(frozen=True)
class TrialResult:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    metrics: dict[str, float]
    seconds: float


@dataclass
class TuningResult:
    model: str
    metric: str
    direction: Literal["maximize", "minimize"]
    best_params: dict[str, Any]
    best_value: float
    trials: list[TrialResult]
    version: VersionInfo | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "metric": self.metric,
            "direction": self.direction,
            "best_params": self.best_params,
            "best_value": self.best_value,
            "trials": [trial.__dict__ for trial in self.trials],
            "version": self.version.version if self.version else None,
        }


def objective_of(model_class: type[Recommender]) -> tuple[str, Literal["maximize", "minimize"]]:
    """The validation metric a model is tuned on: RMSE for rating models, nDCG@10 otherwise."""
    return ("rmse", "minimize") if model_class.predicts_ratings else ("ndcg@10", "maximize")


def tune(
    engine: Engine,
    settings: Settings,
    model_name: str,
    *,
    trials: int,
    timeout: float | None = None,
    params: Mapping[str, Any] | None = None,
    kinds: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    combine: str | None = None,
    until: int | None = None,
    seed: int = 42,
    register: bool = False,
) -> TuningResult:
    """Search ``model_name``'s space for ``trials`` trials (or until ``timeout`` seconds).

    ``params`` are fixed for every trial (and win over sampled values). With ``register`` the
    best parameters are trained with :func:`recsys.training.trainer.train` and registered.
    """
    model_class = get_model_class(model_name)  # unknown names fail here with the choices
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    fixed = dict(params or {})
    parse_config(model_name, fixed)  # fail on a bad fixed parameter before any data is read
    recipe = model_class.recipe.override(kinds=kinds, weights=weights, combine=combine)
    data = load_data(engine, recipe, until=until)
    split = ValidationSplit.carve(data)
    catalog = load_catalog(engine, data.items) if model_class.uses_catalog else None
    result = search(
        model_name, split, recipe, trials=trials, timeout=timeout, fixed=fixed, catalog=catalog, seed=seed
    )
    if register:
        result.version = train(
            engine,
            settings,
            model_name,
            result.best_params,
            kinds=kinds,
            weights=weights,
            combine=combine,
            until=until,
        )
    return result


def search(
    model_name: str,
    split: ValidationSplit,
    recipe: Recipe,
    *,
    trials: int,
    timeout: float | None = None,
    fixed: Mapping[str, Any] | None = None,
    first: Mapping[str, Any] | None = None,
    catalog: pd.DataFrame | None = None,
    seed: int = 42,
) -> TuningResult:
    """Search ``model_name``'s space on ``split`` for ``trials`` trials (or until ``timeout``
    seconds; a trial that has started runs to its end). ``fixed`` parameters are not searched;
    ``first`` is the point the first trial tries (for example the parameters in use, so that the
    best result is never below them on validation)."""
    model_class = get_model_class(model_name)
    space = model_class.search_space
    fixed = dict(fixed or {})
    metric, direction = objective_of(model_class)

    def objective(trial: optuna.Trial) -> float:
        trial_params = sample(space, _FixedFirst(trial, fixed)) | fixed
        started = time.perf_counter()
        metrics = validate(
            model_name, parse_config(model_name, trial_params), split, recipe, catalog=catalog
        ).metrics
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        return metrics[metric]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
    if first:
        study.enqueue_trial({r.name: first[r.name] for r in space if r.name in first and r.name not in fixed})
    # With nothing to search, one trial is the whole answer.
    n_trials = trials if space else 1
    study.optimize(objective, n_trials=n_trials, timeout=timeout)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise ConfigError(f"no {model_name} trial completed within the {timeout} s timeout; allow more time")
    best_params = {**study.best_trial.params, **fixed}
    result = TuningResult(
        model=model_name,
        metric=metric,
        direction=direction,
        best_params=best_params,
        best_value=float(study.best_value),
        trials=[
            TrialResult(
                number=t.number,
                state=t.state.name.lower(),
                value=None if t.value is None else float(t.value),
                params={**t.params, **fixed},
                metrics=dict(t.user_attrs.get("metrics", {})),
                seconds=float(t.user_attrs.get("seconds", 0.0)),
            )
            for t in study.trials
        ],
    )
    return result


class _FixedFirst:
    """A trial that does not sample the parameters the user fixed: they take the given value."""

    def __init__(self, trial: optuna.Trial, fixed: Mapping[str, Any]) -> None:
        self.trial, self.fixed = trial, fixed

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        if name in self.fixed:
            return int(self.fixed[name])
        return self.trial.suggest_int(name, low, high, log=log)

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        if name in self.fixed:
            return float(self.fixed[name])
        return self.trial.suggest_float(name, low, high, log=log)
