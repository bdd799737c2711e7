"""EASE (Steck, "Embarrassingly Shallow Autoencoders", WWW 2019): a closed-form item-item model.

    B = I - P / diag(P),  P = (X^T X + l2 I)^-1,  diag(B) = 0

The score of item ``i`` for a user with history row ``x`` is ``x . B[:, i]``, an inner product,
so EASE serves through the same contract as every model: the item vector of ``i`` is column
``i`` of B (``n_items`` numbers) and a user's vector is their binarised history row, folded in
from the row at every request. B is dense, ``n_items^2`` floats, so EASE is for catalogues up to
``max_items`` (20,000 by default, 1.6 GB for B); memory is checked before fitting.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.data.recipe import Recipe
from recsys.errors import ConfigError, DataError
from recsys.models.base import FitOptions, ModelConfig, Recommender, SearchRange
from recsys.runtime.memory import check_dense_items_memory

#: Dense n_items x n_items float32 arrays alive at the peak of a fit (the factor, its inverse
#: and the symmetric copy).
PEAK_MATRICES = 3


class EASEConfig(ModelConfig):
    """Hyper-parameters of EASE. ``l2`` 500 was the best of 100/250/500/1000 on the validation
    carve-out of ml-100k's Protocol K train part (docs/benchmarks.md, "Recipes")."""

    l2: float = Field(default=500.0, gt=0)
    """L2 weight added to the diagonal of the Gram matrix X^T X."""
    max_items: int = Field(default=20_000, ge=1)
    """Largest catalogue EASE fits: B has max_items^2 floats (20,000 items: 1.6 GB)."""


class EASE(Recommender):
    """Closed-form linear item-item autoencoder; item vectors are the columns of B."""

    name = "ease"
    Config = EASEConfig
    recipe = Recipe(values="binary")  # X is the binary history matrix of the paper
    predicts_ratings = False
    uses_catalog = False
    search_space = (SearchRange("l2", 10.0, 5000.0, log=True),)
    epoch_limit = None
    fits_any_catalogue = False  # one dense items x items matrix: refuses beyond max_items
    config: EASEConfig

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        del options  # closed form: no epochs, no validation, nothing to resume or warm-start
        x = self.recipe.apply_matrix(user_items)
        check_memory(x.shape[1], self.config.max_items)
        self.item_factors = closed_form(x, self.config.l2)
        self.user_factors = None  # a user's vector is their history row (fold_in)
        self.history = []
        self._index = None
        return self

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        items = self._require_items()
        rows = self.recipe.apply_matrix(user_items)
        if rows.shape[1] != len(items):
            raise DataError(f"user_items must have {len(items)} columns, got {rows.shape[1]}")
        return np.asarray(rows.toarray(), dtype=np.float32)

    def user_vectors(self, userids: np.ndarray, rows: sp.csr_matrix | None = None) -> np.ndarray:
        """The users' history rows: EASE keeps no per-user state, so ``rows`` are required."""
        if rows is None:
            raise ConfigError("EASE scores from the users' history rows; pass them (one row per user)")
        return self.fold_in(rows)


def check_memory(n_items: int, max_items: int) -> None:
    """Refuse catalogues beyond ``max_items`` or beyond the memory available, naming both."""
    check_dense_items_memory(
        "EASE", n_items, max_items, matrices=PEAK_MATRICES,
        alternatives="train ials or two-tower, whose memory grows with the catalogue, not its square",
    )  # fmt: skip


def closed_form(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """Rows of the result are the columns of B for the binary matrix ``x`` (item vectors)."""
    from scipy.linalg import lapack

    gram = np.asarray((x.T @ x).toarray(), dtype=np.float32)
    gram[np.diag_indices_from(gram)] += np.float32(l2)
    # Cholesky inverse: half the work of a general inverse, and X^T X + l2 I is symmetric
    # positive definite. Float32 keeps ml-latest-small's 9.7k items to seconds.
    factor, info = lapack.spotrf(gram, lower=False, overwrite_a=True)
    if info != 0:
        raise ConfigError(f"EASE: the regularised Gram matrix is not positive definite (info {info})")
    upper, info = lapack.spotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ConfigError(f"EASE: inverting the Gram matrix failed (info {info})")
    inverse = np.triu(upper)
    inverse += np.triu(upper, 1).T
    del upper, factor
    # Row i of -P / diag(P) is column i of B because P is symmetric.
    inverse /= -np.diag(inverse).copy()[:, None]
    np.fill_diagonal(inverse, 0.0)
    return inverse
