"""What the service serves from memory: one model version, its index, the seen items and the catalogue.

A :class:`ServingState` holds the version's :class:`~recsys.retrieval.Retriever` (the object
batch scoring and offline evaluation rank through too) and the per-item JSON of the responses.
It is built completely (from the registry and the database) before it is
published by replacing one reference in :class:`StateHolder`; a request takes the reference
once and uses that state to the end, so a reload never shows a half-loaded model.

Feedback posted after the state was built lives in the retriever's overlay, read from the
database by interaction id. The worker that stored an event syncs at once; other workers notice a
touched stamp file (one ``stat`` per request) and sync before answering.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Engine, func, select

from recsys.data.interactions import IdMap, Interactions
from recsys.db.erasure import erasures_since
from recsys.db.models import Interaction, Item, User
from recsys.index import ItemIndex
from recsys.models.base import Recommender
from recsys.retrieval import Catalogue, Overlay, Retriever
from recsys.retrieval.retriever import DEFAULT_CACHE_SIZE
from service.render import item_fragments

if TYPE_CHECKING:
    import pandas as pd

    from recsys.settings import Settings

logger = logging.getLogger("uvicorn.error")


@dataclass
class ServingState:
    """One model version ready to answer: its retriever and the per-item JSON of the responses."""

    version: str
    model_name: str
    retriever: Retriever
    item_json: list[str]  # per item index, its JSON up to the score (service.render)
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    erasures_seen: int = 0  # the newest row of the deletions table this state has applied

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
        watermark: int | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> ServingState:
        """Assemble a state from a loaded version and a database snapshot."""
        started = time.perf_counter()
        model.prepare_fold_in()  # the first single-history fold-in costs no more than the next
        retriever = Retriever.build(
            model, users, items, interactions,
            index=index, watermark=watermark, catalogue=catalogue,
            snapshot_id=snapshot_id, cache_size=cache_size,
        )  # fmt: skip
        aligned = retriever.catalogue
        return cls(
            version=version,
            model_name=model.name,
            retriever=retriever,
            item_json=item_fragments(items.external_ids, aligned.titles, aligned.genres),
            load_seconds=time.perf_counter() - started,
        )

    # Shortcuts used by the routers.

    @property
    def items(self) -> IdMap:
        return self.retriever.items

    @property
    def users(self) -> IdMap:
        return self.retriever.users

    @property
    def catalogue(self) -> Catalogue:
        return self.retriever.catalogue

    @property
    def index(self) -> ItemIndex:
        return self.retriever.index

    @property
    def feedback(self) -> Overlay:
        return self.retriever.overlay

    def forget_user(self, user_id: str) -> None:
        """Drop what this state holds of the user (overlay, cached vector); see Retriever."""
        self.retriever.forget_user(user_id)

    def forget_item(self, item_id: str) -> None:
        """Never answer the item again from this state; see Retriever."""
        self.retriever.forget_item(item_id)


class StateHolder:
    """The one reference to the state being served, swapped whole by a reload."""

    def __init__(self) -> None:
        self.current: ServingState | None = None
        self.reload_lock = threading.Lock()
        self.stamp_seen: int = 0
        self.load_error: str | None = None
        """Why the production version failed to load at the last attempt (None: it did not fail)."""

    def swap(self, state: ServingState) -> ServingState | None:
        previous, self.current = self.current, state
        return previous


# --- loading from the registry and the database -----------------------------------------------


def load_state(engine: Engine, settings: Settings, version: str | None = None) -> ServingState | None:
    """Build the state of ``version`` (default: production); None when nothing is promoted yet.

    The seen items come from the version's snapshot, memory-mapped (shared between workers)
    when the version has one (:func:`recsys.retrieval.loading.seen_snapshot`); the first feedback
    sync then reads the interactions stored after the snapshot into the overlay, and the
    erasures recorded since.
    """
    from recsys.registry.registry import ModelRegistry
    from recsys.retrieval.loading import load_retriever

    started = time.perf_counter()
    registry = ModelRegistry(engine, settings.artifacts)
    if version is None and registry.production() is None:
        return None
    loaded = registry.load(version)
    loaded.model.prepare_fold_in()  # the first single-history fold-in costs no more than the next
    retriever = load_retriever(engine, loaded, cache_size=settings.fold_in_cache_size)
    items = loaded.items
    catalogue = retriever.catalogue
    state = ServingState(
        version=loaded.info.version,
        model_name=loaded.model.name,
        retriever=retriever,
        item_json=item_fragments(items.external_ids, catalogue.titles, catalogue.genres),
    )
    sync_feedback(engine, state)
    retriever.count_overlay_in_popular()
    state.load_seconds = time.perf_counter() - started
    return state


def max_interaction_id(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.coalesce(func.max(Interaction.id), 0))) or 0)


def sync_erasures(engine: Engine, state: ServingState) -> int:
    """Forget users and items erased since the state's last sync (by the API of any worker, or by
    ``recsys delete``); returns how many erasures were applied.

    A fresh state applies every recorded erasure: the version it serves may have been trained
    before them. Erasures are rare, so one Python call each is fine here.
    """
    rows = erasures_since(engine, state.erasures_seen)
    applied = 0
    for _, target, external_id in rows:
        if target in ("user", "item") and external_id is not None:
            (state.forget_user if target == "user" else state.forget_item)(external_id)
            applied += 1
    if rows:
        state.erasures_seen = rows[-1][0]
    return applied


def sync_feedback(engine: Engine, state: ServingState) -> int:
    """Read interactions stored after the state's last sync into its overlay, and apply erasures
    recorded since (:func:`sync_erasures`); returns how many interactions were read."""
    sync_erasures(engine, state)
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


def stamp_time(path: Path | str) -> int:
    """The stamp's modification time (0 when missing); every request asks, so ``path`` may be a
    string (``os.stat`` on a str skips pathlib's per-call work)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def describe(state: ServingState) -> str:
    """What a worker serves, in words for its log lines (not a Python dict)."""
    return (
        f"{state.model_name} model, {len(state.users):,} users, {len(state.items):,} items, "
        f"{type(state.index).__name__}, loaded in {state.load_seconds:.2f} s"
    )


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
        holder.load_error = None
        if production is None:
            return None
        if current is not None and current.version == production.version and not force:
            return ReloadOutcome(False, current.version, current.version, 0.0)
        try:
            state = load_state(engine, settings, production.version)
        except Exception as exc:
            holder.load_error = f"the production version {production.version} fails to load: {exc}"
            raise
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
