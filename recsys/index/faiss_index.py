"""FAISS inner-product indexes: exact ``IndexFlatIP`` for small catalogues, HNSW for large ones.

Seen and explicitly excluded items are removed without a loop per item. The exact index scores
every item anyway, so it searches with numpy over the same vectors (one matrix product, one mask,
one partial sort): several times faster than over-fetching for a user with a long history, and
the same numbers for one query as for a block. HNSW over-fetches ``k`` plus the row's exclusions
rounded up to a power of two and masks them in one vectorised pass; the rare rows that still come
up short are searched again with a larger margin.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recsys.errors import ArtifactError
from recsys.index.base import PAD_ID, ExcludeArg, Exclusions, ItemIndex, as_exclusions, check_queries
from recsys.index.exact import ExactIndex

INDEX_FILE = "index.faiss"
META_FILE = "meta.json"
RECALL_K = 10

IndexKind = Literal["flat", "hnsw"]


class HnswParams(BaseModel):
    """How an approximate index is built and how far its search effort may be raised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    m: int = Field(default=32, ge=4, le=256)
    """Graph neighbours per node: more gives better recall for more memory."""
    ef_construction: int = Field(default=200, ge=8)
    """Build-time search breadth; higher builds a better graph, slower."""
    ef_search_start: int = Field(default=16, ge=1)
    """First ``efSearch`` tried; it doubles until the recall target is met."""
    ef_search_max: int = Field(default=4096, ge=1)
    """Largest ``efSearch`` tried before giving up on HNSW and using the exact index."""
    recall_queries: int = Field(default=1000, ge=10)
    """Sample queries used to measure recall@10 against the exact index."""


class FaissIndex(ItemIndex):
    """Top-k inner-product search over item vectors with a FAISS index.

    Build with :meth:`flat` or :meth:`hnsw` (or :func:`recsys.index.build_index`, which chooses);
    ``recall`` is recall@10 against exact search measured at build time (1.0 for flat).
    """

    def __init__(self, index: faiss.Index, kind: IndexKind, meta: dict[str, Any] | None = None) -> None:
        self._index = index
        self.kind: IndexKind = kind
        self.is_exact = kind == "flat"
        self.meta: dict[str, Any] = {"kind": kind, **(meta or {})}
        # Read once: each attribute access on the SWIG object costs tens of microseconds.
        self._n_items, self._dim = int(index.ntotal), int(index.d)
        # Exact search with exclusions masks scores over the same vectors (see the module docstring).
        # A private copy in the process's own memory, not a view of the mapped file: the one-query
        # search reads every vector on every request, and through the file's mapping it cost the
        # service about a third of its throughput (ml-100k, measured in one run): FAISS writes a
        # flat index's vectors at byte 45 of its file, an address numpy reads unaligned, through
        # its slow paths.
        self._masked = ExactIndex(index.reconstruct_n(0, index.ntotal)) if self.is_exact else None

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def flat(cls, item_vectors: np.ndarray) -> FaissIndex:
        vectors = _as_float32(item_vectors)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(index, "flat", {"recall_at_10": 1.0, "n_items": len(vectors), "dim": vectors.shape[1]})

    @classmethod
    def hnsw(
        cls,
        item_vectors: np.ndarray,
        min_recall: float,
        params: HnswParams | None = None,
        queries: np.ndarray | None = None,
        seed: int = 0,
    ) -> FaissIndex:
        """An HNSW index whose ``efSearch`` is raised until recall@10 reaches ``min_recall``.

        Recall is measured on ``queries`` (for example a sample of user vectors), or on a sample
        of the item vectors themselves when none are given. When even ``ef_search_max`` misses the
        target, the exact flat index is returned instead, so the guarantee always holds.
        """
        params = params or HnswParams()
        vectors = _as_float32(item_vectors)
        started = time.perf_counter()
        index = faiss.IndexHNSWFlat(vectors.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.add(vectors)
        sample = _recall_sample(vectors, queries, params.recall_queries, seed)
        exact = cls.flat(vectors)
        _, truth = exact._index.search(sample, RECALL_K)
        ef_search = params.ef_search_start
        while True:
            index.hnsw.efSearch = ef_search
            _, found = index.search(sample, RECALL_K)
            recall = recall_at_k(found, truth)
            if recall >= min_recall or ef_search >= params.ef_search_max:
                break
            ef_search = min(2 * ef_search, params.ef_search_max)
        if recall < min_recall:
            exact.meta["fallback"] = (
                f"HNSW reached recall@10 {recall:.3f} < {min_recall} at efSearch {ef_search}; "
                "using the exact index"
            )
            return exact
        meta = {
            "n_items": len(vectors),
            "dim": vectors.shape[1],
            "recall_at_10": recall,
            "recall_queries": len(sample),
            "ef_search": ef_search,
            "m": params.m,
            "ef_construction": params.ef_construction,
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        return cls(index, "hnsw", meta)

    # --- the ItemIndex contract ---------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return self._n_items

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def recall(self) -> float:
        return float(self.meta.get("recall_at_10", 1.0))

    def search(
        self, queries: np.ndarray, k: int, exclude: ExcludeArg = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._masked is not None:  # flat: the numpy reference over the same vectors
            return self._masked.search(queries, k, exclude)
        queries = check_queries(queries, self.dim, k)
        exclusions = as_exclusions(exclude, len(queries), self.n_items)
        if exclusions is None:
            exclusions = Exclusions(np.zeros(len(queries) + 1, np.int64), np.zeros(0, np.int64))
        # Over-fetch k + margin candidates, the margin the row's exclusions rounded up to a power
        # of two (0 without exclusions). Rows are searched in groups of equal margin, so what a
        # row gets depends on its own exclusions only, not on the other rows of the batch.
        n_excluded = exclusions.counts
        margin = np.where(n_excluded > 0, 2 ** np.ceil(np.log2(np.maximum(n_excluded, 1))), 0).astype(
            np.int64
        )
        ids = np.full((len(queries), k), PAD_ID, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        pending = np.arange(len(queries))
        while len(pending):
            unfinished = []
            for size in np.unique(margin[pending]).tolist():  # a few distinct powers of two
                group = pending[margin[pending] == size]
                fetch = min(self.n_items, k + size)
                got_ids, got_scores = self._search(queries[group], fetch)
                keep = (got_ids != PAD_ID) & ~_excluded(got_ids, exclusions.take(group))
                # Stable sort moves the kept candidates to the front in their score order.
                order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
                row_ids = np.take_along_axis(got_ids, order, axis=1)
                row_scores = np.take_along_axis(got_scores, order, axis=1)
                kept = np.take_along_axis(keep, order, axis=1)
                row_ids[~kept] = PAD_ID
                row_scores[~kept] = -np.inf
                width = row_ids.shape[1]
                ids[group, :width] = row_ids
                scores[group, :width] = row_scores
                available = self.n_items - n_excluded[group]
                done = (kept.sum(axis=1) >= np.minimum(k, available)) | (fetch >= self.n_items)
                unfinished.append(group[~done])
            pending = np.concatenate(unfinished) if unfinished else pending[:0]
            margin[pending] = np.maximum(4 * margin[pending], k)
        return ids, scores

    def search_one(
        self, query: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._masked is not None:
            return self._masked.search_one(query, k, exclude)
        return super().search_one(query, k, exclude)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw FAISS search padded to width ``k`` with ``PAD_ID`` / ``-inf``."""
        take = min(k, self.n_items)
        scores, ids = self._index.search(queries, take)  # HNSW searches with max(efSearch, k)
        ids = ids.astype(np.int64, copy=False)
        scores[ids == PAD_ID] = -np.inf
        if take < k:
            ids = np.pad(ids, ((0, 0), (0, k - take)), constant_values=PAD_ID)
            scores = np.pad(scores, ((0, 0), (0, k - take)), constant_values=-np.inf)
        return ids, scores

    # --- persistence --------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``index.faiss`` and ``meta.json`` (kind, recall, search parameters) into ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(path / INDEX_FILE))
        (path / META_FILE).write_text(json.dumps(self.meta, indent=2))

    @classmethod
    def load(cls, path: Path) -> FaissIndex:
        if not (path / INDEX_FILE).is_file() or not (path / META_FILE).is_file():
            raise ArtifactError(f"{path} is not a saved FAISS index (missing {INDEX_FILE} or {META_FILE})")
        meta = json.loads((path / META_FILE).read_text())
        # The vectors memory-mapped, not read: every service worker shares one copy of them.
        index = faiss.read_index(str(path / INDEX_FILE), faiss.IO_FLAG_MMAP_IFC)
        if meta["kind"] == "hnsw":
            # efSearch is a search-time parameter that write_index does not keep.
            hnsw: Any = faiss.downcast_index(index)
            hnsw.hnsw.efSearch = int(meta["ef_search"])
        return cls(index, meta["kind"], meta)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` that appears in the same row of ``found``."""
    hits = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] != PAD_ID)
    return float(hits.any(axis=1).sum() / max(int((truth != PAD_ID).sum()), 1))


def _excluded(ids: np.ndarray, exclude: Exclusions) -> np.ndarray:
    """Whether each ``ids[r, j]`` is an excluded column of row ``r``, vectorised.

    Every (row, column) pair becomes one integer key; the exclusion keys are sorted because
    rows are in order and their columns sorted, so a binary search answers membership.
    """
    n_cols = np.int64(max(int(ids.max(initial=0)), int(exclude.columns.max(initial=0))) + 1)
    excluded_keys = exclude.row_of_each() * n_cols + exclude.columns
    if len(excluded_keys) == 0:
        return np.zeros(ids.shape, dtype=bool)
    keys = np.arange(ids.shape[0], dtype=np.int64)[:, None] * n_cols + ids
    position = np.minimum(np.searchsorted(excluded_keys, keys), len(excluded_keys) - 1)
    return np.asarray(excluded_keys[position] == keys)


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"item vectors must be a non-empty 2-d array, got shape {vectors.shape}")
    return vectors


def _recall_sample(vectors: np.ndarray, queries: np.ndarray | None, n: int, seed: int) -> np.ndarray:
    pool = vectors if queries is None or len(queries) == 0 else _as_float32(queries)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return np.ascontiguousarray(pool[np.sort(chosen)])
