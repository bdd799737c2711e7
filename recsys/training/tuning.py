"""Hyper-parameter search on the validation split with Optuna's TPE sampler (seeded).

Each model's search space is defined next to its name in :data:`SEARCH_SPACES`; trials fit on
the train part of the validation split and are scored on its held-out part, exactly as
``recsys train`` measures its reported metrics. The test part of any benchmark split is never
seen here.

Search spaces (``log``: sampled uniformly in log scale):

- ``ials``: factors 32..256 (log), regularization 0.01..300 (log; unnormalised weights want
  tens to hundreds on MovieLens-sized data), alpha 1..50 (log), frequency_exponent 0..1
  (frequency-scaled regularisation).
- ``mf``: factors 16..256 (log), regularization 1e-3..0.3 (log), bias_regularization
  1e-4..0.1 (log), learning_rate 3e-4..3e-2 (log).
- ``two-tower``: dim 32..128 (log), temperature 0.02..0.5 (log), learning_rate 3e-4..3e-2
  (log), n_negatives 0..128 (mixed negatives).
- ``popularity``: nothing to tune (one trial measures it).

The number of epochs (iterations) is not searched: every trial early-stops on the validation
metric, and ``recsys train`` refits for the best epoch it found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import optuna
from sqlalchemy import Engine

from recsys.errors import ConfigError
from recsys.models import MODEL_CLASSES, get_model_class
from recsys.models.base import FitOptions
from recsys.registry.registry import VersionInfo
from recsys.settings import Settings
from recsys.training.trainer import (
    CATALOG_MODELS,
    RATING_MODELS,
    ValidationSplit,
    fit_features,
    load_catalog,
    load_split,
    parse_config,
    train,
    validation_metrics,
)
from recsys.training.validation import validation_callback

logger = logging.getLogger(__name__)


class Suggester(Protocol):
    """What a search space asks of a trial (an ``optuna.Trial`` or :class:`_FixedFirst`)."""

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...


SearchSpace = Callable[[Suggester], dict[str, Any]]


def _ials_space(trial: Suggester) -> dict[str, Any]:
    return {
        "factors": trial.suggest_int("factors", 32, 256, log=True),
        "regularization": trial.suggest_float("regularization", 1e-2, 300.0, log=True),
        "alpha": trial.suggest_float("alpha", 1.0, 50.0, log=True),
        "frequency_exponent": trial.suggest_float("frequency_exponent", 0.0, 1.0),
    }


def _mf_space(trial: Suggester) -> dict[str, Any]:
    return {
        "factors": trial.suggest_int("factors", 16, 256, log=True),
        "regularization": trial.suggest_float("regularization", 1e-3, 0.3, log=True),
        "bias_regularization": trial.suggest_float("bias_regularization", 1e-4, 0.1, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 3e-2, log=True),
    }


def _two_tower_space(trial: Suggester) -> dict[str, Any]:
    return {
        "dim": trial.suggest_int("dim", 32, 128, log=True),
        "temperature": trial.suggest_float("temperature", 0.02, 0.5, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 3e-2, log=True),
        "n_negatives": trial.suggest_int("n_negatives", 0, 128),
    }


def _no_space(trial: Suggester) -> dict[str, Any]:
    del trial
    return {}


#: Model name -> the parameters a trial samples (see the module docstring for the ranges).
SEARCH_SPACES: dict[str, SearchSpace] = {
    "ials": _ials_space,
    "mf": _mf_space,
    "two-tower": _two_tower_space,
    "popularity": _no_space,
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


def objective_of(model_name: str) -> tuple[str, Literal["maximize", "minimize"]]:
    """The validation metric a model is tuned on: RMSE for rating models, nDCG@10 otherwise."""
    return ("rmse", "minimize") if model_name in RATING_MODELS else ("ndcg@10", "maximize")


def tune(
    engine: Engine,
    settings: Settings,
    model_name: str,
    *,
    trials: int,
    timeout: float | None = None,
    params: Mapping[str, Any] | None = None,
    kinds: Sequence[str] | None = None,
    until: int | None = None,
    seed: int = 42,
    register: bool = False,
) -> TuningResult:
    """Search ``model_name``'s space for ``trials`` trials (or until ``timeout`` seconds).

    ``params`` are fixed for every trial (and win over sampled values). With ``register`` the
    best parameters are trained with :func:`recsys.training.trainer.train` and registered.
    """
    if model_name not in MODEL_CLASSES:
        raise ConfigError(f"unknown model {model_name!r}; choose one of {sorted(MODEL_CLASSES)}")
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    space = SEARCH_SPACES[model_name]
    fixed = dict(params or {})
    parse_config(model_name, fixed)  # fail on a bad fixed parameter before any data is read
    split = load_split(engine, kinds=kinds, until=until)
    catalog = load_catalog(engine, split.data.items) if model_name in CATALOG_MODELS else None
    metric, direction = objective_of(model_name)

    def objective(trial: optuna.Trial) -> float:
        trial_params = space(_FixedFirst(trial, fixed)) | fixed
        started = time.perf_counter()
        metrics = _fit_and_measure(model_name, trial_params, split, catalog)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        return metrics[metric]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
    # With nothing to search, one trial is the whole answer.
    n_trials = 1 if space is _no_space else trials
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
    if register:
        result.version = train(engine, settings, model_name, best_params, kinds=kinds, until=until)
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


def _fit_and_measure(
    model_name: str, params: Mapping[str, Any], split: ValidationSplit, catalog: Any
) -> dict[str, float]:
    model = get_model_class(model_name)(parse_config(model_name, params))
    model.fit(
        split.train_csr,
        FitOptions(
            validate=validation_callback(split.train_csr, split.valid_csr),
            features=fit_features(split.train, catalog)),
    )
    return validation_metrics(model, split, model_name)
