"""Item filters: titles and genres aligned to a version's item indices, and the genre filter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from recsys.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


class UnknownGenreError(DataError):
    """A genre filter names a genre the catalogue does not have."""


@dataclass(frozen=True)
class Catalogue:
    """Titles and genres aligned to the model's item indices, with a genre membership matrix."""

    titles: np.ndarray  # object: str or None
    genres: list[list[str]]
    genre_names: dict[str, int]
    genre_matrix: sp.csc_matrix  # items x genres, 1 where the item has the genre

    @classmethod
    def empty(cls, n_items: int) -> Catalogue:
        return cls.from_columns(n_items, None, None)

    @classmethod
    def from_frame(cls, n_items: int, frame: pd.DataFrame | None) -> Catalogue:
        """From ``recsys.data.catalog.item_catalog`` (columns ``title`` and ``genres``, one row
        per item index); ``None`` gives a catalogue without titles or genres."""
        if frame is None or len(frame) == 0:
            return cls.empty(n_items)
        titles = frame["title"].astype(object).where(frame["title"].notna(), None).to_numpy()
        return cls.from_columns(n_items, titles, list(frame["genres"]))

    @classmethod
    def from_columns(
        cls, n_items: int, titles: np.ndarray | None, genres: Sequence[object] | None
    ) -> Catalogue:
        """From one title (None when unknown) and one list of genres per item index, as
        ``recsys.data.catalog.item_columns`` reads them; ``None`` (or no entries) gives a
        catalogue without titles or genres."""
        if titles is None or genres is None or len(titles) == 0:
            empty = sp.csc_matrix((n_items, 0), dtype=np.float32)
            return cls(np.full(n_items, None, dtype=object), [[] for _ in range(n_items)], {}, empty)
        lists = [list(value) if isinstance(value, list | tuple | np.ndarray) else [] for value in genres]
        # One flat array of every (item, genre) pair, coded in one np.unique: a Python loop over
        # the pairs took seconds of a service start at 62k items.
        counts = np.fromiter((len(names) for names in lists), dtype=np.int64, count=len(lists))
        flat = np.asarray([str(name) for names in lists for name in names], dtype=object)
        distinct, cols = np.unique(flat.astype(str), return_inverse=True)
        names = {str(name): code for code, name in enumerate(distinct)}
        rows = np.repeat(np.arange(len(lists), dtype=np.int64), counts)
        ones = np.ones(len(rows), np.float32)
        matrix = sp.csc_matrix((ones, (rows, cols.ravel())), shape=(n_items, len(names)), dtype=np.float32)
        return cls(np.asarray(titles, dtype=object), lists, names, matrix)

    def filtered_out(self, include: Sequence[str], exclude: Sequence[str]) -> np.ndarray:
        """Item indices the genre filters leave out (sorted): with ``include``, items that have
        none of those genres; with ``exclude``, items that have any of those."""
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
