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
from recsys.training.tuning import objective_of, sample, tune

Seeder = Callable[..., None]


@pytest.mark.parametrize("name", sorted(MODEL_CLASSES))
def test_every_declared_search_space_fits_its_config(name: str) -> None:
    model_class = get_model_class(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = sample(model_class.search_space, study.ask())
        assert set(params) == {r.name for r in model_class.search_space}
        config = model_class.Config(**params)  # raises on a name or range it rejects
        assert config.model_dump().items() >= params.items()
    # Every learned model has something to tune; popularity has nothing.
    assert bool(model_class.search_space) == (name != "popularity")


def test_objectives() -> None:
    assert objective_of(get_model_class("mf")) == ("rmse", "minimize")
    assert objective_of(get_model_class("ials")) == ("ndcg@10", "maximize")


def test_ease_is_tuned_with_nothing_but_its_model_file(
    sqlite_engine: Engine, training_settings: Settings, seeder: Seeder
) -> None:
    """A model registered by name alone is tuned on its declared space, and registered."""
    seeder(sqlite_engine)
    result = tune(sqlite_engine, training_settings, "ease", trials=2, seed=3, register=True)
    assert [set(t.params) for t in result.trials] == [{"l2"}, {"l2"}]
    assert all(10.0 <= t.params["l2"] <= 5000.0 for t in result.trials)
    assert result.metric == "ndcg@10" and result.best_value == max(t.value or 0 for t in result.trials)
    assert result.version is not None and result.version.model == "ease"
    assert result.version.params["l2"] == pytest.approx(result.best_params["l2"])


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
