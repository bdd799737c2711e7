"""Exact top-k by blocked matrix products: the reference every approximate index is tested against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.index.base import PAD_ID, ItemIndex, check_queries


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top k of a dense score block, best first; ``-inf`` entries become padding."""
    n_rows, n_cols = scores.shape
    take = min(k, n_cols)
    if take < n_cols:
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    best = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    ids[~np.isfinite(best)] = PAD_ID
    best[ids == PAD_ID] = -np.inf
    if take < k:  # catalogue smaller than k: pad to the requested width
        ids = np.pad(ids, ((0, 0), (0, k - take)), constant_values=PAD_ID)
        best = np.pad(best, ((0, 0), (0, k - take)), constant_values=-np.inf)
    return ids, best


def top_k_one(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k of one score vector, best first, ties by lower index; ``-inf`` entries are left out
    (so fewer than k may come back). One partition and a sort of the few candidates: the 2-d
    :func:`top_k` costs several times more for a single row."""
    n_items = len(scores)
    if k < n_items:
        threshold = np.partition(scores, n_items - k)[n_items - k]
        candidates = np.flatnonzero(scores >= threshold)  # every tie at the threshold, in index order
    else:
        candidates = np.arange(n_items)
    candidate_scores = scores[candidates]
    order = np.argsort(-candidate_scores, kind="stable")[:k]
    ids, best = candidates[order], candidate_scores[order]
    if len(best) and best[-1] == -np.inf:  # excluded items reached the top k
        finite = best != -np.inf
        ids, best = ids[finite], best[finite]
    return ids.astype(np.int64, copy=False), best.astype(np.float32, copy=False)


def mask_excluded(scores: np.ndarray, exclude: sp.csr_matrix | None) -> None:
    """Set the excluded (row, column) pairs of a score block to ``-inf`` in place, vectorised."""
    if exclude is None or exclude.nnz == 0:
        return
    exclude = exclude.tocsr()
    rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
    scores[rows, exclude.indices] = -np.inf


class ExactIndex(ItemIndex):
    """Brute-force inner product with numpy BLAS, in blocks of queries to bound memory."""

    is_exact = True

    def __init__(self, item_vectors: np.ndarray, block_size: int = 4096) -> None:
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.block_size = block_size

    @property
    def n_items(self) -> int:
        return int(self.item_vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim, k, exclude)
        if len(queries) <= self.block_size:  # one block: skip slicing (the service's case)
            block = queries @ self.item_vectors.T
            mask_excluded(block, exclude)
            return top_k(block, k)
        ids = np.empty((len(queries), k), dtype=np.int64)
        scores = np.empty((len(queries), k), dtype=np.float32)
        for start in range(0, len(queries), self.block_size):
            stop = min(start + self.block_size, len(queries))
            block = queries[start:stop] @ self.item_vectors.T
            if exclude is not None:
                mask_excluded(block, exclude[start:stop])
            ids[start:stop], scores[start:stop] = top_k(block, k)
        return ids, scores

    def search_one(
        self, query: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(query, self.dim, k, None)
        if len(queries) != 1:
            raise ValueError(f"search_one takes one query, got {len(queries)}")
        # The same product as search, so both give the same scores to the last bit.
        scores = (queries @ self.item_vectors.T)[0]
        if exclude is not None and len(exclude):
            scores[exclude] = -np.inf
        return top_k_one(scores, k)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "item_vectors.npy", self.item_vectors)

    @classmethod
    def load(cls, path: Path) -> ExactIndex:
        return cls(np.load(path / "item_vectors.npy"))
