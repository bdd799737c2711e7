"""`recsys score --engine ray` on a two-node Ray cluster writes what the local run writes: the same
Parquet file, byte for byte, and the same database rows, for trained, folded-in, new and
history-less users, with genre filters; and without --address it starts its own Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert, select

from recsys.data.interactions import IdMap
from recsys.db import get_engine, upgrade
from recsys.db.engine import session_scope
from recsys.db.models import Interaction, Item, Recommendation, User
from recsys.index import build_for_version
from recsys.models.ials import ImplicitALS
from recsys.registry.registry import ModelRegistry
from recsys.settings import Settings
from tests.conftest import REPO_ROOT

N_USERS, N_ITEMS, FACTORS = 220, 60, 8
TRAINED_USERS = 180  # users from 180 on are new to the version: folded in from their history
WATERMARK = 1170  # users 171 .. 179 have interactions newer than the version: folded in too
GENRES = ("Action", "Drama", "Horror", "Comedy")
BLOCK_SIZE = 16  # 14 blocks: each worker scores several


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A SQLite database with users, items with genres and interactions, and a promoted iALS
    version with fixed random vectors and its index."""
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'recsys.db'}")
    engine = get_engine(settings.database_url)
    upgrade(engine)
    rng = np.random.default_rng(5)
    with session_scope(engine) as session:
        session.execute(
            insert(Item),
            [
                {"external_id": f"i{i}", "title": f"Item {i}", "attributes": {"genres": [GENRES[i % 4]]}}
                for i in range(N_ITEMS)
            ],
        )
        session.execute(insert(User), [{"external_id": f"u{u}", "attributes": {}} for u in range(N_USERS)])
        rows = []
        for user in range(N_USERS - 5):  # the last five users have no history: popular items
            for item in rng.choice(N_ITEMS, size=int(rng.integers(3, 15)), replace=False):
                rows.append(
                    {
                        "user_id": user + 1,
                        "item_id": int(item) + 1,
                        "kind": "click",
                        "value": 1.0,
                        "ts": 1000 + user,
                    }
                )
        session.execute(insert(Interaction), rows)
    model = ImplicitALS(factors=FACTORS)
    model.item_factors = rng.normal(size=(N_ITEMS, FACTORS)).astype(np.float32)
    model.user_factors = rng.normal(size=(TRAINED_USERS, FACTORS)).astype(np.float32)
    users = IdMap(np.array([f"u{u}" for u in range(TRAINED_USERS)], dtype=object))
    items = IdMap(np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object))
    registry = ModelRegistry(engine, settings.artifacts)
    info = registry.register(model, users, items, metrics={}, watermark=WATERMARK, data_fingerprint="test")
    build_for_version(registry, info.version, settings)
    registry.promote(info.version, force=True)
    return settings


def recsys_score(settings: Settings, *options: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """`recsys score` as a user runs it: a separate process."""
    environment = {
        **os.environ,
        "RECSYS_DATABASE_URL": settings.database_url,
        "RECSYS_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": str(REPO_ROOT),
        **(env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "recsys",
        "score",
        "--k=7",
        f"--block-size={BLOCK_SIZE}",
        "--json",
        *options,
    ]
    done = subprocess.run(
        command, env=environment, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout)
    return report


def database_rows(settings: Settings) -> list[tuple[str, str, int, str, float]]:
    with session_scope(get_engine(settings.database_url)) as session:
        found = session.execute(
            select(
                Recommendation.version,
                Recommendation.user_id,
                Recommendation.rank,
                Recommendation.item_id,
                Recommendation.score,
            ).order_by(Recommendation.user_id, Recommendation.rank)
        )
        return [tuple(row) for row in found]  # type: ignore[misc]


def test_ray_parquet_is_the_local_file_byte_for_byte(
    settings: Settings, ray_address: str, tmp_path: Path
) -> None:
    for filters in ((), ("--include-genre=Action", "--include-genre=Drama", "--exclude-genre=Horror")):
        local, distributed = tmp_path / "local.parquet", tmp_path / "ray.parquet"
        local_report = recsys_score(settings, f"--out={local}", *filters)
        ray_report = recsys_score(
            settings,
            f"--out={distributed}",
            "--engine=ray",
            f"--address={ray_address}",
            "--workers=2",
            *filters,
        )
        assert (ray_report["engine"], local_report["engine"]) == ("ray", "local")
        assert ray_report["rows"] == local_report["rows"] > 0
        assert local.read_bytes() == distributed.read_bytes()
        frame = pd.read_parquet(distributed)
        # Every kind of user is there: trained, folded in (newer feedback or new), no history.
        assert {"u0", "u175", "u200", "u219"} <= set(frame["user_id"])
        assert frame["user_id"].nunique() == N_USERS
        assert not list(tmp_path.glob(".ray.parquet.parts"))  # parts combined and removed


def test_ray_database_rows_equal_the_local_ones_with_a_ray_started_here(
    settings: Settings, local_ray_env: None
) -> None:
    recsys_score(settings, "--out=database")
    local = database_rows(settings)
    assert len(local) == (N_USERS) * 7
    report = recsys_score(settings, "--out=database", "--engine=ray")  # no --address: a Ray of its own
    assert report["engine"] == "ray"
    assert database_rows(settings) == local


def test_address_without_the_ray_engine_is_refused(settings: Settings) -> None:
    command = [sys.executable, "-m", "recsys", "score", "--address=auto", "--out=database"]
    environment = {**os.environ, "RECSYS_DATABASE_URL": settings.database_url, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        command, env=environment, cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "--address and --workers need --engine ray" in done.stderr
