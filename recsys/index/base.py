"""The top-k index contract shared by the exact reference and the approximate FAISS indexes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import scipy.sparse as sp

#: Id returned in a result slot that has no item (catalogue smaller than k, or all excluded).
PAD_ID = -1


class ItemIndex(ABC):
    """Inner-product top-k search over a fixed matrix of item vectors.

    ``search`` returns ``(ids, scores)``, both shaped ``(n_queries, k)``, best first. Slots
    without an item hold ``PAD_ID`` and ``-inf``. ``exclude`` is a CSR matrix with one row per
    query whose non-zero columns may not be returned (seen items, explicit exclusions).
    """

    #: Whether search returns the true top k (the reference others are tested against).
    is_exact: bool = True

    @property
    @abstractmethod
    def n_items(self) -> int: ...

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def search_one(
        self, query: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The filled slots of ``search``'s row for one query: ids and scores, best first, fewer
        than ``k`` when too few items remain. ``exclude`` holds item columns (any order, repeats
        allowed) instead of a CSR row, because building a one-row scipy matrix costs more than
        the search itself when answering one request.

        This default goes through :meth:`search`; indexes override it with a faster path.
        """
        row = None
        if exclude is not None and len(exclude):
            columns = np.unique(np.asarray(exclude, dtype=np.int64))
            indptr = np.array([0, len(columns)])
            row = sp.csr_matrix((np.ones(len(columns), np.float32), columns, indptr), shape=(1, self.n_items))
        ids, scores = self.search(np.reshape(query, (1, -1)), k, row)
        filled = ids[0] != PAD_ID
        return ids[0][filled], scores[0][filled]

    @abstractmethod
    def save(self, path: Path) -> None: ...


def check_queries(queries: np.ndarray, dim: int, k: int, exclude: sp.csr_matrix | None) -> np.ndarray:
    """Validate search arguments once for every index; returns C-contiguous float32 queries."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != dim:
        raise ValueError(f"queries must have {dim} columns, got shape {queries.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if exclude is not None and exclude.shape[0] != queries.shape[0]:
        raise ValueError(f"exclude must have one row per query ({queries.shape[0]}), got {exclude.shape[0]}")
    return queries
