"""The top-k index contract shared by the exact reference and the approximate FAISS indexes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

#: Id returned in a result slot that has no item (catalogue smaller than k, or all excluded).
PAD_ID = -1


@dataclass(frozen=True)
class Exclusions:
    """Per query, the item columns that may not be returned, as CSR row pointers and columns
    (sorted and unique within a row).

    Plain arrays rather than a scipy matrix: building a one-row scipy matrix costs more than the
    search itself when the service answers one request.
    """

    indptr: np.ndarray  # int64, n_queries + 1
    columns: np.ndarray  # int64

    @classmethod
    def from_csr(cls, matrix: sp.csr_matrix) -> Exclusions:
        matrix = sp.csr_matrix(matrix, copy=True)
        matrix.eliminate_zeros()
        matrix.sum_duplicates()  # also sorts each row's columns
        return cls(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64))

    @classmethod
    def one(cls, columns: np.ndarray | None) -> Exclusions:
        """One query's exclusions from columns in any order, repeats allowed."""
        unique = np.unique(np.asarray(columns if columns is not None else (), dtype=np.int64))
        return cls(np.array([0, len(unique)], dtype=np.int64), unique)

    @classmethod
    def sorted_row(cls, columns: np.ndarray) -> Exclusions:
        """One query's exclusions from columns already sorted and unique (a CSR row's)."""
        return cls(np.array([0, len(columns)], dtype=np.int64), columns)

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1] - self.indptr[0])

    def rows(self, start: int, stop: int) -> Exclusions:
        indptr = self.indptr[start : stop + 1]
        return Exclusions(indptr - indptr[0], self.columns[indptr[0] : indptr[-1]])

    def take(self, rows: np.ndarray) -> Exclusions:
        """The exclusions of the given query rows, in that order (vectorised)."""
        counts = self.counts[rows]
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        starts = np.repeat(self.indptr[rows], counts)
        offsets = np.arange(int(indptr[-1])) - np.repeat(indptr[:-1], counts)
        return Exclusions(indptr, self.columns[starts + offsets])

    def row_of_each(self) -> np.ndarray:
        """The query row of each excluded column."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.counts)


ExcludeArg = sp.csr_matrix | Exclusions | None


def as_exclusions(exclude: ExcludeArg, n_rows: int, n_items: int) -> Exclusions | None:
    """``exclude`` as :class:`Exclusions` (None when nothing is excluded), shapes checked."""
    if exclude is None:
        return None
    if not isinstance(exclude, Exclusions):
        if exclude.shape[1] != n_items:
            raise ValueError(f"exclude must have {n_items} columns, got {exclude.shape[1]}")
        exclude = Exclusions.from_csr(exclude)
    if exclude.n_rows != n_rows:
        raise ValueError(f"exclude must have one row per query ({n_rows}), got {exclude.n_rows}")
    return exclude if exclude.nnz else None


class ItemIndex(ABC):
    """Inner-product top-k search over a fixed matrix of item vectors.

    ``search`` returns ``(ids, scores)``, both shaped ``(n_queries, k)``, best first, ties by
    lower item index. Slots without an item hold ``PAD_ID`` and ``-inf``. ``exclude`` holds, per
    query, item columns that may not be returned (seen items, filters, explicit exclusions), as a
    CSR matrix or :class:`Exclusions`.

    A query's result depends on that query and its exclusions only, never on the other queries
    searched with it: the service (one query) and batch scoring (blocks) answer the same.
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
        self, queries: np.ndarray, k: int, exclude: ExcludeArg = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def search_one(
        self, query: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The filled slots of ``search``'s row for one query: ids and scores, best first, fewer
        than ``k`` when too few items remain. ``exclude`` holds item columns (any order, repeats
        allowed)."""
        ids, scores = self.search(one_query(query, self.dim, k)[None, :], k, Exclusions.one(exclude))
        filled = ids[0] != PAD_ID
        return ids[0][filled], scores[0][filled]

    @abstractmethod
    def save(self, path: Path) -> None: ...


def check_queries(queries: np.ndarray, dim: int, k: int) -> np.ndarray:
    """Validate search arguments once for every index; returns C-contiguous float32 queries."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != dim:
        raise ValueError(f"queries must have {dim} columns, got shape {queries.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return queries


def one_query(query: np.ndarray, dim: int, k: int) -> np.ndarray:
    """:func:`check_queries` for ``search_one``: one query (1-d, or 2-d with one row) as a 1-d
    C-contiguous float32 vector."""
    query = np.asarray(query)
    if query.ndim == 2 and len(query) != 1:
        raise ValueError(f"search_one takes one query, got {len(query)}")
    return check_queries(query.reshape(1, -1), dim, k)[0]
