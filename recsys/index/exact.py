"""Exact top-k by blocked matrix products: the reference every approximate index is tested against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.index.base import PAD_ID, ExcludeArg, Exclusions, ItemIndex, as_exclusions, check_queries


def inner_products(queries: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """``queries @ item_vectors.T`` computed so that a query's scores do not depend on how many
    queries are multiplied with it.

    BLAS multiplies a single row with a different kernel (gemv) than a block (gemm), and the two
    differ in the last bits; a lone query is therefore multiplied as a block of two rows, so the
    service's one-query answer equals batch scoring's to the bit.
    """
    if len(queries) == 1:
        return (np.concatenate([queries, queries]) @ item_vectors.T)[:1]
    return queries @ item_vectors.T


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top k of a dense score block, best first, ties by lower index; ``-inf`` entries
    become padding (``PAD_ID`` / ``-inf``), and rows are padded to width ``k``."""
    n_rows, n_cols = scores.shape
    take = min(k, n_cols)
    if take < n_cols:
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        part.sort(axis=1)
        part_scores = np.take_along_axis(scores, part, axis=1)
        # argpartition cuts ties at the k-th score arbitrarily: rows where an item left out ties
        # the lowest chosen score are sorted in full (stable, so the lower indices win).
        threshold = part_scores.min(axis=1, keepdims=True)
        ambiguous = (np.isfinite(threshold[:, 0])) & (
            (scores == threshold).sum(axis=1) > (part_scores == threshold).sum(axis=1)
        )
        if ambiguous.any():
            rows = np.flatnonzero(ambiguous)
            full = np.argsort(-scores[rows], axis=1, kind="stable")[:, :take]
            full.sort(axis=1)
            part[rows] = full
            part_scores[rows] = np.take_along_axis(scores[rows], full, axis=1)
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)).copy()
        part_scores = scores.copy()
    order = np.argsort(-part_scores, axis=1, kind="stable")  # part is in index order: ties by index
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    best = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    ids[~np.isfinite(best)] = PAD_ID
    best[ids == PAD_ID] = -np.inf
    if take < k:  # catalogue smaller than k: pad to the requested width
        ids = np.pad(ids, ((0, 0), (0, k - take)), constant_values=PAD_ID)
        best = np.pad(best, ((0, 0), (0, k - take)), constant_values=-np.inf)
    return ids, best


def mask_excluded(scores: np.ndarray, exclude: Exclusions | None) -> None:
    """Set the excluded (row, column) pairs of a score block to ``-inf`` in place, vectorised."""
    if exclude is None or exclude.nnz == 0:
        return
    scores[exclude.row_of_each(), exclude.columns] = -np.inf


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
        self, queries: np.ndarray, k: int, exclude: ExcludeArg = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim, k)
        exclusions = as_exclusions(exclude, len(queries), self.n_items)
        if len(queries) <= self.block_size:  # one block: skip slicing (the service's case)
            block = inner_products(queries, self.item_vectors)
            mask_excluded(block, exclusions)
            return top_k(block, k)
        ids = np.empty((len(queries), k), dtype=np.int64)
        scores = np.empty((len(queries), k), dtype=np.float32)
        for start in range(0, len(queries), self.block_size):
            stop = min(start + self.block_size, len(queries))
            block = inner_products(queries[start:stop], self.item_vectors)
            if exclusions is not None:
                mask_excluded(block, exclusions.rows(start, stop))
            ids[start:stop], scores[start:stop] = top_k(block, k)
        return ids, scores

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "item_vectors.npy", self.item_vectors)

    @classmethod
    def load(cls, path: Path) -> ExactIndex:
        return cls(np.load(path / "item_vectors.npy"))
