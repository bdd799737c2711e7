"""A registered version's retriever from the database: what the service and ``recsys score`` load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from recsys.data.interactions import IdMap
from recsys.retrieval.retriever import DEFAULT_CACHE_SIZE, Retriever, VectorModel

if TYPE_CHECKING:
    import scipy.sparse as sp
    from sqlalchemy import Engine

    from recsys.index.base import ItemIndex


class VersionInfoLike(Protocol):
    @property
    def watermark(self) -> int | None: ...


class LoadedVersion(Protocol):
    """What is read here of ``recsys.registry``'s loaded version (a protocol, so that retrieval
    stays below the registry, which imports the models)."""

    @property
    def model(self) -> VectorModel: ...
    @property
    def users(self) -> IdMap: ...
    @property
    def items(self) -> IdMap: ...
    @property
    def path(self) -> Path: ...
    @property
    def info(self) -> VersionInfoLike: ...


def version_index(loaded: LoadedVersion) -> ItemIndex | None:
    """The index saved with the version (``index/``), or None when it has none."""
    from recsys.index import INDEX_DIR, load_index

    path = loaded.path / INDEX_DIR
    return load_index(path) if path.is_dir() else None


def history_rule(loaded: LoadedVersion) -> Callable[[sp.csr_matrix], sp.csr_matrix] | None:
    """How a version turns history values into what it folds in: the value rule of the recipe it
    was trained with (None: fold in the stored values)."""
    from recsys.data.recipe import recorded_recipe

    recipe = recorded_recipe(loaded.path)
    return None if recipe is None or recipe.values == "raw" else recipe.apply_matrix


def load_retriever(
    engine: Engine,
    loaded: LoadedVersion,
    *,
    with_catalogue: bool = True,
    snapshot_id: int = 0,
    cache_size: int = DEFAULT_CACHE_SIZE,
) -> Retriever:
    """The retriever of ``loaded`` over the database's current interactions: the version's saved
    index (an exact one when it has none), users with interactions newer than its watermark
    folded in, and the item catalogue for genre filters."""
    from recsys.data.catalog import item_catalog
    from recsys.data.matrix import build_interactions

    return Retriever.build(
        loaded.model,
        loaded.users,
        loaded.items,
        build_interactions(engine),
        index=version_index(loaded),
        watermark=loaded.info.watermark,
        catalogue=item_catalog(engine, loaded.items) if with_catalogue else None,
        snapshot_id=snapshot_id,
        cache_size=cache_size,
        history_rule=history_rule(loaded),
    )
