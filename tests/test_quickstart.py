"""`recsys quickstart`: the main job, end to end on the embedded synthetic data."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from recsys.cli import app
from recsys.db import get_engine
from recsys.ingest import database_stats
from recsys.registry.registry import ModelRegistry
from recsys.settings import get_settings


def test_quickstart_loads_trains_indexes_and_recommends(settings_env: Path) -> None:
    result = CliRunner().invoke(app, ["quickstart", "--users", "2", "--k", "3"])
    assert result.exit_code == 0, result.output
    assert "100,000 loaded" in result.output
    assert "Synthetic item" in result.output  # titles from the synthetic catalogue
    assert "recsys serve" in result.output
    settings = get_settings()
    engine = get_engine(settings.database_url)
    assert database_stats(engine)["interactions"] == 100_000
    production = ModelRegistry(engine, settings.artifacts).production()
    assert production is not None and production.model == settings.default_model
    assert (production.path / "index").is_dir()
    # The model learned the planted structure: clearly above the popularity baseline.
    assert production.metrics["ndcg@10"] > production.metrics["baseline_ndcg@10"] + 0.03
    # Three recommendation rows per shown user, each user listed.
    assert result.output.count("│ u0 ") == 3 and result.output.count("│ u1 ") == 3

    again = CliRunner().invoke(app, ["quickstart", "--users", "1"])
    assert again.exit_code == 0, again.output
    assert "0 loaded, 100,000 already there" in again.output
    assert database_stats(engine)["interactions"] == 100_000
