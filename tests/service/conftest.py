"""A small catalogue in the database, a registered popularity version, and the app on top."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert

from recsys.data.matrix import build_interactions
from recsys.db.engine import session_scope
from recsys.db.models import Interaction, Item, User
from recsys.index import build_for_version
from recsys.models.popularity import Popularity
from recsys.registry.registry import ModelRegistry, VersionInfo
from recsys.settings import Settings
from service.app import create_app

N_USERS, N_ITEMS = 30, 20
GENRES = ("Action", "Drama", "Horror")
API_KEY = "test-key"


def item_genres(i: int) -> list[str]:
    return [GENRES[i % 3]] + (["Comedy"] if i % 4 == 0 else [])


def seen_items(user: int) -> list[int]:
    """User u saw items u % 7 .. u % 7 + 3 and, for even users, item 10 too."""
    items = [(user % 7 + j) % N_ITEMS for j in range(4)]
    return items + ([10] if user % 2 == 0 else [])


@pytest.fixture
def catalogue_engine(engine: Engine) -> Engine:
    with session_scope(engine) as session:
        session.execute(
            insert(Item),
            [
                {"external_id": f"i{i}", "title": f"Movie {i}", "attributes": {"genres": item_genres(i)}}
                for i in range(N_ITEMS)
            ],
        )
        session.execute(insert(User), [{"external_id": f"u{u}", "attributes": {}} for u in range(N_USERS)])
        session.execute(
            insert(Interaction),
            [
                {"user_id": u + 1, "item_id": i + 1, "kind": "rating", "value": 4.0, "ts": 1000 + u}
                for u in range(N_USERS)
                for i in seen_items(u)
            ],
        )
    return engine


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, api_key=API_KEY, reload_poll_seconds=0
    )


@pytest.fixture
def registry(catalogue_engine: Engine, settings: Settings) -> ModelRegistry:
    return ModelRegistry(catalogue_engine, settings.artifacts)


def register_popularity(registry: ModelRegistry, settings: Settings, promote: bool = True) -> VersionInfo:
    data = build_interactions(registry.engine)
    model = Popularity().fit(data.to_csr())
    info = registry.register(
        model, data.users, data.items, metrics={}, watermark=None, data_fingerprint="test"
    )
    build_for_version(registry, info.version, settings)
    if promote:
        registry.promote(info.version, force=True)
    return info


@pytest.fixture
def version(registry: ModelRegistry, settings: Settings) -> VersionInfo:
    return register_popularity(registry, settings)


@pytest.fixture
def client(settings: Settings, version: VersionInfo) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def popularity_counts() -> np.ndarray:
    counts = np.zeros(N_ITEMS)
    for user in range(N_USERS):
        counts[seen_items(user)] += 1
    return counts
