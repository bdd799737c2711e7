"""Shared fixtures: databases (SQLite and PostgreSQL), settings, MovieLens paths."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from recsys.db import get_engine, upgrade
from recsys.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECSYS_TEST_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
POSTGRES_URL = os.environ.get("RECSYS_TEST_POSTGRES_URL", "")
# CI sets this so that a missing server fails the run instead of skipping the PostgreSQL tests.
REQUIRE_POSTGRES = os.environ.get("RECSYS_REQUIRE_POSTGRES") == "1"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'recsys.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("RECSYS_TEST_POSTGRES_URL is not set but RECSYS_REQUIRE_POSTGRES=1")
        pytest.skip("RECSYS_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    name = f"recsys_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    try:
        yield url
    finally:
        get_engine(url).dispose()
        get_engine.cache_clear()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def engine(database_url: str) -> Engine:
    """An engine on a database with the current schema."""
    engine = get_engine(database_url)
    upgrade(engine)
    return engine


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Engine:
    engine = get_engine(sqlite_url)
    upgrade(engine)
    return engine


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point RECSYS_DATA_DIR at a temporary folder (and reset cached settings around the test)."""
    data_dir = tmp_path / "recsys-data"
    monkeypatch.setenv("RECSYS_DATA_DIR", str(data_dir))
    monkeypatch.delenv("RECSYS_DATABASE_URL", raising=False)
    monkeypatch.delenv("RECSYS_ARTIFACT_DIR", raising=False)
    monkeypatch.delenv("RECSYS_API_KEY", raising=False)
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()


def _dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture
def ml100k_dir() -> Path:
    return _dataset("ml-100k")


@pytest.fixture
def ml_latest_small_dir() -> Path:
    return _dataset("ml-latest-small")
