"""A hand-made vector model for retrieval and serving tests (vectors are set by the test)."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp

from recsys.models.base import FitOptions, Recommender


class MeanOfItems(Recommender):
    """Vectors set by the test; fold-in is the value-weighted mean of the history's item vectors."""

    name = "mean-of-items"

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        return self

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        weights = sp.csr_matrix(user_items)
        totals = np.maximum(np.asarray(weights.sum(axis=1)), 1e-9)
        return np.asarray(weights @ self._require_items() / totals, dtype=np.float32)
