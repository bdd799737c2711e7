"""Batch scoring job: every user's top k for one model version, to Parquet or the database."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.db import ensure_current, get_engine
from recsys.settings import Settings

if TYPE_CHECKING:
    from recsys.retrieval import Retriever
    from recsys.runtime.cluster import RayEngine

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
    engine: str = "local"


@dataclass(frozen=True)
class VersionRetriever:
    """Opens one version's retriever over the database: the driver calls it, and so does each Ray
    worker (it is pickled to them), so every process ranks with the same object, loaded the same
    way. The URL and the artifact folder must be reachable from every worker."""

    database_url: str
    artifact_dir: Path
    version: str | None
    with_catalogue: bool

    def open(self) -> tuple[Retriever, str]:
        """The retriever and the version's name (``version`` None: production)."""
        from recsys.registry.registry import ModelRegistry
        from recsys.retrieval.loading import load_retriever

        engine = get_engine(self.database_url)
        loaded = ModelRegistry(engine, self.artifact_dir).load(self.version)
        # The whole log as it is now: every user is ranked with all they have seen (no overlay).
        retriever = load_retriever(engine, loaded, with_catalogue=self.with_catalogue, fresh=True)
        return retriever, loaded.info.version

    def __call__(self) -> Retriever:
        return self.open()[0]


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
    engine: RayEngine | None = None,
) -> ScoreReport:
    """Score every user of the database with ``version`` (default: production), seen items excluded.

    ``out`` is ``"database"`` (the ``recommendations`` table) or a path ending in ``.parquet``.
    Lists come from the version's retriever, the object the service answers with, so they are
    the lists the service gives (folded-in users and the popular fallback included). With a Ray
    ``engine`` the blocks of users are shared among Ray workers that each open the same retriever
    (:mod:`recsys.ray_scoring`); the output is the one the local run writes.
    """
    from recsys.errors import ConfigError
    from recsys.retrieval import RankOptions
    from recsys.scoring import write_database, write_parquet

    if out != DATABASE_TARGET and not out.endswith(".parquet"):
        raise ConfigError(f"--out must be 'database' or a path ending in .parquet, got {out!r}")
    started = time.perf_counter()
    database = get_engine(settings.database_url)
    ensure_current(database)
    source = VersionRetriever(
        settings.database_url,
        settings.artifacts,
        version,
        with_catalogue=bool(include_genres or exclude_genres),
    )
    retriever, name = source.open()
    # Workers open the version the driver resolved, even if production changes meanwhile.
    source = replace(source, version=name)
    options = RankOptions(k=k, include_genres=tuple(include_genres), exclude_genres=tuple(exclude_genres))
    retriever.catalogue.filtered_out(
        options.include_genres, options.exclude_genres
    )  # unknown genre: fail now
    loaded_at = time.perf_counter()
    with contextlib.ExitStack() as stack:
        scorer = None
        if engine is not None:
            from recsys.ray_scoring import RayBlockScorer
            from recsys.runtime.cluster import ray_session

            ray = stack.enter_context(ray_session(engine))
            scorer = RayBlockScorer(ray, engine, source, len(retriever.users))
        if out == DATABASE_TARGET:
            rows = write_database(
                database, retriever, k=k, version=name, block_size=block_size, options=options,
                progress=progress, scorer=scorer,
            )  # fmt: skip
        else:
            rows = write_parquet(
                retriever, Path(out), k=k, version=name, block_size=block_size, options=options,
                progress=progress, scorer=scorer,
            )  # fmt: skip
    return ScoreReport(
        version=name,
        target=out,
        users=len(retriever.users),
        rows=rows,
        k=k,
        load_seconds=round(loaded_at - started, 3),
        score_seconds=round(time.perf_counter() - loaded_at, 3),
        engine="local" if engine is None else "ray",
    )
