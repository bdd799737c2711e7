"""The one retrieval object: a loaded version's vectors and index, answering top-k questions.

The service, ``recsys score`` and ``recsys evaluate`` all rank through :class:`Retriever`, so a
list computed offline is the list the service answers. It holds, once each:

- the index (the version's FAISS index, flat or HNSW);
- seen-item exclusion, genre filters, per-request exclusions and paging (:class:`RankOptions`);
- fold-in: users without a trained vector, or whose history changed since training, get a vector
  solved from their history by the model (one blocked call for any number of users);
- the popular fallback for users with no usable history;
- similar items (cosine over the model's similarity vectors, normalised once).

Which vector a user gets is one rule, :meth:`Retriever.query_vectors`: the trained vector unless
the user is beyond the trained ones or marked to fold in; folded in from the history when it is
not empty; popular otherwise. A retriever built from the database (:meth:`Retriever.build`)
marks every user with an interaction newer than the version's watermark, so the service and
batch scoring fold in the same users.

Feedback that arrives while a retriever serves is kept in its overlay (last value per item wins);
a changed user's folded-in vector is cached, bounded, until that user's history changes again.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import IdMap, Interactions
from recsys.errors import DataError, UnknownIdError
from recsys.index.base import PAD_ID, Exclusions, ItemIndex
from recsys.index.exact import ExactIndex
from recsys.retrieval.filters import Catalogue

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

Strategy = Literal["personalized", "folded-in", "popular"]
#: Strategy codes of a batch, indices into this tuple.
STRATEGIES: tuple[Strategy, ...] = ("personalized", "folded-in", "popular")
PERSONALIZED, FOLDED_IN, POPULAR = 0, 1, 2
#: A version's value rule: stored history values -> the values its model folds in (0: leave out).
ValueRule = Callable[[np.ndarray], np.ndarray]
#: Folded-in vectors kept per retriever by default (a few MB at 128 factors).
DEFAULT_CACHE_SIZE = 10_000
#: No item columns (read only: shared by every call that excludes nothing).
_NO_ITEMS = np.zeros(0, dtype=np.int64)
_NO_ITEMS.flags.writeable = False
#: The popular index's query: its one dimension, the popularity count, weighted by one.
_ONE = np.ones(1, dtype=np.float32)
#: The query vector of a user answered with popular items (never searched).
_NO_VECTOR = np.zeros(0, dtype=np.float32)


class VectorModel(Protocol):
    """What retrieval needs from a model (``recsys.models.base.Recommender`` provides it)."""

    user_factors: np.ndarray | None

    @property
    def name(self) -> str: ...

    @property
    def item_factors(self) -> np.ndarray | None: ...

    @property
    def similarity_factors(self) -> np.ndarray: ...

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray: ...

    def fold_in_one(self, columns: np.ndarray, values: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RankOptions:
    """What to rank and what to leave out; the same for every user of one call."""

    k: int = 10
    """Items per list."""
    offset: int = 0
    """Skip this many of the best items first (paging: offset = page * k)."""
    exclude_seen: bool = True
    """Leave out items in the user's history."""
    include_genres: Sequence[str] = ()
    """Only items with at least one of these genres."""
    exclude_genres: Sequence[str] = ()
    """No items with any of these genres."""
    exclude_items: np.ndarray | None = None
    """Item indices never to return."""


@dataclass(frozen=True)
class Ranking:
    """Top-k lists of a batch: item indices (``PAD_ID`` where short), scores, strategy codes."""

    item_ids: np.ndarray  # (n, k) int64
    scores: np.ndarray  # (n, k) float32, -inf where padded
    strategies: np.ndarray  # (n,) int8 codes into STRATEGIES


@dataclass(frozen=True)
class Ranked:
    """One ranked list (filled slots only) with the strategy that produced it."""

    item_ids: np.ndarray
    scores: np.ndarray
    strategy: Strategy

    @classmethod
    def row(cls, ranking: Ranking, row: int = 0) -> Ranked:
        filled = ranking.item_ids[row] != PAD_ID
        strategy = STRATEGIES[int(ranking.strategies[row])]
        return cls(ranking.item_ids[row][filled], ranking.scores[row][filled], strategy)


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): cosine similarity as inner product."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def align_to_model(data: Interactions, users: IdMap, items: IdMap) -> tuple[IdMap, sp.csr_matrix]:
    """The interaction matrix in a model's index space.

    Rows: the model's users in its order, then users the database has and the model does not
    (folded in when ranked). Columns: the model's items; interactions with items the model does
    not know are dropped, since they can neither be recommended nor folded in.
    """
    all_users, user_of, item_of, known = _aligned_indices(data, users, items)
    matrix = sp.csr_matrix(
        (data.values[known].astype(np.float32), (user_of[known], item_of[known])),
        shape=(len(all_users), len(items)),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    return all_users, matrix


def changed_since(data: Interactions, users: IdMap, items: IdMap, watermark: int | None) -> np.ndarray:
    """Per user of ``align_to_model``'s map, whether they have an interaction newer than the
    version's training ``watermark``: their trained vector no longer reflects their history."""
    all_users, user_of, _, known = _aligned_indices(data, users, items)
    changed = np.zeros(len(all_users), dtype=bool)
    if watermark is not None:
        changed[user_of[known & (data.timestamps > watermark)]] = True
    return changed


def _aligned_indices(
    data: Interactions, users: IdMap, items: IdMap
) -> tuple[IdMap, np.ndarray, np.ndarray, np.ndarray]:
    db_users = data.users.to_list()
    new_users = [user for user in db_users if user not in users]
    all_users = IdMap(np.asarray(users.to_list() + new_users, dtype=object)) if new_users else users
    user_of = all_users.indices(db_users)[data.user_index]
    item_of = items.indices(data.items.to_list())[data.item_index]
    return all_users, user_of, item_of, item_of >= 0


class Overlay:
    """Interactions stored after the retriever's snapshot, per user (item index -> value, last
    wins), with a generation per user that invalidates that user's cached vector."""

    def __init__(self, last_id: int) -> None:
        self.last_id = last_id
        self._rows: dict[str, dict[int, float]] = {}
        self._generation: dict[str, int] = {}
        self._lock = threading.Lock()

    def apply(self, last_id: int, users: Sequence[str], items: np.ndarray, values: np.ndarray) -> None:
        with self._lock:
            for user, item, value in zip(users, items.tolist(), values.tolist(), strict=True):
                self._rows.setdefault(user, {})[item] = value
                self._generation[user] = self._generation.get(user, 0) + 1
            self.last_id = max(self.last_id, last_id)

    def pairs(self) -> tuple[list[str], np.ndarray]:
        """Every (user, item index) pair the overlay holds, as a user list and an index array."""
        with self._lock:
            users = [user for user, row in self._rows.items() for _ in row]
            items = np.fromiter(
                (item for row in self._rows.values() for item in row), dtype=np.int64, count=len(users)
            )
        return users, items

    def row(self, user: str) -> tuple[dict[int, float] | None, int]:
        """The user's overlay (a copy) and its generation."""
        with self._lock:
            found = self._rows.get(user)
            return (dict(found) if found else None), self._generation.get(user, 0)

    def generation(self, user: str) -> int | None:
        """The user's generation, or None while the overlay holds nothing of the user."""
        with self._lock:
            return self._generation.get(user, 0) if self._rows.get(user) else None

    def forget(self, user: str) -> None:
        with self._lock:
            self._rows.pop(user, None)
            self._generation[user] = self._generation.get(user, 0) + 1


#: A folded-in user: one-row query vector and strategy code arrays, and the merged history
#: (snapshot plus overlay) the lists leave out.
Folded = tuple[np.ndarray, np.ndarray, "Exclusions"]


class VectorCache:
    """Folded-in vectors by user id, least recently used dropped beyond ``size`` entries.

    An entry is valid for one overlay generation of its user: feedback of that user makes it
    stale, feedback of others does not."""

    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, tuple[int, Folded]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user: str, generation: int) -> Folded | None:
        with self._lock:
            entry = self._entries.get(user)
            if entry is None or entry[0] != generation:
                self.misses += 1
                return None
            self._entries.move_to_end(user)
            self.hits += 1
            return entry[1]

    def put(self, user: str, generation: int, vector: Folded) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._entries[user] = (generation, vector)
            self._entries.move_to_end(user)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, user: str) -> None:
        with self._lock:
            self._entries.pop(user, None)

    def __contains__(self, user: str) -> bool:
        with self._lock:
            return user in self._entries

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Retriever:
    """Top-k lists, similar items and fold-in for one loaded model version.

    Build with :meth:`build` (users, history and catalogue from the database, as the service and
    batch scoring do) or :meth:`for_model` (a model alone, histories passed per call, as offline
    evaluation does).
    """

    model: VectorModel
    index: ItemIndex
    items: IdMap
    users: IdMap = field(default_factory=lambda: IdMap(np.zeros(0, dtype=object)))
    seen: sp.csr_matrix | None = None
    """Users x items history at the snapshot (rows of ``users``)."""
    vectors: np.ndarray | None = None
    """Query vector per user of ``users`` (zeros where the strategy is popular)."""
    strategies: np.ndarray | None = None
    """Strategy code per user of ``users``."""
    catalogue: Catalogue = field(default_factory=lambda: Catalogue.empty(0))
    popular_counts: np.ndarray | None = None
    overlay: Overlay = field(default_factory=lambda: Overlay(0))
    cache: VectorCache = field(default_factory=VectorCache)
    popular_fallback: bool = True
    """Users with no vector and an empty history get popular items; when False (a model without
    popularity counts) they are folded in from the empty history, as the model answers them."""
    history_rule: ValueRule | None = None
    """How history values become what the model folds in (the version's value rule, for example
    binary; 0 drops a pair); None folds in the stored values. Exclusion always uses every stored
    item."""

    def __post_init__(self) -> None:
        n_items = self.index.n_items
        if self.catalogue.genre_matrix.shape[0] != n_items:  # none given
            self.catalogue = Catalogue.empty(n_items)
        if self.popular_counts is None:
            self.popular_counts = (
                np.zeros(n_items, np.float32)
                if self.seen is None
                else np.bincount(self.seen.indices, minlength=n_items).astype(np.float32)
            )
        self.erased = np.zeros(n_items, dtype=bool)
        self._erased_items = np.zeros(0, dtype=np.int64)  # the same, as sorted indices
        self._forgotten: set[str] = set()
        self._popular_index = ExactIndex(np.asarray(self.popular_counts, np.float32)[:, None])

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def for_model(
        cls,
        model: VectorModel,
        index: ItemIndex | None = None,
        popular_counts: np.ndarray | None = None,
        history_rule: ValueRule | None = None,
    ) -> Retriever:
        """A retriever over ``model`` alone (exact index unless one is given); histories are
        passed to :meth:`recommend`. Without ``popular_counts`` there is no popular fallback."""
        items = model.item_factors
        if items is None:
            from recsys.errors import NotFittedError

            raise NotFittedError(f"the {model.name} model is not fitted; call fit() or load()")
        return cls(
            model=model,
            index=index if index is not None else ExactIndex(items),
            items=IdMap(np.arange(len(items)).astype(object)),
            popular_counts=popular_counts,
            popular_fallback=popular_counts is not None,
            history_rule=history_rule,
        )

    @classmethod
    def build(
        cls,
        model: VectorModel,
        users: IdMap,
        items: IdMap,
        interactions: Interactions,
        *,
        index: ItemIndex | None = None,
        watermark: int | None = None,
        catalogue: pd.DataFrame | None = None,
        snapshot_id: int = 0,
        cache_size: int = DEFAULT_CACHE_SIZE,
        history_rule: ValueRule | None = None,
    ) -> Retriever:
        """A version's retriever over the database's interactions.

        Every user's query vector is fixed here, in one blocked fold-in for all users who need
        one (users the version does not know, and users with interactions newer than
        ``watermark``), so answering a user is a lookup and a search.
        """
        all_users, seen = align_to_model(interactions, users, items)
        return cls.from_matrix(
            model,
            all_users,
            items,
            seen,
            fold=changed_since(interactions, users, items, watermark),
            index=index,
            catalogue=Catalogue.from_frame(len(items), catalogue),
            snapshot_id=snapshot_id,
            cache_size=cache_size,
            history_rule=history_rule,
        )

    @classmethod
    def from_matrix(
        cls,
        model: VectorModel,
        users: IdMap,
        items: IdMap,
        seen: sp.csr_matrix,
        *,
        fold: np.ndarray | None = None,
        index: ItemIndex | None = None,
        catalogue: Catalogue | None = None,
        snapshot_id: int = 0,
        cache_size: int = DEFAULT_CACHE_SIZE,
        history_rule: ValueRule | None = None,
        erased_users: Sequence[str] = (),
        erased_items: Sequence[str] = (),
    ) -> Retriever:
        """A retriever over a users x items history matrix (rows in ``users`` order, the model's
        trained users first); ``fold`` marks trained users to fold in all the same.

        ``erased_users`` and ``erased_items`` were erased after ``seen`` was read (a version's
        snapshot predates them): they are forgotten before any vector is folded in, and the
        erased users' rows do not count in the popular fallback, so the retriever answers as one
        built from the log after the erasures. ``seen`` is only read, never copied whole: a
        memory-mapped snapshot stays shared between processes."""
        item_vectors = model.item_factors
        if item_vectors is None:
            from recsys.errors import NotFittedError

            raise NotFittedError(f"the {model.name} model is not fitted; call fit() or load()")
        seen = sp.csr_matrix(seen, dtype=np.float32)
        if seen.shape != (len(users), len(items)):
            raise ValueError(f"seen must be {len(users)} x {len(items)}, got {seen.shape}")
        popular_counts = np.bincount(seen.indices, minlength=len(items)).astype(np.float32)
        erased_rows = users.indices(erased_users)
        erased_rows = np.unique(erased_rows[erased_rows >= 0])
        if len(erased_rows):
            popular_counts -= np.bincount(seen[erased_rows].indices, minlength=len(items)).astype(np.float32)
        retriever = cls(
            model=model,
            index=index if index is not None else ExactIndex(item_vectors),
            items=items,
            users=users,
            seen=seen,
            catalogue=catalogue if catalogue is not None else Catalogue.empty(len(items)),
            popular_counts=popular_counts,
            overlay=Overlay(snapshot_id),
            cache=VectorCache(cache_size),
            history_rule=history_rule,
        )
        for item in erased_items:
            retriever.forget_item(item)
        for user in erased_users:
            retriever.forget_user(user)
        trained = model.user_factors
        if trained is not None and len(trained) == len(users) and (fold is None or not np.any(fold)):
            # Every user has their trained vector: share the model's array instead of a copy.
            retriever.vectors = np.asarray(trained, dtype=np.float32)
            retriever.strategies = np.full(len(users), PERSONALIZED, dtype=np.int8)
        else:
            everyone = np.arange(len(users))
            retriever.vectors, retriever.strategies = retriever.query_vectors(everyone, seen, fold)
        return retriever

    # --- the one rule for query vectors -------------------------------------------------------

    @property
    def n_trained_users(self) -> int:
        trained = self.model.user_factors
        return 0 if trained is None else len(trained)

    def query_vectors(
        self, users: np.ndarray, rows: sp.csr_matrix, fold: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Query vectors and strategy codes for ``users`` (indices; ``rows`` holds one history
        row per entry). Trained users keep their vector unless ``fold`` marks them; the others
        are folded in from their rows in one blocked call; users with an empty row get popular."""
        users = np.asarray(users, dtype=np.int64)
        rows = sp.csr_matrix(rows)
        fold = np.zeros(len(users), bool) if fold is None else np.asarray(fold, bool)
        item_vectors = self.model.item_factors
        assert item_vectors is not None  # checked when the retriever was made
        vectors = np.zeros((len(users), item_vectors.shape[1]), dtype=np.float32)
        strategies = np.full(len(users), POPULAR, dtype=np.int8)
        trained = (users < self.n_trained_users) & ~fold
        if trained.any():
            assert self.model.user_factors is not None
            vectors[trained] = self.model.user_factors[users[trained]]
            strategies[trained] = PERSONALIZED
        # A history of zeros (or of values the version's rule maps to 0) has nothing to fold in:
        # the model would give a zero vector, which ranks the catalogue in id order.
        counted = np.concatenate([[0], np.cumsum(self._counted(rows.indices, rows.data))])
        has_history = counted[rows.indptr[1:]] > counted[rows.indptr[:-1]]
        folded = ~trained & (has_history | (not self.popular_fallback))
        try:
            self._fold_rows(rows, folded, vectors, strategies)
        except DataError as exc:
            # Values the model refuses (negative ones for implicit ALS): those users keep their
            # trained vector or get popular items, and the others are still folded in.
            unusable = np.asarray((rows < 0).sum(axis=1)).ravel() > 0
            if not (folded & unusable).any():
                raise
            logger.warning("%d user(s) not folded in: %s", int((folded & unusable).sum()), exc)
            fallback = folded & unusable & (users < self.n_trained_users)
            if fallback.any():
                assert self.model.user_factors is not None
                vectors[fallback] = self.model.user_factors[users[fallback]]
                strategies[fallback] = PERSONALIZED
            self._fold_rows(rows, folded & ~unusable, vectors, strategies)
        return vectors, strategies

    def _fold_rows(
        self, rows: sp.csr_matrix, folded: np.ndarray, vectors: np.ndarray, strategies: np.ndarray
    ) -> None:
        """Fold in the marked rows, in one call, into ``vectors`` and ``strategies``."""
        if folded.all():  # a service fold-in: no scipy row selection
            vectors[:] = self._fold_in(rows)
            strategies[:] = FOLDED_IN
        elif folded.any():
            vectors[folded] = self._fold_in(rows[np.flatnonzero(folded)])
            strategies[folded] = FOLDED_IN

    def _fold_in(self, rows: sp.csr_matrix) -> np.ndarray:
        """Vectors of history rows, in one blocked call."""
        keep, values = self._history_values(rows.indices, rows.data)
        if keep is not None:
            indptr = np.concatenate([[0], np.cumsum(keep)])[rows.indptr]
            rows = sp.csr_matrix((values[keep], rows.indices[keep], indptr), shape=rows.shape)
        return self.model.fold_in(rows)

    def _fold_in_one(self, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
        """One history's vector (sorted, unique item columns): what :meth:`_fold_in` gives for its
        row, without building one (a request folds in a single history)."""
        keep, values = self._history_values(columns, values)
        if keep is not None:
            columns, values = columns[keep], values[keep]
        return self.model.fold_in_one(columns, values)

    def _counted(self, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Which pairs the model folds in: not erased, and not 0 after the version's value rule
        (every model drops zero values)."""
        keep, values = self._history_values(columns, values)
        counted = np.asarray(values != 0)
        return counted if keep is None else counted & keep

    def _history_values(
        self, columns: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """The values the model folds in, and which pairs it folds in (None: all): erased items
        are no longer part of anyone's history, and the version's value rule may drop pairs."""
        keep = ~self.erased[columns] if len(self._erased_items) else None
        if self.history_rule is not None:
            values = self.history_rule(values)
            kept = values != 0
            keep = kept if keep is None else keep & kept
        return keep, values

    # --- ranking ------------------------------------------------------------------------------

    def recommend(
        self,
        users: np.ndarray,
        rows: sp.csr_matrix,
        options: RankOptions | None = None,
        fold: np.ndarray | None = None,
    ) -> Ranking:
        """Top-k lists for ``users`` given their history ``rows`` (one row per user): vectors by
        :meth:`query_vectors`, then :meth:`rank`. Offline evaluation ranks through this."""
        rows = sp.csr_matrix(rows)
        vectors, strategies = self.query_vectors(users, rows, fold)
        return self.rank(vectors, strategies, Exclusions.from_csr(rows), options or RankOptions())

    def recommend_known(self, users: np.ndarray, options: RankOptions | None = None) -> Ranking:
        """Top-k lists for users of the snapshot (indices into ``users``), with the vectors fixed
        at build time: what batch scoring writes and the service answers for them."""
        if self.seen is None or self.vectors is None or self.strategies is None:
            raise ValueError("this retriever has no snapshot of users; build it with Retriever.build")
        users = np.asarray(users, dtype=np.int64)
        seen = self.seen[users]
        return self.rank(
            self.vectors[users], self.strategies[users], Exclusions.from_csr(seen), options or RankOptions()
        )

    def rank(
        self, vectors: np.ndarray, strategies: np.ndarray, seen: Exclusions | None, options: RankOptions
    ) -> Ranking:
        """The lists for given query vectors and strategies; ``seen`` holds each row's history."""
        if options.k < 1 or options.offset < 0:
            raise ValueError(f"k must be at least 1 and offset at least 0, got {options.k}, {options.offset}")
        n_rows = len(vectors)
        extra = self._extra_exclusions(options)
        exclusions = _merge(seen if options.exclude_seen else None, extra, n_rows)
        fetch = options.offset + options.k
        if n_rows == 1:  # the service's case, without the bookkeeping of a block
            index = self._popular_index if strategies[0] == POPULAR else self.index
            query = np.ones((1, 1)) if strategies[0] == POPULAR else vectors
            ids, scores = index.search(query, fetch, exclusions)
            return Ranking(
                ids[:, options.offset :], scores[:, options.offset :], np.asarray(strategies, np.int8)
            )
        ids = np.full((n_rows, fetch), PAD_ID, dtype=np.int64)
        scores = np.full((n_rows, fetch), -np.inf, dtype=np.float32)
        popular = strategies == POPULAR
        if not popular.all():
            rows = np.flatnonzero(~popular)
            part = exclusions if len(rows) == n_rows else exclusions.take(rows)
            ids[rows], scores[rows] = self.index.search(vectors[rows], fetch, part)
        if popular.any():
            rows = np.flatnonzero(popular)
            part = exclusions if len(rows) == n_rows else exclusions.take(rows)
            ids[rows], scores[rows] = self._popular_index.search(np.ones((len(rows), 1)), fetch, part)
        ids, scores = ids[:, options.offset :], scores[:, options.offset :]
        return Ranking(ids, scores, np.asarray(strategies, dtype=np.int8))

    def rank_one(self, vector: np.ndarray, strategy: int, seen: np.ndarray, options: RankOptions) -> Ranked:
        """:meth:`rank` of one row as :meth:`Ranked.row` reads it, the same list and scores for
        less work (the service ranks one user per request): the exclusions are handed to the
        index's ``search_one`` as they are, without merging them into sorted rows first.
        ``seen`` holds the row's history (item columns)."""
        if options.k < 1 or options.offset < 0:
            raise ValueError(f"k must be at least 1 and offset at least 0, got {options.k}, {options.offset}")
        extra = self._extra_exclusions(options)
        exclude = seen if options.exclude_seen else _NO_ITEMS
        if len(extra):
            exclude = np.concatenate([exclude, extra]) if len(exclude) else extra
        fetch = options.offset + options.k
        if strategy == POPULAR:
            ids, scores = self._popular_index.search_one(_ONE, fetch, exclude)
        else:
            ids, scores = self.index.search_one(vector, fetch, exclude)
        return Ranked(ids[options.offset :], scores[options.offset :], STRATEGIES[strategy])

    def _extra_exclusions(self, options: RankOptions) -> np.ndarray:
        """Items left out of every list of a call: genre filters, explicit ids, erased items."""
        if (
            not options.include_genres
            and not options.exclude_genres
            and (options.exclude_items is None or not len(options.exclude_items))
            and not len(self._erased_items)
        ):
            return _NO_ITEMS  # the common case, without building the parts below
        parts = [self.catalogue.filtered_out(options.include_genres, options.exclude_genres)]
        if options.exclude_items is not None and len(options.exclude_items):
            parts.append(np.asarray(options.exclude_items, dtype=np.int64))
        if len(self._erased_items):
            parts.append(self._erased_items)
        parts = [part for part in parts if len(part)]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))

    # --- one user of the service --------------------------------------------------------------

    def user_history(self, user_id: str) -> tuple[np.ndarray, np.ndarray, int | None]:
        """The user's interactions (snapshot plus overlay): sorted item columns and values, and
        the overlay generation when the overlay changed them (None otherwise)."""
        index = self.user_index(user_id)
        if index is None or self.seen is None:
            columns, values = np.zeros(0, np.int32), np.zeros(0, np.float32)
        else:
            start, stop = self.seen.indptr[index], self.seen.indptr[index + 1]
            columns, values = self.seen.indices[start:stop], self.seen.data[start:stop]
        if len(self._erased_items) and len(columns):
            keep = ~self.erased[columns]
            columns, values = columns[keep], values[keep]
        overlay, generation = self.overlay.row(user_id)
        if not overlay:
            return columns, values, None
        new_columns = np.fromiter(overlay.keys(), dtype=np.int64, count=len(overlay))
        new_values = np.fromiter(overlay.values(), dtype=np.float32, count=len(overlay))
        keep = ~np.isin(columns, new_columns)
        merged = np.concatenate([columns[keep], new_columns])
        order = np.argsort(merged, kind="stable")
        return merged[order], np.concatenate([values[keep], new_values])[order], generation

    def user_index(self, user_id: str) -> int | None:
        if user_id in self._forgotten:
            return None
        return self.users.index(user_id)

    def recommend_user(self, user_id: str, options: RankOptions) -> Ranked:
        """One user's list: the vector fixed at build time while the history is unchanged, else
        the cached folded-in vector, else a fold-in that is then cached."""
        generation = self.overlay.generation(user_id)
        if generation is None:
            index = self.user_index(user_id)
            if index is not None and self.vectors is not None and self.seen is not None:
                assert self.strategies is not None
                seen = self.seen.indices[self.seen.indptr[index] : self.seen.indptr[index + 1]]
                return self.rank_one(self.vectors[index], int(self.strategies[index]), seen, options)
            return self.rank_one(_NO_VECTOR, POPULAR, _NO_ITEMS, options)
        # The merged history is cached with the vector: both change only with the user's feedback.
        cached = self.cache.get(user_id, generation)
        if cached is None:
            columns, values, generation = self.user_history(user_id)
            row = _row(columns, values, len(self.items))
            index = self.user_index(user_id)
            user = np.array([self.n_trained_users if index is None else index], np.int64)
            vector, strategy = self.query_vectors(user, row, fold=np.ones(1, bool))
            cached = (vector, strategy, Exclusions.sorted_row(columns))
            if generation is not None:
                self.cache.put(user_id, generation, cached)
        folded, codes, history = cached
        return self.rank_one(folded[0], int(codes[0]), history.columns, options)

    def recommend_history(
        self, item_ids: Sequence[str], values: Sequence[float] | None, options: RankOptions
    ) -> Ranked:
        """An anonymous history's list, folded in from its items (repeats are summed); popular
        items when no value counts (all 0 after the version's value rule)."""
        indices = self.item_indices(item_ids)
        data = np.ones(len(indices), np.float32) if values is None else np.asarray(values, np.float32)
        columns, position = np.unique(indices, return_inverse=True)
        summed = np.bincount(position, weights=data, minlength=len(columns)).astype(np.float32)
        if self.popular_fallback and not self._counted(columns, summed).any():
            return self.rank_one(_NO_VECTOR, POPULAR, columns, options)  # nothing to fold in
        # Folded in directly: values the model refuses are the caller's to fix (DataError).
        vector = self._fold_in_one(columns, summed)
        return self.rank_one(vector, FOLDED_IN, columns, options)

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Indices of the given item ids; unknown and erased ids raise :class:`UnknownIdError`."""
        indices = self.items.indices(item_ids)
        bad = (indices < 0) | self.erased[np.maximum(indices, 0)]
        if bad.any():
            unknown = [item for item, wrong in zip(item_ids, bad.tolist(), strict=True) if wrong]
            raise UnknownIdError(
                f"unknown item id(s) {', '.join(map(repr, unknown))}: not in this model version "
                "(items added since it was trained become available after retraining)"
            )
        return indices

    def known_item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Indices of those ids the version knows (unknown ones left out)."""
        indices = self.items.indices(item_ids)
        return indices[indices >= 0]

    # --- similar items --------------------------------------------------------------------------

    @cached_property
    def similar_index(self) -> ExactIndex:
        """Exact inner product over the normalised similarity vectors: cosine similarity."""
        return ExactIndex(normalised(self.model.similarity_factors))

    def similar(self, item_indices: np.ndarray, options: RankOptions | None = None) -> Ranking:
        """The items most similar (cosine) to each given item, the item itself left out."""
        options = options or RankOptions()
        item_indices = np.asarray(item_indices, dtype=np.int64)
        own = Exclusions(np.arange(len(item_indices) + 1, dtype=np.int64), item_indices)
        index = self.similar_index
        exclusions = _merge(own, self._extra_exclusions(options), len(item_indices))
        ids, scores = index.search(index.item_vectors[item_indices], options.offset + options.k, exclusions)
        strategies = np.full(len(item_indices), PERSONALIZED, np.int8)
        return Ranking(ids[:, options.offset :], scores[:, options.offset :], strategies)

    def count_overlay_in_popular(self) -> None:
        """Count the overlay's (user, item) pairs that the snapshot does not hold in the popular
        fallback, as a snapshot read now would. A loaded retriever calls it once, after its
        first feedback sync read the interactions stored since its snapshot; later feedback
        changes the popular counts at the next load, as before."""
        users, items = self.overlay.pairs()
        if not len(items):
            return
        n_items = len(self.items)
        rows = self.users.indices(users)
        new = np.ones(len(items), dtype=bool)
        known = rows >= 0
        if known.any() and self.seen is not None:
            unique_rows, local = np.unique(rows[known], return_inverse=True)
            held = self.seen[unique_rows]
            keys = np.repeat(np.arange(len(unique_rows)), np.diff(held.indptr)) * n_items + held.indices
            new[known] = ~np.isin(local * n_items + items[known], keys)
        assert self.popular_counts is not None  # set by __post_init__
        added = np.bincount(items[new], minlength=n_items).astype(np.float32)
        self.popular_counts = np.asarray(self.popular_counts, np.float32) + added
        self._popular_index = ExactIndex(self.popular_counts[:, None])

    # --- erasure --------------------------------------------------------------------------------

    def forget_user(self, user_id: str) -> None:
        """Drop the user's overlay and cached vector; until the next load the user is answered as
        unknown (popular items), whatever the snapshot held."""
        self._forgotten.add(user_id)
        self.overlay.forget(user_id)
        self.cache.drop(user_id)

    def forget_item(self, item_id: str) -> None:
        """Never answer this item again (lists, similar items and histories treat it as unknown)."""
        index = self.items.index(item_id)
        if index is not None:
            self.erased[index] = True
            self._erased_items = np.flatnonzero(self.erased)


def _row(columns: np.ndarray, values: np.ndarray, n_items: int) -> sp.csr_matrix:
    """One CSR row with ``values`` at the given (sorted, unique) columns."""
    indptr = np.array([0, len(columns)], dtype=np.int64)
    return sp.csr_matrix((values, columns, indptr), shape=(1, n_items))


def _merge(rows: Exclusions | None, extra: np.ndarray, n_rows: int) -> Exclusions:
    """Each row's exclusions plus ``extra`` (the same for every row), sorted and unique per row."""
    if not len(extra):
        if rows is not None:
            return rows
        return Exclusions(np.zeros(n_rows + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if rows is None or rows.nnz == 0:
        indptr = np.arange(n_rows + 1, dtype=np.int64) * len(extra)
        return Exclusions(indptr, np.tile(extra, n_rows))
    width = np.int64(max(int(rows.columns.max()), int(extra.max())) + 1)
    keys = np.concatenate(
        [
            rows.row_of_each() * width + rows.columns,
            (np.arange(n_rows, dtype=np.int64)[:, None] * width + extra[None, :]).ravel(),
        ]
    )
    keys = np.unique(keys)
    row_of = keys // width
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of, minlength=n_rows))]).astype(np.int64)
    return Exclusions(indptr, keys % width)
