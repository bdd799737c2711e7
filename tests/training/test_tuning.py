"""Tuning: every search space fits its model's config; TPE is seeded; the best trial is registered."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from sqlalchemy import Engine

from recsys.errors import ConfigError
from recsys.models import MODEL_CLASSES, get_model_class
from recsys.registry.registry import ModelRegistry
from recsys.settings import Settings
from recsys.training.tuning import SEARCH_SPACES, objective_of, tune

Seeder = Callable[..., None]


def test_every_model_has_a_search_space_its_config_accepts() -> None:
    assert set(SEARCH_SPACES) == set(MODEL_CLASSES)
    for name, space in SEARCH_SPACES.items():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(5):
            params = space(study.ask())
            config = get_model_class(name).Config(**params)  # raises on a name or range it rejects
            assert config.model_dump().items() >= params.items()


def test_objectives() -> None:
    assert objective_of("mf") == ("rmse", "minimize")
    assert objective_of("ials") == ("ndcg@10", "maximize")


ALS_FIXED = {"epochs": 3, "factors": 8}


def test_ials_tuning_is_seeded_and_registers_the_best(
    sqlite_engine: Engine, training_settings: Settings, seeder: Seeder
) -> None:
    seeder(sqlite_engine)
    first = tune(sqlite_engine, training_settings, "ials", trials=3, params=ALS_FIXED, seed=7)
    again = tune(sqlite_engine, training_settings, "ials", trials=2, params=ALS_FIXED, seed=7, register=True)

    assert [t.params for t in first.trials[:2]] == [t.params for t in again.trials]  # same seed, same draws
    assert [t.value for t in first.trials[:2]] == pytest.approx([t.value for t in again.trials])
    values = [t.value for t in first.trials]
    assert first.best_value == max(v for v in values if v is not None)
    best = next(t for t in first.trials if t.value == first.best_value)
    assert first.best_params == {**best.params, **ALS_FIXED}
    assert best.params["factors"] == 8  # fixed parameters win over sampled ones
    assert all(
        t.metrics["baseline_ndcg@10"] == first.trials[0].metrics["baseline_ndcg@10"] for t in first.trials
    )

    assert again.version is not None
    registered = ModelRegistry(sqlite_engine, training_settings.artifacts).get(again.version.version)
    for key, value in again.best_params.items():
        assert registered.params[key] == pytest.approx(value)


def test_tuning_refuses_bad_requests(sqlite_engine: Engine, training_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="unknown model 'svd'"):
        tune(sqlite_engine, training_settings, "svd", trials=1)
    with pytest.raises(ConfigError, match="at least 1, got 0"):
        tune(sqlite_engine, training_settings, "ials", trials=0)
    with pytest.raises(ConfigError, match="unknown parameter 'factor'"):
        tune(sqlite_engine, training_settings, "ials", trials=1, params={"factor": 3})
