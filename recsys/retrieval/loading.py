"""A registered version's retriever from its seen-items snapshot and the database: what the
service and ``recsys score`` load."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from recsys.data.interactions import IdMap
from recsys.retrieval.filters import Catalogue
from recsys.retrieval.retriever import DEFAULT_CACHE_SIZE, Retriever, ValueRule, VectorModel

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from recsys.index.base import ItemIndex
    from recsys.retrieval.snapshot import SeenSnapshot

logger = logging.getLogger(__name__)


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


def history_rule(loaded: LoadedVersion) -> ValueRule | None:
    """How a version turns history values into what it folds in: the value rule of the recipe it
    was trained with (None: fold in the stored values)."""
    from recsys.data.recipe import recorded_recipe

    recipe = recorded_recipe(loaded.path)
    return None if recipe is None or recipe.values == "raw" else recipe.apply_values


def load_retriever(
    engine: Engine,
    loaded: LoadedVersion,
    *,
    with_catalogue: bool = True,
    cache_size: int = DEFAULT_CACHE_SIZE,
    fresh: bool = False,
) -> Retriever:
    """The retriever of ``loaded``: the version's saved index (an exact one when it has none), its
    seen-items snapshot (:func:`seen_snapshot`) with the erasures recorded since applied, users
    with interactions newer than its watermark folded in, and the item catalogue for genre
    filters.

    Interactions stored after the snapshot are not in it: the retriever's overlay starts at the
    snapshot's last interaction id, so the service's first feedback sync reads them. ``fresh``
    reads the whole log from the database instead (batch scoring ranks every user of the log as
    it is now, and has no overlay)."""
    from recsys.db.erasure import erasures_since

    snapshot = seen_snapshot(engine, loaded, fresh=fresh)
    erased = [
        (target, external_id)
        for _, target, external_id in erasures_since(engine, snapshot.marks.deletion_id)
        if target in ("user", "item") and external_id is not None
    ]
    items = loaded.items
    return Retriever.from_matrix(
        loaded.model,
        snapshot.users,
        items,
        snapshot.seen,
        fold=snapshot.fold,
        index=version_index(loaded),
        catalogue=_catalogue(engine, items) if with_catalogue else None,
        snapshot_id=snapshot.marks.interaction_id,
        cache_size=cache_size,
        history_rule=history_rule(loaded),
        erased_users=[external_id for target, external_id in erased if target == "user"],
        erased_items=[external_id for target, external_id in erased if target == "item"],
    )


def _catalogue(engine: Engine, items: IdMap) -> Catalogue:
    from recsys.data.catalog import item_columns

    columns = item_columns(engine, items)
    return Catalogue.from_columns(len(items), columns.titles, columns.genres)


def seen_snapshot(engine: Engine, loaded: LoadedVersion, *, fresh: bool = False) -> SeenSnapshot:
    """The version's seen-items snapshot, memory-mapped from its ``seen/`` files.

    Read from the database instead (the whole log, as the version would have been given at
    registration, one log line saying why) when ``fresh``, when the version was registered
    before snapshots existed, or when interactions were removed one by one since the snapshot
    (``recsys delete --interaction``, the cleanup of invalid rows): the deletions table does not
    say which pairs those were, so the snapshot no longer tells what each user has seen.
    Erasures of whole users and items are applied to a snapshot by :func:`load_retriever`.
    """
    from recsys.db.erasure import erasures_since
    from recsys.retrieval.snapshot import has_snapshot, load_snapshot, snapshot_from_database

    name = loaded.path.name
    watermark = loaded.info.watermark
    if fresh:
        return snapshot_from_database(engine, loaded.users, loaded.items, watermark)
    if not has_snapshot(loaded.path):
        logger.warning(
            "version %s has no seen-items snapshot (registered before recsys wrote them): reading the "
            "whole interaction log from the database, which takes long on a large log; a version "
            "trained now has one",
            name,
        )
        return snapshot_from_database(engine, loaded.users, loaded.items, watermark)
    snapshot = load_snapshot(loaded.path, loaded.users, loaded.items)
    removed = [
        target
        for _, target, _ in erasures_since(engine, snapshot.marks.deletion_id)
        if target not in ("user", "item")
    ]
    if removed:
        logger.warning(
            "version %s: %d removal(s) of single interactions since its seen-items snapshot; reading "
            "the whole interaction log from the database instead, until a version trained after them",
            name,
            len(removed),
        )
        return snapshot_from_database(engine, loaded.users, loaded.items, watermark)
    logger.info(
        "version %s: seen items of %d users (%d entries, up to interaction %d) memory-mapped from %s",
        name,
        snapshot.seen.shape[0],
        snapshot.seen.nnz,
        snapshot.marks.interaction_id,
        loaded.path / "seen",
    )
    return snapshot
