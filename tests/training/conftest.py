"""Fixtures of the training tests: a small database with planted structure, settings on tmp dirs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, insert, select

from recsys.db.models import Interaction, Item, User
from recsys.settings import Settings

GENRES = ["Action", "Comedy", "Drama"]

Seeder = Callable[..., None]


def seed_planted(
    engine: Engine,
    *,
    n_users: int = 60,
    n_items: int = 36,
    per_user: int = 9,
    seed: int = 0,
    user_prefix: str = "u",
    item_prefix: str = "i",
    start_ts: int = 1_000_000,
) -> None:
    """Users in group g interact with items of block g (three groups), plus one popular item.

    Group structure is what a factor model learns and popularity cannot: every user's held-out
    items sit in their own block.
    """
    rng = np.random.default_rng(seed)
    with engine.begin() as connection:
        existing_users = set(connection.scalars(select(User.external_id)))
        existing_items = set(connection.scalars(select(Item.external_id)))
        new_users = [f"{user_prefix}{u}" for u in range(n_users) if f"{user_prefix}{u}" not in existing_users]
        new_items = [f"{item_prefix}{i}" for i in range(n_items) if f"{item_prefix}{i}" not in existing_items]
        if new_users:
            connection.execute(insert(User), [{"external_id": e, "attributes": {}} for e in new_users])
        if new_items:
            connection.execute(
                insert(Item),
                [
                    {
                        "external_id": e,
                        "title": f"Movie {e}",
                        "attributes": {"genres": [GENRES[int(e[len(item_prefix) :]) % 3]]},
                    }
                    for e in new_items
                ],
            )
        user_ids = dict(connection.execute(select(User.external_id, User.id)).all())
        item_ids = dict(connection.execute(select(Item.external_id, Item.id)).all())
        block = (n_items - 1) // 3  # item 0, the popular one, belongs to no block
        rows = []
        for u in range(n_users):
            first = 1 + (u % 3) * block
            chosen = rng.choice(np.arange(first, first + block), size=per_user - 1, replace=False)
            for offset, i in enumerate([0, *chosen.tolist()]):  # item 0 is the popular one
                rows.append(
                    {
                        "user_id": user_ids[f"{user_prefix}{u}"],
                        "item_id": item_ids[f"{item_prefix}{i}"],
                        "kind": "rating",
                        "value": float(rng.integers(3, 6)),
                        "ts": start_ts + u * 100 + offset,
                    }
                )
        connection.execute(insert(Interaction), rows)


@pytest.fixture
def seeder() -> Seeder:
    return seed_planted


@pytest.fixture
def training_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=sqlite_url, artifact_dir=tmp_path / "artifacts")
