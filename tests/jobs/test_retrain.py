"""The retraining pipeline: first run, nothing new, warm start on new data, the tuning step when the
data changed a lot, guards and failures."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from pipelines import retrain
from pipelines.retrain import PipelineError, run_pipeline
from recsys.data.synthetic import generate_synthetic
from recsys.db.models import Recommendation
from recsys.errors import LockError
from recsys.ingest import CsvSpec, ingest_frame
from recsys.registry.registry import ModelRegistry
from recsys.settings import Settings
from recsys.training.locks import DatabaseLock

SPEC = CsvSpec(user_col="user_id", item_col="item_id", value_col="rating", timestamp_col="timestamp")


@pytest.fixture
def log() -> pd.DataFrame:
    return generate_synthetic(n_users=150, n_items=80, n_interactions=4000, seed=3)


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    # No tuning step unless a test asks for it (test_tuning_*): each trial is one more fit.
    return Settings(data_dir=tmp_path / "data", database_url=sqlite_url, pipeline_tune_trials=0)


def _load(engine: Engine, frame: pd.DataFrame, name: str) -> None:
    report = ingest_frame(engine, frame, spec=SPEC, source=name)
    assert report.rows_loaded == len(frame)


def _older_and_newer(log: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = log["timestamp"].quantile(0.9)
    return log[log["timestamp"] <= cut], log[log["timestamp"] > cut]


def test_first_run_promotes_then_nothing_new_is_up_to_date(
    sqlite_engine: Engine, settings: Settings, log: pd.DataFrame
) -> None:
    _load(sqlite_engine, log, "all")
    first = run_pipeline(sqlite_engine, settings, model="ials")
    assert first.outcome == "promoted"
    assert first.production_before is None
    registry = ModelRegistry(sqlite_engine, settings.artifacts)
    production = registry.production()
    assert production is not None and production.version == first.production_after == first.candidate
    assert first.metrics["candidate"] > first.metrics["popularity"]
    assert (production.path / "index").is_dir()
    # The backtest is recorded with the version it judged (models list and the dashboard show it).
    assert production.metrics["backtest_ndcg@10"] == first.metrics["candidate"]
    assert production.metrics["backtest_baseline_ndcg@10"] == first.metrics["popularity"]

    second = run_pipeline(sqlite_engine, settings)
    assert second.outcome == "up-to-date"
    assert second.candidate is None
    assert registry.production().version == production.version  # type: ignore[union-attr]


def test_new_data_warm_starts_and_promotes(
    sqlite_engine: Engine, settings: Settings, log: pd.DataFrame
) -> None:
    older, newer = _older_and_newer(log)
    _load(sqlite_engine, older, "older")
    first = run_pipeline(sqlite_engine, settings, model="ials")
    _load(sqlite_engine, newer, "newer")
    second = run_pipeline(sqlite_engine, settings)
    assert any(f"warm start from {first.candidate}" in line for line in second.steps), second.steps
    assert second.outcome == "promoted", second.metrics
    assert second.production_before == first.candidate
    assert second.production_after == second.candidate != first.candidate
    assert {"candidate", "production", "popularity"} <= set(second.metrics)


def test_worse_candidate_is_not_promoted(
    sqlite_engine: Engine, settings: Settings, log: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    older, newer = _older_and_newer(log)
    _load(sqlite_engine, older, "older")
    first = run_pipeline(sqlite_engine, settings, model="ials")
    _load(sqlite_engine, newer, "newer")
    monkeypatch.setattr(
        retrain, "_evaluate", lambda *a: {"candidate": 0.20, "production": 0.30, "popularity": 0.1}
    )
    result = run_pipeline(sqlite_engine, settings)
    assert result.outcome == "not-promoted"
    assert ModelRegistry(sqlite_engine, settings.artifacts).production().version == first.candidate  # type: ignore[union-attr]


def test_failed_step_is_named_and_leaves_production_untouched(
    sqlite_engine: Engine, settings: Settings, log: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    older, newer = _older_and_newer(log)
    _load(sqlite_engine, older, "older")
    first = run_pipeline(sqlite_engine, settings, model="ials")
    _load(sqlite_engine, newer, "newer")

    def broken_train(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(retrain, "train", broken_train)
    with pytest.raises(PipelineError, match="step 'train': disk full") as failure:
        run_pipeline(sqlite_engine, settings)
    assert failure.value.step == "train"
    registry = ModelRegistry(sqlite_engine, settings.artifacts)
    assert registry.production().version == first.candidate  # type: ignore[union-attr]
    assert len(registry.list()) == 1
    # The lock was released: the next run can start.
    monkeypatch.undo()
    assert run_pipeline(sqlite_engine, settings).outcome == "promoted"


def test_concurrent_run_cannot_start(sqlite_engine: Engine, settings: Settings, log: pd.DataFrame) -> None:
    _load(sqlite_engine, log, "all")
    with DatabaseLock(sqlite_engine, retrain.LOCK_NAME, stale_after=3600):
        with pytest.raises(PipelineError, match="step 'lock'") as failure:
            run_pipeline(sqlite_engine, settings, model="popularity")
        assert isinstance(failure.value.__cause__, LockError)
    assert ModelRegistry(sqlite_engine, settings.artifacts).production() is None


def test_other_recipe_is_backtested_against_production(
    sqlite_engine: Engine, settings: Settings, log: pd.DataFrame
) -> None:
    older, newer = _older_and_newer(log)
    _load(sqlite_engine, older, "older")
    first = run_pipeline(sqlite_engine, settings, model="ease")
    _load(sqlite_engine, newer, "newer")
    # Popularity as a candidate recipe is backtested against production's EASE recipe and loses.
    result = run_pipeline(sqlite_engine, settings, model="popularity")
    assert result.metrics["candidate"] == pytest.approx(result.metrics["popularity"])
    assert result.metrics["production"] > result.metrics["candidate"] + settings.promotion_tolerance
    assert result.outcome == "not-promoted"
    assert result.production_after == first.candidate


def test_a_model_added_by_its_file_alone_runs_through_the_pipeline(
    sqlite_engine: Engine, settings: Settings, log: pd.DataFrame
) -> None:
    """EASE is named nowhere in the pipeline: its class says it is closed-form (no warm start)."""
    older, newer = _older_and_newer(log)
    _load(sqlite_engine, older, "older")
    first = run_pipeline(sqlite_engine, settings, model="ease")
    assert first.outcome == "promoted" and first.metrics["candidate"] > first.metrics["popularity"]
    _load(sqlite_engine, newer, "newer")
    second = run_pipeline(sqlite_engine, settings)  # production's model, a little new data
    assert second.outcome == "promoted" and second.model == "ease"
    assert "train: full retrain of ease" in second.steps
    assert "recipe: kinds=all, combine=last, values=binary" in second.steps
    registry = ModelRegistry(sqlite_engine, settings.artifacts)
    production = registry.load(second.production_after or "")
    assert production.model.name == "ease" and production.model.user_factors is None
    assert (production.path / "index").is_dir()


def test_the_backtest_runs_the_fit_that_is_promoted(
    sqlite_engine: Engine, settings: Settings, log: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backtest and registered candidate go through the same fitting function, same recipe."""
    from recsys.training import fitting

    calls: list[tuple[str, dict, str, int]] = []
    real = fitting.fit_version

    def recording(name: str, params: dict, data: object, **kwargs: object) -> object:
        recipe = kwargs.get("recipe")
        calls.append((name, dict(params), recipe.describe() if recipe else "", len(data)))  # type: ignore[arg-type, attr-defined]
        return real(name, params, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(retrain, "fit_version", recording)
    monkeypatch.setattr("recsys.training.trainer.fit_version", recording)
    _load(sqlite_engine, log, "all")
    result = run_pipeline(sqlite_engine, settings, model="ials", kinds=["rating"], combine="max")
    assert result.outcome == "promoted"
    (backtest, registered) = calls
    assert backtest[:3] == registered[:3] == ("ials", {}, "kinds=rating, combine=max, values=binary")
    assert backtest[3] < registered[3] == len(log)  # the older part, then everything


def test_promotion_asks_running_services_to_reload(
    sqlite_engine: Engine, log: pd.DataFrame, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=sqlite_url,
        api_key="secret",
        service_urls=["http://127.0.0.1:9/", "http://127.0.0.1:10"],
        pipeline_score_k=5,
    )
    calls: list[tuple[str, dict[str, str]]] = []

    def fake_post(url: str, headers: dict[str, str], timeout: float) -> httpx.Response:
        calls.append((url, headers))
        if url.startswith("http://127.0.0.1:10"):
            raise httpx.ConnectError("refused")  # one service down: reported, not fatal
        return httpx.Response(200)

    monkeypatch.setattr(retrain.httpx, "post", fake_post)
    _load(sqlite_engine, log, "all")
    result = run_pipeline(sqlite_engine, settings, model="popularity")
    assert result.outcome == "promoted"
    assert [url for url, _ in calls] == [
        "http://127.0.0.1:9/admin/reload",
        "http://127.0.0.1:10/admin/reload",
    ]
    assert all(headers == {"X-API-Key": "secret"} for _, headers in calls)
    assert any("answered 200" in line for line in result.steps)
    assert any("unreachable" in line for line in result.steps)
    # Scoring was configured: every user's top 5 unseen items are stored for the promoted version.
    unseen = log["item_id"].nunique() - log.groupby("user_id")["item_id"].nunique()
    expected = int(np.minimum(unseen, 5).sum())
    assert f"score: wrote {expected} recommendations for {result.candidate}" in result.steps
    with sqlite_engine.connect() as connection:
        stored = connection.scalar(select(func.count()).where(Recommendation.version == result.candidate))
    assert stored == expected


def test_events_stamped_in_the_future_are_reported_and_skipped(
    sqlite_engine: Engine, settings: Settings, log: pd.DataFrame
) -> None:
    import time

    from sqlalchemy import insert

    from recsys.db.models import Interaction

    older, newer = _older_and_newer(log)
    _load(sqlite_engine, older, "older")
    with sqlite_engine.begin() as connection:  # stored by another door that did not check the time
        user_id, item_id = connection.execute(select(Interaction.user_id, Interaction.item_id).limit(1)).one()
        connection.execute(
            insert(Interaction).values(
                user_id=user_id, item_id=item_id, kind="click", value=1.0, ts=99_999_999_999
            )
        )
    first = run_pipeline(sqlite_engine, settings, model="popularity")
    assert first.outcome == "promoted"
    assert any(
        "skipping 1 interaction(s) stamped in the future (the newest at 5138-" in s for s in first.steps
    )
    production = ModelRegistry(sqlite_engine, settings.artifacts).production()
    assert production is not None and production.watermark is not None
    assert production.watermark <= time.time()  # never past now: later data still counts as new
    _load(sqlite_engine, newer, "newer")
    second = run_pipeline(sqlite_engine, settings)
    assert second.outcome == "promoted"
    assert (
        f"inspect: {len(newer)} of {len(log)} interactions are newer than the production watermark"
        in second.steps
    )


def test_tuning_runs_on_a_first_run_and_the_backtest_judges_it(
    sqlite_engine: Engine, settings: Settings, log: pd.DataFrame
) -> None:
    tuning = settings.model_copy(update={"pipeline_tune_trials": 4})
    _load(sqlite_engine, log, "all")
    result = run_pipeline(sqlite_engine, tuning, model="ials")
    assert result.outcome == "promoted"
    assert any(line.startswith("tune: no production version yet") for line in result.steps), result.steps
    figures = result.tuning
    assert figures["trials"] == 4 and figures["seconds"] > 0
    assert len(figures["each_trial"]) == 4
    assert figures["validation_after"] == max(trial["validation"] for trial in figures["each_trial"])
    # The parameters in use are the first trial: the best is never below them on validation.
    assert figures["validation_after"] >= figures["validation_before"]
    production = ModelRegistry(sqlite_engine, settings.artifacts).production()
    assert production is not None
    if figures["tuned"]:  # the search moved: both backtested, the better kept
        assert {"backtest_before", "backtest_after", "kept"} <= set(figures)
        assert figures["kept"] == (figures["backtest_after"] >= figures["backtest_before"])
        assert result.metrics["candidate"] == max(figures["backtest_after"], figures["backtest_before"])
        kept = figures["tuned"] if figures["kept"] else {}
        assert all(production.params[name] == value for name, value in kept.items())
    else:  # the defaults won on validation: nothing changes, one backtest
        assert "untuned" not in result.metrics


@pytest.mark.parametrize("ratio", [0.5, 0.05])
def test_tuning_runs_when_the_new_data_exceeds_the_change_ratio(
    sqlite_engine: Engine, settings: Settings, log: pd.DataFrame, ratio: float
) -> None:
    tuning = settings.model_copy(update={"pipeline_tune_trials": 2, "retrain_full_change_ratio": ratio})
    older, newer = _older_and_newer(log)
    _load(sqlite_engine, older, "older")
    first = run_pipeline(sqlite_engine, tuning, model="ials", tune=False)  # tuning turned off
    assert first.outcome == "promoted" and first.tuning == {}
    _load(sqlite_engine, newer, "newer")  # about 11% new
    second = run_pipeline(sqlite_engine, tuning)
    if ratio == 0.5:  # a little new data: a warm start, no tuning
        assert any("warm start" in line for line in second.steps), second.steps
        assert not any(line.startswith("tune:") for line in second.steps) and second.tuning == {}
    else:  # more than the ratio: the run tunes, then retrains from scratch
        assert any(line.startswith("tune: the data changed a lot") for line in second.steps), second.steps
        assert "train: full retrain of ials" in second.steps
        assert second.tuning["trials"] == 2
