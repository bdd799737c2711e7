"""Most-popular items: the baseline every report shows and the cold-start fallback."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.data.recipe import Recipe
from recsys.models.base import FitOptions, ModelConfig, Recommender


class PopularityConfig(ModelConfig):
    window_seconds: int | None = Field(default=None, ge=1)
    """Count only interactions this recent (relative to the newest); None counts all.
    Needs ``FitOptions.features['timestamps']`` (a CSR matrix of epoch seconds aligned with
    the training matrix) to take effect."""


class Popularity(Recommender):
    """Scores an item by how many users interacted with it; every user gets the same ranking.

    As a vector model: every user vector is ``[1]`` and the item vector is ``[count]``.
    """

    name = "popularity"
    Config = PopularityConfig
    recipe = Recipe(values="binary")  # counts users per item
    predicts_ratings = False
    uses_catalog = False
    search_space = ()
    epoch_limit = None
    config: PopularityConfig

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        user_items = sp.csr_matrix(user_items)
        counted = user_items
        timestamps = (options.features or {}).get("timestamps") if options else None
        if self.config.window_seconds is not None and timestamps is not None:
            stamps = sp.csr_matrix(timestamps)
            cutoff = stamps.data.max() - self.config.window_seconds if stamps.nnz else 0
            counted = sp.csr_matrix(
                (stamps.data >= cutoff, stamps.indices, stamps.indptr), shape=stamps.shape
            )
        by_item = sp.csc_matrix(counted)
        by_item.eliminate_zeros()
        counts = np.diff(by_item.indptr).astype(np.float32)
        self.item_factors = counts[:, None]
        self.user_factors = np.ones((user_items.shape[0], 1), dtype=np.float32)
        self._index = None
        return self

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        return np.ones((user_items.shape[0], 1), dtype=np.float32)
