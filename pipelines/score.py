"""Batch scoring job: every user's top k for one model version, to Parquet or the database."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from recsys.db import ensure_current, get_engine
from recsys.settings import Settings

DATABASE_TARGET = "database"


@dataclass(frozen=True)
class ScoreReport:
    version: str
    target: str
    users: int
    rows: int
    k: int
    load_seconds: float
    score_seconds: float


def score_version(
    settings: Settings,
    *,
    version: str | None = None,
    k: int = 10,
    out: str = DATABASE_TARGET,
    block_size: int = 4096,
    progress: bool = False,
) -> ScoreReport:
    """Score every user of the database with ``version`` (default: production), seen items excluded.

    ``out`` is ``"database"`` (the ``recommendations`` table) or a path ending in ``.parquet``.
    """
    from recsys.data.matrix import recipe_interactions
    from recsys.errors import ConfigError
    from recsys.registry.registry import ModelRegistry
    from recsys.scoring import align_to_model, write_database, write_parquet
    from recsys.training.trainer import version_recipe

    if out != DATABASE_TARGET and not out.endswith(".parquet"):
        raise ConfigError(f"--out must be 'database' or a path ending in .parquet, got {out!r}")
    started = time.perf_counter()
    engine = get_engine(settings.database_url)
    ensure_current(engine)
    loaded = ModelRegistry(engine, settings.artifacts).load(version)
    # Histories are read with the recipe the version was trained with (kinds, weights, combine).
    recipe = version_recipe(loaded.info) or loaded.model.recipe
    users, user_items = align_to_model(recipe_interactions(engine, recipe), loaded.users, loaded.items)
    user_items = recipe.apply_matrix(user_items)  # new users are folded in from what training saw
    loaded_at = time.perf_counter()
    name = loaded.info.version
    if out == DATABASE_TARGET:
        rows = write_database(
            engine, loaded.model, user_items, users, loaded.items,
            k=k, version=name, block_size=block_size, progress=progress,
        )  # fmt: skip
    else:
        rows = write_parquet(
            loaded.model, user_items, users, loaded.items, Path(out),
            k=k, version=name, block_size=block_size, progress=progress,
        )  # fmt: skip
    return ScoreReport(
        version=loaded.info.version,
        target=out,
        users=len(users),
        rows=rows,
        k=k,
        load_seconds=round(loaded_at - started, 3),
        score_seconds=round(time.perf_counter() - loaded_at, 3),
    )
