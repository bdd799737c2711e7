"""What the service serves from memory: one model version, its index, the seen items and the catalogue.

A :class:`ServingState` is built completely (from the registry and the database) before it is
published by replacing one reference in :class:`StateHolder`; a request takes the reference
once and uses that state to the end, so a reload never shows a half-loaded model.

Feedback posted after the state was built lives in its :class:`Feedback` overlay, read from the
database by interaction id. The worker that stored an event syncs at once; other workers notice a
touched stamp file (one ``stat`` per request) and sync before answering.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp
from sqlalchemy import Engine, func, select

from recsys.data.interactions import IdMap, Interactions
from recsys.db.models import Interaction, Item, User
from recsys.errors import DataError, UnknownIdError
from recsys.index import INDEX_DIR, ExactIndex, ItemIndex, load_index
from recsys.models.base import Recommender
from recsys.scoring import align_to_model
from service.render import item_fragments

if TYPE_CHECKING:
    import pandas as pd

    from recsys.settings import Settings

logger = logging.getLogger("uvicorn.error")

Strategy = Literal["personalized", "popular", "folded-in"]


class UnknownGenreError(DataError):
    """A genre filter names a genre the catalogue does not have."""


@dataclass(frozen=True)
class Ranked:
    """A ranked list in item indices, with the strategy that produced it."""

    item_ids: np.ndarray
    scores: np.ndarray
    strategy: Strategy


class Feedback:
    """Interactions stored after the state's snapshot, per user: item index -> value (last wins)."""

    def __init__(self, last_id: int) -> None:
        self.last_id = last_id
        self._rows: dict[str, dict[int, float]] = {}
        self._lock = threading.Lock()

    def apply(self, last_id: int, users: Sequence[str], items: np.ndarray, values: np.ndarray) -> None:
        with self._lock:
            for user, item, value in zip(users, items.tolist(), values.tolist(), strict=True):
                self._rows.setdefault(user, {})[item] = value
            self.last_id = max(self.last_id, last_id)

    def row(self, user: str) -> dict[int, float] | None:
        with self._lock:
            found = self._rows.get(user)
            return dict(found) if found else None

    def drop_user(self, user: str) -> None:
        with self._lock:
            self._rows.pop(user, None)

    def drop_item(self, item: int) -> None:
        with self._lock:
            for row in self._rows.values():
                row.pop(item, None)


@dataclass(frozen=True)
class Catalogue:
    """Titles and genres aligned to the model's item indices, with a genre membership matrix."""

    titles: np.ndarray  # object: str or None
    genres: list[list[str]]
    genre_names: dict[str, int]
    genre_matrix: sp.csc_matrix  # items x genres, 1 where the item has the genre

    @classmethod
    def from_frame(cls, n_items: int, frame: pd.DataFrame | None) -> Catalogue:
        if frame is None or len(frame) == 0:
            empty = sp.csc_matrix((n_items, 0), dtype=np.float32)
            return cls(np.full(n_items, None, dtype=object), [[] for _ in range(n_items)], {}, empty)
        titles = frame["title"].astype(object).where(frame["title"].notna(), None).to_numpy()
        genres = [
            list(value) if isinstance(value, list | tuple | np.ndarray) else [] for value in frame["genres"]
        ]
        exploded = frame["genres"].explode().dropna()
        names = {name: code for code, name in enumerate(sorted(set(exploded.astype(str))))}
        rows = np.asarray(exploded.index, dtype=np.int64)
        cols = np.asarray([names[str(name)] for name in exploded], dtype=np.int64)
        matrix = sp.csc_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_items, len(names)), dtype=np.float32
        )
        return cls(titles, genres, names, matrix)

    def filtered_out(self, include: Sequence[str], exclude: Sequence[str]) -> np.ndarray:
        """Item indices the genre filters leave out (sorted)."""
        if not include and not exclude:
            return np.zeros(0, dtype=np.int64)
        n_items = self.genre_matrix.shape[0]
        keep = np.ones(n_items, dtype=bool)
        if include:
            keep &= np.asarray(self.genre_matrix[:, self._codes(include)].sum(axis=1)).ravel() > 0
        if exclude:
            keep &= np.asarray(self.genre_matrix[:, self._codes(exclude)].sum(axis=1)).ravel() == 0
        return np.flatnonzero(~keep)

    def _codes(self, names: Sequence[str]) -> list[int]:
        unknown = [name for name in names if name not in self.genre_names]
        if unknown:
            raise UnknownGenreError(
                f"unknown genre(s) {', '.join(map(repr, unknown))}; the catalogue has: "
                f"{', '.join(sorted(self.genre_names)) or 'no genres'}"
            )
        return [self.genre_names[name] for name in names]


@dataclass
class ServingState:
    """One model version ready to answer: vectors, index, seen items, catalogue, popularity."""

    version: str
    model_name: str
    model: Recommender
    index: ItemIndex
    similar_index: ItemIndex
    users: IdMap  # the model's users, then users only the database has
    items: IdMap  # the model's items
    seen: sp.csr_matrix  # users x items at the snapshot
    catalogue: Catalogue
    item_json: list[str]  # per item index, its JSON up to the score (service.render)
    popular_ids: np.ndarray  # item indices, most interacted first
    popular_counts: np.ndarray  # float32 interaction count per item index
    feedback: Feedback
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    # Erased since the snapshot: answered as unknown / never recommended (until the next version).
    erased_users: set[str] = field(default_factory=set)
    erased_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def forget_user(self, user_id: str) -> None:
        """Erasure: from now on the user is answered as an unknown one."""
        self.erased_users.add(user_id)
        self.feedback.drop_user(user_id)

    def forget_item(self, item_id: str) -> None:
        """Erasure: the item is never recommended again by this state."""
        index = self.items.index(item_id)
        if index is not None:
            self.erased_items = np.union1d(self.erased_items, [index]).astype(np.int64)
            self.feedback.drop_item(index)

    @classmethod
    def build(
        cls,
        version: str,
        model: Recommender,
        users: IdMap,
        items: IdMap,
        interactions: Interactions,
        *,
        index: ItemIndex | None = None,
        catalogue: pd.DataFrame | None = None,
        snapshot_id: int = 0,
    ) -> ServingState:
        """Assemble a state from a loaded version and a database snapshot."""
        started = time.perf_counter()
        item_vectors = model._require_items()
        all_users, seen = align_to_model(interactions, users, items)
        similarity = model.similarity_factors
        normalised = similarity / np.maximum(np.linalg.norm(similarity, axis=1, keepdims=True), 1e-12)
        counts = np.bincount(seen.indices, minlength=len(items)).astype(np.float32)
        aligned = Catalogue.from_frame(len(items), catalogue)
        return cls(
            version=version,
            model_name=model.name,
            model=model,
            index=index if index is not None else ExactIndex(item_vectors),
            similar_index=_flat_index(normalised),
            users=all_users,
            items=items,
            seen=seen,
            catalogue=aligned,
            item_json=item_fragments(items.external_ids, aligned.titles, aligned.genres),
            popular_ids=np.argsort(-counts, kind="stable"),
            popular_counts=counts,
            feedback=Feedback(snapshot_id),
            load_seconds=time.perf_counter() - started,
        )

    # --- answering ----------------------------------------------------------------------------

    def user_history(self, user_id: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """The user's interactions (snapshot plus feedback): sorted item columns, their values,
        and whether feedback changed them since the snapshot.

        Plain arrays, not a CSR row: building scipy matrices costs more than the search on the
        hot path, so one is built only when a fold-in needs it.
        """
        index = self.users.index(user_id) if user_id not in self.erased_users else None
        if index is None:
            columns, values = np.zeros(0, np.int32), np.zeros(0, np.float32)
        else:
            start, stop = self.seen.indptr[index], self.seen.indptr[index + 1]
            columns, values = self.seen.indices[start:stop], self.seen.data[start:stop]
        overlay = self.feedback.row(user_id)
        if not overlay:
            return columns, values, False
        new_columns = np.fromiter(overlay.keys(), dtype=np.int64, count=len(overlay))
        new_values = np.fromiter(overlay.values(), dtype=np.float32, count=len(overlay))
        keep = ~np.isin(columns, new_columns)
        merged = np.concatenate([columns[keep], new_columns])
        order = np.argsort(merged, kind="stable")
        return merged[order], np.concatenate([values[keep], new_values])[order], True

    def user_row(self, user_id: str) -> tuple[sp.csr_matrix, bool]:
        """The user's interactions as one CSR row, and whether feedback changed them."""
        columns, values, changed = self.user_history(user_id)
        return _row(columns, len(self.items), values), changed

    def recommend_user(
        self, user_id: str, k: int, exclude_seen: bool, include: Sequence[str], exclude: Sequence[str]
    ) -> Ranked:
        columns, values, changed = self.user_history(user_id)
        filtered = self.catalogue.filtered_out(include, exclude)
        index = self.users.index(user_id) if user_id not in self.erased_users else None
        trained = self.model.user_factors
        seen = columns if exclude_seen else None
        if not changed and index is not None and trained is not None and index < len(trained):
            return self._search(trained[index : index + 1], k, seen, filtered, "personalized")
        if len(columns):
            query = self.model.fold_in(_row(columns, len(self.items), values))
            return self._search(query, k, seen, filtered, "folded-in")
        return self.popular(k, filtered)

    def recommend_history(
        self,
        item_ids: Sequence[str],
        values: Sequence[float] | None,
        k: int,
        exclude_seen: bool,
        include: Sequence[str],
        exclude: Sequence[str],
    ) -> Ranked:
        indices = self.item_indices(item_ids)
        data = np.ones(len(indices), np.float32) if values is None else np.asarray(values, np.float32)
        row = sp.csr_matrix(
            (data, (np.zeros(len(indices), np.int64), indices)), shape=(1, len(self.items)), dtype=np.float32
        )
        row.sum_duplicates()
        filtered = self.catalogue.filtered_out(include, exclude)
        return self._search(
            self.model.fold_in(row), k, row.indices if exclude_seen else None, filtered, "folded-in"
        )

    def similar(self, item_id: str, k: int) -> Ranked:
        """Items with the most similar vectors by cosine, the item itself left out."""
        index = self.item_indices([item_id])
        vector = self.model.similarity_factors[index]
        vector = vector / np.maximum(np.linalg.norm(vector, axis=1, keepdims=True), 1e-12)
        ids, scores = self.similar_index.search_one(vector, k, index)
        return Ranked(ids, scores, "personalized")

    def popular(self, k: int, filtered: np.ndarray) -> Ranked:
        order = self.popular_ids
        if len(filtered) or len(self.erased_items):
            order = order[~np.isin(order, np.concatenate([filtered, self.erased_items]))]
        top = order[:k]
        return Ranked(top, self.popular_counts[top], "popular")

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        indices = self.items.indices(item_ids)
        if (indices < 0).any():
            unknown = [item for item, index in zip(item_ids, indices.tolist(), strict=True) if index < 0]
            raise UnknownIdError(
                f"unknown item id(s) {', '.join(map(repr, unknown))}: not in model version {self.version} "
                "(items added since it was trained become available after retraining)"
            )
        return indices

    def _search(
        self,
        query: np.ndarray,
        k: int,
        seen: np.ndarray | None,
        filtered: np.ndarray,
        strategy: Strategy,
    ) -> Ranked:
        parts = [part for part in (seen, filtered, self.erased_items) if part is not None and len(part)]
        exclude = None if not parts else parts[0] if len(parts) == 1 else np.concatenate(parts)
        ids, scores = self.index.search_one(query, k, exclude)
        return Ranked(ids, scores, strategy)


def _row(columns: np.ndarray, n_items: int, values: np.ndarray | None = None) -> sp.csr_matrix:
    """One CSR row with ``values`` (default ones) at the given (sorted, unique) columns."""
    indptr = np.array([0, len(columns)], dtype=np.int64)
    data = np.ones(len(columns), np.float32) if values is None else values
    return sp.csr_matrix((data, columns, indptr), shape=(1, n_items))


def _flat_index(vectors: np.ndarray) -> ItemIndex:
    from recsys.index.faiss_index import FaissIndex

    return FaissIndex.flat(vectors)


class StateHolder:
    """The one reference to the state being served, swapped whole by a reload."""

    def __init__(self) -> None:
        self.current: ServingState | None = None
        self.reload_lock = threading.Lock()
        self.stamp_seen: int = 0

    def swap(self, state: ServingState) -> ServingState | None:
        previous, self.current = self.current, state
        return previous


# --- loading from the registry and the database -----------------------------------------------


def load_state(engine: Engine, settings: Settings, version: str | None = None) -> ServingState | None:
    """Build the state of ``version`` (default: production); None when nothing is promoted yet.

    The feedback snapshot id is read before the interactions so that events stored during the
    load are read again by the first sync (applying one twice is harmless: last value wins).
    """
    from recsys.data.catalog import item_catalog
    from recsys.data.matrix import build_interactions
    from recsys.registry.registry import ModelRegistry

    started = time.perf_counter()
    registry = ModelRegistry(engine, settings.artifacts)
    if version is None and registry.production() is None:
        return None
    loaded = registry.load(version)
    index_path = loaded.path / INDEX_DIR
    index = load_index(index_path) if index_path.is_dir() else None
    snapshot_id = max_interaction_id(engine)
    state = ServingState.build(
        loaded.info.version,
        loaded.model,
        loaded.users,
        loaded.items,
        build_interactions(engine),
        index=index,
        catalogue=item_catalog(engine, loaded.items),
        snapshot_id=snapshot_id,
    )
    sync_feedback(engine, state)
    state.load_seconds = time.perf_counter() - started
    return state


def max_interaction_id(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.coalesce(func.max(Interaction.id), 0))) or 0)


def sync_feedback(engine: Engine, state: ServingState) -> int:
    """Read interactions stored after the state's last sync into its overlay; returns how many."""
    query = (
        select(Interaction.id, User.external_id, Item.external_id, Interaction.value)
        .join(User, User.id == Interaction.user_id)
        .join(Item, Item.id == Interaction.item_id)
        .where(Interaction.id > state.feedback.last_id)
        .order_by(Interaction.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    if not rows:
        return 0
    ids, users, items, values = zip(*rows, strict=True)
    item_index = state.items.indices(items)
    known = item_index >= 0
    state.feedback.apply(
        int(max(ids)),
        [user for user, ok in zip(users, known.tolist(), strict=True) if ok],
        item_index[known],
        np.asarray(values, dtype=np.float32)[known],
    )
    return len(rows)


def feedback_stamp(settings: Settings) -> Path:
    """The file whose modification time tells workers that new feedback was stored."""
    digest = hashlib.sha256(settings.database_url.encode()).hexdigest()[:12]
    return settings.data_dir / "service" / f"feedback-{digest}.stamp"


def touch_stamp(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        now = time.time_ns()
        os.utime(path, ns=(now, now))
    except OSError as exc:  # other workers then see the feedback after their next reload
        logger.warning("cannot touch %s: %s", path, exc)


def stamp_time(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def describe(state: ServingState) -> dict[str, Any]:
    return {
        "version": state.version,
        "model": state.model_name,
        "items": len(state.items),
        "users": len(state.users),
        "index": type(state.index).__name__,
        "load_seconds": round(state.load_seconds, 3),
    }


@dataclass(frozen=True)
class ReloadOutcome:
    reloaded: bool
    version: str
    previous: str | None
    seconds: float


def reload_production(
    holder: StateHolder, engine: Engine, settings: Settings, *, force: bool
) -> ReloadOutcome | None:
    """Build the production version's state and swap it in (only when the version changed,
    unless ``force``). One reload at a time; requests keep being answered meanwhile.
    Returns None when no version is promoted."""
    from recsys.registry.registry import ModelRegistry
    from service import metrics

    with holder.reload_lock:
        started = time.perf_counter()
        current = holder.current
        production = ModelRegistry(engine, settings.artifacts).production()
        if production is None:
            return None
        if current is not None and current.version == production.version and not force:
            return ReloadOutcome(False, current.version, current.version, 0.0)
        state = load_state(engine, settings, production.version)
        if state is None:
            return None
        previous = holder.swap(state)
        metrics.set_loaded_version(
            state.version, state.model_name, (previous.version, previous.model_name) if previous else None
        )
        if previous is not None:
            metrics.RELOADS.inc()
        logger.info("serving %s (%s)", state.version, describe(state))
        return ReloadOutcome(
            True, state.version, previous.version if previous else None, time.perf_counter() - started
        )
