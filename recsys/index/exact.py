"""Exact top-k by blocked matrix products: the reference every approximate index is tested against.

One query and a block of queries get the same answer. BLAS multiplies a single row with another
kernel (gemv) than a block (gemm), and in float32 the two differ in the last bits, enough to swap
two nearly tied items. So the float32 product only picks candidates, ``k`` plus a margin; the
candidates are then scored again in float64 (products of float32 numbers are exact there, and the
sums' rounding stays far below float32 precision) and ranked by that score, ties by lower index.
A list could differ only if more than the margin of items tied the k-th one to the last bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.index.base import (
    PAD_ID,
    ExcludeArg,
    Exclusions,
    ItemIndex,
    as_exclusions,
    check_queries,
    one_query,
)

#: Candidates beyond k that the float32 product passes on to the exact float64 ranking.
RESCORE_MARGIN = 16
#: Float32 scores one block of queries may hold (2^26 = 256 MB); bounds memory at any catalogue size.
BLOCK_SCORES = 1 << 26


def mask_excluded(scores: np.ndarray, exclude: Exclusions | None) -> None:
    """Set the excluded (row, column) pairs of a score block to ``-inf`` in place, vectorised."""
    if exclude is None or exclude.nnz == 0:
        return
    scores[exclude.row_of_each(), exclude.columns] = -np.inf


def exact_top_k(
    queries: np.ndarray, item_vectors: np.ndarray, approximate: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top ``k`` of ``queries @ item_vectors.T``, best first, ties by lower index, padded
    with ``PAD_ID`` / ``-inf`` to width ``k``. ``approximate`` holds the float32 scores with
    excluded items at ``-inf``; it chooses the candidates, which are ranked by exact scores."""
    n_rows, n_items = approximate.shape
    take = min(k + RESCORE_MARGIN, n_items)
    if take < n_items:
        candidates = np.argpartition(-approximate, take - 1, axis=1)[:, :take]
    else:
        candidates = np.broadcast_to(np.arange(n_items), (n_rows, n_items)).copy()
    candidates.sort(axis=1)  # index order, so that the stable sort below breaks ties by index
    excluded = np.take_along_axis(approximate, candidates, axis=1) == -np.inf
    wide = item_vectors[candidates].astype(np.float64)  # (rows, candidates, dim)
    exact = np.matmul(wide, queries.astype(np.float64)[:, :, None])[:, :, 0].astype(np.float32)
    exact[excluded] = -np.inf
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    ids = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    best = np.take_along_axis(exact, order, axis=1)
    ids[best == -np.inf] = PAD_ID
    if ids.shape[1] < k:  # catalogue smaller than k: pad to the requested width
        ids = np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=PAD_ID)
        best = np.pad(best, ((0, 0), (0, k - best.shape[1])), constant_values=-np.inf)
    return ids, best


def exact_top_k_one(
    query: np.ndarray, item_vectors: np.ndarray, approximate: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_top_k` of one query (1-d arrays), the same result with less bookkeeping:
    the service answers one query per request."""
    n_items = len(approximate)
    take = min(k + RESCORE_MARGIN, n_items)
    if take < n_items:
        # A value partition and a comparison: cheaper than argpartition, and in index order.
        # Every candidate is above -inf, so none is an excluded item.
        threshold = np.partition(approximate, n_items - take)[n_items - take]
        candidates = np.flatnonzero(
            approximate >= threshold if threshold > -np.inf else approximate > -np.inf
        )
        exact = (item_vectors[candidates].astype(np.float64) @ query.astype(np.float64)).astype(np.float32)
    else:
        candidates = np.arange(n_items)
        exact = (item_vectors.astype(np.float64) @ query.astype(np.float64)).astype(np.float32)
        exact[approximate == -np.inf] = -np.inf
    order = np.argsort(-exact, kind="stable")[:k]
    ids = candidates[order].astype(np.int64)
    best = exact[order]
    ids[best == -np.inf] = PAD_ID
    if len(ids) < k:
        ids = np.pad(ids, (0, k - len(ids)), constant_values=PAD_ID)
        best = np.pad(best, (0, k - len(best)), constant_values=-np.inf)
    return ids, best


class ExactIndex(ItemIndex):
    """Brute-force inner product with numpy BLAS, in blocks of queries to bound memory."""

    is_exact = True

    def __init__(self, item_vectors: np.ndarray, block_size: int = 4096) -> None:
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.block_size = max(1, min(block_size, BLOCK_SCORES // max(1, len(self.item_vectors))))

    @property
    def n_items(self) -> int:
        return int(self.item_vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def search(
        self, queries: np.ndarray, k: int, exclude: ExcludeArg = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim, k)
        exclusions = as_exclusions(exclude, len(queries), self.n_items)
        if len(queries) == 1:  # the service's case: a matrix-vector product, no slicing
            scores = self.item_vectors @ queries[0]
            if exclusions is not None:
                scores[exclusions.columns] = -np.inf
            ids, best = exact_top_k_one(queries[0], self.item_vectors, scores, k)
            return ids[None, :], best[None, :]
        ids = np.empty((len(queries), k), dtype=np.int64)
        best = np.empty((len(queries), k), dtype=np.float32)
        for start in range(0, len(queries), self.block_size):
            stop = min(start + self.block_size, len(queries))
            block = queries[start:stop] @ self.item_vectors.T
            if exclusions is not None:
                mask_excluded(block, exclusions.rows(start, stop))
            ids[start:stop], best[start:stop] = exact_top_k(queries[start:stop], self.item_vectors, block, k)
        return ids, best

    def search_one(
        self, query: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``search``'s answer for one query without its block bookkeeping: the excluded columns
        (any order, repeats allowed) are masked as they are, since a score set to ``-inf`` twice
        is still ``-inf``; no sorting, no ``Exclusions``. The service answers one query per request."""
        query = one_query(query, self.dim, k)
        scores = self.item_vectors @ query
        if exclude is not None and len(exclude):
            scores[exclude] = -np.inf
        ids, best = exact_top_k_one(query, self.item_vectors, scores, k)
        filled = ids != PAD_ID
        return ids[filled], best[filled]

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "item_vectors.npy", self.item_vectors)

    @classmethod
    def load(cls, path: Path) -> ExactIndex:
        return cls(np.load(path / "item_vectors.npy"))
