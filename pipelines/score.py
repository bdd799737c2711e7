"""Batch scoring job: every user's top k for one model version, to Parquet or the database."""

from __future__ import annotations

import time
from collections.abc import Sequence
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
    include_genres: Sequence[str] = (),
    exclude_genres: Sequence[str] = (),
    progress: bool = False,
) -> ScoreReport:
    """Score every user of the database with ``version`` (default: production), seen items excluded.

    ``out`` is ``"database"`` (the ``recommendations`` table) or a path ending in ``.parquet``.
    Lists come from the version's retriever, the object the service answers with, so they are
    the lists the service gives (folded-in users and the popular fallback included).
    """
    from recsys.errors import ConfigError
    from recsys.registry.registry import ModelRegistry
    from recsys.retrieval import RankOptions
    from recsys.retrieval.loading import load_retriever
    from recsys.scoring import write_database, write_parquet

    if out != DATABASE_TARGET and not out.endswith(".parquet"):
        raise ConfigError(f"--out must be 'database' or a path ending in .parquet, got {out!r}")
    started = time.perf_counter()
    engine = get_engine(settings.database_url)
    ensure_current(engine)
    loaded = ModelRegistry(engine, settings.artifacts).load(version)
    retriever = load_retriever(engine, loaded, with_catalogue=bool(include_genres or exclude_genres))
    options = RankOptions(k=k, include_genres=tuple(include_genres), exclude_genres=tuple(exclude_genres))
    retriever.catalogue.filtered_out(
        options.include_genres, options.exclude_genres
    )  # unknown genre: fail now
    loaded_at = time.perf_counter()
    name = loaded.info.version
    if out == DATABASE_TARGET:
        rows = write_database(
            engine, retriever, k=k, version=name, block_size=block_size, options=options, progress=progress
        )
    else:
        rows = write_parquet(
            retriever, Path(out), k=k, version=name, block_size=block_size, options=options, progress=progress
        )
    return ScoreReport(
        version=loaded.info.version,
        target=out,
        users=len(retriever.users),
        rows=rows,
        k=k,
        load_seconds=round(loaded_at - started, 3),
        score_seconds=round(time.perf_counter() - loaded_at, 3),
    )
