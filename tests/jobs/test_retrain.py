"""The retraining pipeline: first run, nothing new, warm start on new data, guards and failures."""

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
    return Settings(data_dir=tmp_path / "data", database_url=sqlite_url)


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
    first = run_pipeline(sqlite_engine, settings, model="ials")
    _load(sqlite_engine, newer, "newer")
    # Popularity as a candidate recipe is backtested against production's iALS recipe and loses.
    result = run_pipeline(sqlite_engine, settings, model="popularity")
    assert result.metrics["candidate"] == pytest.approx(result.metrics["popularity"])
    assert result.metrics["production"] > result.metrics["candidate"] + settings.promotion_tolerance
    assert result.outcome == "not-promoted"
    assert result.production_after == first.candidate


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
