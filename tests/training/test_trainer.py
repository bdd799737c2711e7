"""Trainer: validation metrics next to the baseline, refit on everything, warm start, resume."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pytest
import scipy.sparse as sp
from sqlalchemy import Engine, func, select

from recsys.data.interactions import IdMap
from recsys.data.matrix import build_interactions, data_fingerprint
from recsys.data.recipe import Recipe
from recsys.db.models import Interaction
from recsys.errors import ConfigError, DataError
from recsys.models.base import FitOptions, Recommender
from recsys.models.popularity import Popularity
from recsys.registry.registry import CHECKSUMS_FILE, LoadedVersion, ModelRegistry, VersionInfo
from recsys.settings import Settings, get_settings
from recsys.training import fitting, trainer
from recsys.training.fitting import ValidationSplit, parse_config, validation_metrics
from recsys.training.trainer import align_warm_start, parse_param_options, train
from recsys.training.validation import ValidationCallback

Seeder = Callable[..., None]

N_INTERACTIONS = 60 * 9


class RecordingPopularity(Popularity):
    """Popularity that records its fit options and reports a validation curve peaking at epoch 2."""

    calls: ClassVar[list[tuple[sp.csr_matrix, FitOptions]]] = []

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        options = options or FitOptions()
        RecordingPopularity.calls.append((sp.csr_matrix(user_items), options))
        super().fit(user_items, options)
        if options.validate is not None:
            self.history = [{"epoch": e, "val_ndcg": v} for e, v in ((1, 0.1), (2, 0.3), (3, 0.1))]
        return self


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> type[RecordingPopularity]:
    RecordingPopularity.calls = []
    monkeypatch.setattr(trainer, "get_model_class", lambda name: RecordingPopularity)
    monkeypatch.setattr(fitting, "get_model_class", lambda name: RecordingPopularity)
    return RecordingPopularity


def test_train_registers_a_production_version_refitted_on_all_data(
    sqlite_engine: Engine, training_settings: Settings, seeder: Seeder
) -> None:
    seeder(sqlite_engine)
    info = train(sqlite_engine, training_settings, "popularity", {})

    assert info.status == "production"  # the first version
    metrics = info.metrics
    assert metrics["ndcg@10"] == pytest.approx(metrics["baseline_ndcg@10"])  # popularity is its own baseline
    assert 0 < metrics["ndcg@10"] < 1
    assert metrics["validation_users"] == 60  # 9 interactions each: every user holds some out
    assert metrics["fit_seconds"] >= 0
    data = build_interactions(sqlite_engine)
    assert info.watermark == int(data.timestamps.max())
    assert info.data_fingerprint == data_fingerprint(data)

    loaded = ModelRegistry(sqlite_engine, training_settings.artifacts).load(info.version)
    counts = np.bincount(data.item_index, minlength=len(data.items))
    # Refitted on everything, not on the 80 % the validation fit saw.
    np.testing.assert_array_equal(loaded.model.item_factors[:, 0], counts)  # type: ignore[index]
    assert counts.sum() == N_INTERACTIONS
    listed = (info.path / CHECKSUMS_FILE).read_text()
    assert "  index/" in listed  # the serving index was attached
    artifacts = training_settings.artifacts
    assert list((artifacts / ".work").iterdir()) == []
    assert not (artifacts / "checkpoints").exists() or list((artifacts / "checkpoints").iterdir()) == []


def test_refit_uses_the_best_epoch_and_resume_reaches_the_model(
    sqlite_engine: Engine,
    training_settings: Settings,
    seeder: Seeder,
    recording: type[RecordingPopularity],
) -> None:
    seeder(sqlite_engine)
    info = train(sqlite_engine, training_settings, "popularity", {}, resume=True)

    (valid_matrix, valid_options), (full_matrix, full_options) = recording.calls
    assert isinstance(valid_options.validate, ValidationCallback) and valid_options.epochs is None
    assert valid_matrix.nnz + valid_options.validate.valid.nnz == full_matrix.nnz == N_INTERACTIONS
    assert full_options.validate is None and full_options.epochs == 2  # the best validation epoch
    assert info.metrics["best_epoch"] == 2
    checkpoints = training_settings.artifacts / "checkpoints"
    assert valid_options.resume and full_options.resume
    assert valid_options.checkpoint_dir is not None and full_options.checkpoint_dir is not None
    assert valid_options.checkpoint_dir.parent == full_options.checkpoint_dir.parent
    assert valid_options.checkpoint_dir.parent.parent == checkpoints
    assert valid_options.checkpoint_dir.parent.name.startswith(f"popularity-{info.data_fingerprint[:16]}-")
    assert valid_options.log_dir is not None and valid_options.log_dir.name == "validation"
    assert valid_options.features is not None and "timestamps" in valid_options.features


class BiasedPopularity(Popularity):
    """A model with per-user and per-item extra arrays, to check they are re-indexed too."""

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        assert self.user_factors is not None and self.item_factors is not None
        return {"user_bias": self.user_factors[:, 0] * 10, "item_bias": self.item_factors[:, 0] * 10}


def loaded(model: Recommender, users: list[str], items: list[str]) -> LoadedVersion:
    info = VersionInfo(
        version="popularity-1",
        model="popularity",
        status="candidate",
        path=Path("."),
        params={},
        metrics={},
        watermark=None,
        data_fingerprint="",
        created_at=datetime.now(UTC),
        promoted_at=None,
    )
    return LoadedVersion(
        info=info, model=model, users=IdMap(np.array(users)), items=IdMap(np.array(items)), path=Path(".")
    )


def test_warm_start_keeps_old_vectors_for_old_ids_and_flags_new_ones() -> None:
    model = BiasedPopularity()
    model.user_factors = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
    model.item_factors = np.array([[7.0, 8.0], [9.0, 10.0]], dtype=np.float32)
    previous = loaded(model, ["a", "b", "c"], ["x", "y"])

    warm = align_warm_start(
        previous, IdMap(np.array(["c", "new", "a", "b"])), IdMap(np.array(["y", "z", "x"]))
    )

    np.testing.assert_array_equal(warm.known_users, [True, False, True, True])
    np.testing.assert_array_equal(warm.known_items, [True, False, True])
    np.testing.assert_array_equal(warm.user_factors, [[5, 6], [0, 0], [1, 2], [3, 4]])
    np.testing.assert_array_equal(warm.item_factors, [[9, 10], [0, 0], [7, 8]])
    np.testing.assert_array_equal(warm.extra["user_bias"], [50, 0, 10, 30])
    np.testing.assert_array_equal(warm.extra["item_bias"], [90, 0, 70])


def test_warm_start_from_a_version_aligns_to_the_grown_data_and_validates_on_unseen_data(
    sqlite_engine: Engine,
    training_settings: Settings,
    seeder: Seeder,
    recording: type[RecordingPopularity],
) -> None:
    seeder(sqlite_engine, n_users=30)
    first = train(sqlite_engine, training_settings, "popularity", {"window_seconds": 10_000})
    # Nothing new since the first version: validation falls back to pairs it has seen, and says so.
    same = train(sqlite_engine, training_settings, "popularity", {}, warm_start=first.version)
    assert "optimistic" in json.loads((same.path / "version.json").read_text())["training"]["validation"]
    assert same.metrics["split"]["kind"] == "in-sample"
    seeder(
        sqlite_engine,
        n_users=6,
        user_prefix="late",
        item_prefix="j",
        n_items=13,
        per_user=5,
        start_ts=2_000_000,
    )
    recording.calls = []

    second = train(sqlite_engine, training_settings, "popularity", {}, warm_start=first.version)

    (train_matrix, options), (full_matrix, full_options) = recording.calls
    warm = options.warm_start
    assert warm is not None and full_options.warm_start is warm
    assert warm.known_users.tolist() == [True] * 30 + [False] * 6
    assert warm.known_items.tolist() == [True] * 36 + [False] * 13
    assert second.params["window_seconds"] == 10_000  # the previous version's parameters carry over
    # Validated only on what the previous version never saw: the late users' held-out items.
    assert isinstance(options.validate, ValidationCallback)
    validation = options.validate.valid
    assert set(validation.nonzero()[0]) <= set(range(30, 36)) and validation.nnz == 6
    assert train_matrix.nnz + validation.nnz == full_matrix.nnz == 30 * 9 + 6 * 5
    details = json.loads((second.path / "version.json").read_text())["training"]
    assert details["validation"] == "held-out, newer than the warm-start version"
    # Its metrics come from another split than the first version's, and the registry says so.
    assert second.metrics["split"]["kind"] == f"held-out, newer than {first.watermark}"
    assert first.metrics["split"] == {"kind": "held-out", "data": first.data_fingerprint[:16], "seed": 43}
    assert details["warm_start"] == first.version


def test_warm_start_from_another_model_is_refused(
    sqlite_engine: Engine, training_settings: Settings, seeder: Seeder
) -> None:
    seeder(sqlite_engine)
    first = train(sqlite_engine, training_settings, "popularity", {})
    with pytest.raises(ConfigError, match=f"cannot warm-start a ials model from {first.version}"):
        train(sqlite_engine, training_settings, "ials", {}, warm_start=first.version)


def test_until_selects_older_interactions_only(
    sqlite_engine: Engine, training_settings: Settings, seeder: Seeder
) -> None:
    seeder(sqlite_engine)
    cutoff = 1_000_000 + 29 * 100 + 50  # users 0..29 only
    info = train(sqlite_engine, training_settings, "popularity", {}, until=cutoff)
    assert info.watermark is not None and info.watermark <= cutoff
    manifest = (info.path / "version.json").read_text()
    assert '"interactions": 270' in manifest


def test_promote_flag_applies_the_guard(
    sqlite_engine: Engine, training_settings: Settings, seeder: Seeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeder(sqlite_engine)
    first = train(sqlite_engine, training_settings, "popularity", {})
    # A model worse than popularity: make the measured nDCG fall below the baseline.
    real = fitting.validation_metrics

    def worse(*args: Any, **kwargs: Any) -> dict[str, float]:
        metrics = real(*args, **kwargs)
        metrics["ndcg@10"] = metrics["baseline_ndcg@10"] / 2
        return metrics

    monkeypatch.setattr(fitting, "validation_metrics", worse)
    with pytest.raises(Exception, match="below the popularity baseline"):
        train(sqlite_engine, training_settings, "popularity", {}, promote=True)
    registry = ModelRegistry(sqlite_engine, training_settings.artifacts)
    assert registry.production().version == first.version  # type: ignore[union-attr]
    forced = train(sqlite_engine, training_settings, "popularity", {}, promote=True, force=True)
    assert forced.status == "production"


def test_empty_database_and_bad_parameters_are_named(
    sqlite_engine: Engine, training_settings: Settings
) -> None:
    with pytest.raises(DataError, match="no interactions"):
        train(sqlite_engine, training_settings, "popularity", {})
    with pytest.raises(ConfigError, match=r"window_seconds='soon'"):
        parse_config("popularity", {"window_seconds": "soon"})
    with pytest.raises(ConfigError, match=r"unknown parameter 'factors' \(known: seed, window_seconds\)"):
        parse_config("popularity", {"factors": 3})
    with pytest.raises(ConfigError, match="unknown model 'svd'"):
        parse_config("svd", {})


def test_param_options_are_read_as_json_when_they_parse() -> None:
    parsed = parse_param_options(
        ["factors=64", "alpha=2.5", "log_q=false", "solver=cg", "window=null", "x=a=b"]
    )
    assert parsed == {"factors": 64, "alpha": 2.5, "log_q": False, "solver": "cg", "window": None, "x": "a=b"}
    with pytest.raises(ConfigError, match="key=value, got 'factors'"):
        parse_param_options(["factors"])


def test_fingerprint_changes_with_the_data(sqlite_engine: Engine, seeder: Seeder) -> None:
    seeder(sqlite_engine)
    data = build_interactions(sqlite_engine)
    assert data_fingerprint(data) == data_fingerprint(build_interactions(sqlite_engine))
    changed = data.subset(np.arange(len(data)) > 0)
    assert data_fingerprint(changed) != data_fingerprint(data)


class ConstantRating(Popularity):
    """Predicts 4.0 for every pair: its RMSE can be computed by hand."""

    predicts_ratings = True
    recipe = Recipe(values="raw")

    def predict(self, user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        return np.full(len(user_index), 4.0)


def test_rating_models_report_rmse_next_to_the_mean_rating_baseline(
    sqlite_engine: Engine, seeder: Seeder
) -> None:
    seeder(sqlite_engine)
    split = ValidationSplit.carve(build_interactions(sqlite_engine))
    model = ConstantRating().fit(split.train.to_csr())
    metrics = validation_metrics(model, split)
    held_out = split.valid.values.astype(np.float64)
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((held_out - 4.0) ** 2)))
    mean = split.train.values.astype(np.float64).mean()
    assert metrics["baseline_rmse"] == pytest.approx(np.sqrt(np.mean((held_out - mean) ** 2)), rel=1e-6)
    assert "ndcg@10" in metrics and "baseline_ndcg@10" in metrics

    class Declared(Popularity):
        predicts_ratings = True

    with pytest.raises(ConfigError, match="has no predict"):
        validation_metrics(Declared().fit(split.train.to_csr()), split)


# --- with the real iALS model ------------------------------------------------------------------

ALS_PARAMS = {"factors": 8, "epochs": 4, "patience": 4, "regularization": 1.0, "alpha": 5.0}


def test_ials_beats_popularity_on_planted_groups(
    sqlite_engine: Engine, training_settings: Settings, seeder: Seeder
) -> None:
    seeder(sqlite_engine)
    info = train(sqlite_engine, training_settings, "ials", ALS_PARAMS)
    assert info.metrics["ndcg@10"] > info.metrics["baseline_ndcg@10"] + 0.15
    assert 1 <= info.metrics["best_epoch"] <= 4
    tensorboard = info.path / "tensorboard"
    assert any((tensorboard / "validation").iterdir()) and any((tensorboard / "full").iterdir())


class Killed(Exception):
    pass


def test_resume_continues_an_interrupted_ials_training_from_its_checkpoint(
    sqlite_engine: Engine, training_settings: Settings, seeder: Seeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys.models import ials
    from recsys.runtime import epochs

    seeder(sqlite_engine)
    real_save = epochs.save_checkpoint
    saved: list[int] = []

    def save_then_die(directory: Path, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> Path:
        path = real_save(directory, arrays, state)
        saved.append(len(state["history"]))
        if len(saved) == 2:
            raise Killed("killed after the second epoch")
        return path

    monkeypatch.setattr(epochs, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(sqlite_engine, training_settings, "ials", ALS_PARAMS)
    registry = ModelRegistry(sqlite_engine, training_settings.artifacts)
    assert registry.list() == []
    assert [p.name for p in training_settings.artifacts.iterdir() if not p.name.startswith(".")] == [
        "checkpoints"
    ]

    monkeypatch.setattr(epochs, "save_checkpoint", real_save)
    solves = 0
    real_solve = ials.ImplicitALS._solve

    def counting_solve(self: ials.ImplicitALS, *args: Any, **kwargs: Any) -> np.ndarray:
        nonlocal solves
        solves += 1
        return real_solve(self, *args, **kwargs)

    monkeypatch.setattr(ials.ImplicitALS, "_solve", counting_solve)
    info = train(sqlite_engine, training_settings, "ials", ALS_PARAMS, resume=True)

    # The validation fit ran only epochs 3 and 4 (two sweeps each); the refit ran best_epoch epochs.
    assert solves == 2 * 2 + 2 * info.metrics["best_epoch"]
    assert info.metrics["ndcg@10"] > info.metrics["baseline_ndcg@10"]
    assert registry.get(info.version).status == "production"
    assert sqlite_engine.connect().execute(select(func.count()).select_from(Interaction)).scalar() == 540


def test_too_little_data_to_validate_fits_on_everything_and_promotion_needs_force(
    sqlite_engine: Engine, training_settings: Settings, seeder: Seeder, caplog: pytest.LogCaptureFixture
) -> None:
    seeder(sqlite_engine, n_users=6, per_user=4)  # 24 interactions, nobody has the 5 to hold some out
    with caplog.at_level("WARNING"):
        first = train(sqlite_engine, training_settings, "ials", {"factors": 4, "iterations": 3})
    assert "could not validate ials" in caplog.text and "unvalidated" in caplog.text
    assert "ndcg@10" not in first.metrics and first.metrics["best_epoch"] is None
    details = json.loads((first.path / "version.json").read_text())["training"]
    assert details["validation"].startswith("none, the version is unvalidated: no user has the 5")
    assert details["validation_interactions"] == 0
    loaded = ModelRegistry(sqlite_engine, training_settings.artifacts).load(first.version)
    assert len(loaded.model.history) == 3  # the model's own epoch default, on all 24 interactions

    with pytest.raises(Exception, match=r"has no validation ndcg@10 .* pass --force"):
        train(sqlite_engine, training_settings, "ials", {"factors": 4, "iterations": 3}, promote=True)
    forced = train(
        sqlite_engine, training_settings, "ials", {"factors": 4, "iterations": 3}, promote=True, force=True
    )
    assert forced.status == "production"


def test_serving_folds_in_histories_by_the_recipe_the_version_was_trained_with(
    sqlite_engine: Engine, training_settings: Settings, seeder: Seeder
) -> None:
    from recsys.retrieval.loading import history_rule

    seeder(sqlite_engine)
    info = train(sqlite_engine, training_settings, "ials", ALS_PARAMS)
    loaded = ModelRegistry(sqlite_engine, training_settings.artifacts).load(info.version)
    rule = history_rule(loaded)
    assert rule is not None  # iALS learns from binary pairs: ratings must not become confidences
    ratings = np.array([5.0, 0.0, 3.0, -1.0], dtype=np.float32)
    np.testing.assert_array_equal(rule(ratings), [1, 0, 1, 0])


def test_final_metrics_rank_a_seeded_sample_of_metric_users(
    sqlite_engine: Engine, seeder: Seeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version's validation figures rank at most RECSYS_METRIC_USERS users, the same ones for
    the model and for popularity, and RMSE still reads every held-out rating."""
    seeder(sqlite_engine)
    split = ValidationSplit.carve(build_interactions(sqlite_engine))
    holders = len(np.unique(split.valid.user_index))
    assert holders > 3
    model = ConstantRating().fit(split.train.to_csr())
    everyone = validation_metrics(model, split)
    assert everyone["validation_users"] == everyone["baseline_validation_users"] == holders
    monkeypatch.setenv("RECSYS_METRIC_USERS", "3")
    get_settings.cache_clear()
    try:
        sampled, again = validation_metrics(model, split), validation_metrics(model, split)
    finally:
        monkeypatch.delenv("RECSYS_METRIC_USERS")
        get_settings.cache_clear()
    assert sampled["validation_users"] == sampled["baseline_validation_users"] == 3
    assert sampled == again  # seeded: the same users each time
    assert sampled["rmse"] == everyone["rmse"]
