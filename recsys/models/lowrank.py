"""Low-rank denoising linear autoencoder (Steck, "Autoencoders that don't overfit towards the
identity", NeurIPS 2020), in closed form: EASE's quality in vectors a FAISS index can serve.

The full-rank denoising autoencoder learns from the binary history matrix X

    B = argmin ||X - X B||^2 + ||Lambda^1/2 B||^2 = A^-1 G,   G = X^T X,   A = G + Lambda

where dropout of the input with probability ``dropout`` acts as the item-wise penalty
``Lambda = dropout / (1 - dropout) * diag(G) + l2 I`` (popular items are penalised more, which
is what keeps B from learning the identity). The best B of rank ``r`` for the same objective is
a reduced-rank ridge regression: ``B_r = B V V^T`` with V the top ``r`` eigenvectors of
``B^T A B = G A^-1 G``. A user's score for item ``i`` is then

    x_u B_r[:, i] = (x_u B V) . V[i]

so the item vectors are the rows of V and a user's vector is their history times the encoder
``W = B V`` (``fold_in``: one sparse-dense product for any number of users). Both have ``rank``
numbers, so serving costs what iALS's does.

The fit inverts A by Cholesky (the dense ``n_items^2`` step, as in EASE, but one matrix alive
instead of three) and runs a seeded randomised subspace iteration for V whose products go through
the sparse X and A^-1, never forming ``G A^-1 G``.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from scipy.linalg import qr, solve_triangular

from recsys.data.recipe import Recipe
from recsys.errors import ConfigError, DataError
from recsys.models.base import FitOptions, ModelConfig, Recommender, SearchRange
from recsys.runtime.memory import check_dense_items_memory

#: Dense n_items x n_items float32 arrays alive at the peak of a fit (A, factored in place).
PEAK_MATRICES = 1
#: Extra columns of the randomised subspace beyond ``rank`` (Halko et al. 2011 suggest 5-10%).
OVERSAMPLE = 32


class LowRankAEConfig(ModelConfig):
    """Hyper-parameters of the low-rank denoising autoencoder. Defaults were chosen on the
    validation carve-outs (seed 43) of the Protocol K train parts (seed 42) of ml-100k and
    ml-latest-small (``benchmarks/quality_check.py lowrank-ae --grid``): on ml-100k rank 256 with
    l2 500 scored 0.2717 nDCG@10 (EASE 0.2659), l2 100 0.2495, l2 1000 at rank 512 0.2682; on
    ml-latest-small rank 512 with l2 300 scored 0.2276 (EASE 0.2272). Dropout 0.33 and 0.5 were
    within 0.001 of each other. Too little regularisation costs the most."""

    rank: int = Field(default=512, ge=1)
    """Length of the user and item vectors (capped at the number of items)."""
    dropout: float = Field(default=0.33, ge=0, lt=1)
    """Input dropout probability the penalty stands for: ``dropout / (1 - dropout) * diag(G)``."""
    l2: float = Field(default=400.0, gt=0)
    """Plain L2 weight added to every item's penalty (keeps A positive definite)."""
    power_iterations: int = Field(default=4, ge=0)
    """Subspace iterations of the randomised eigen-solver (more: closer to the exact top ``rank``)."""
    max_items: int = Field(default=20_000, ge=1)
    """Largest catalogue fitted: the fit factorises one dense max_items^2 matrix (20,000: 1.6 GB)."""


class LowRankAE(Recommender):
    """Closed-form low-rank linear autoencoder; user vector = history x encoder, item vector = V."""

    name = "lowrank-ae"
    Config = LowRankAEConfig
    recipe = Recipe(values="binary")  # X is the binary history matrix of the paper
    predicts_ratings = False
    uses_catalog = False
    search_space = (
        SearchRange("rank", 64, 1024, log=True, integer=True),
        SearchRange("dropout", 0.05, 0.6),
        SearchRange("l2", 1.0, 500.0, log=True),
    )
    epoch_limit = None
    fits_any_catalogue = False  # one dense items x items matrix: refuses beyond max_items
    config: LowRankAEConfig

    def __init__(self, config: ModelConfig | None = None, **params: object) -> None:
        super().__init__(config, **params)
        self.encoder: np.ndarray | None = None
        """``W = B V`` (items x rank): a history row times W is the user's vector."""

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        del options  # closed form: no epochs, no validation, nothing to resume or warm-start
        x = sp.csr_matrix(self.recipe.apply_matrix(user_items), dtype=np.float32)
        check_memory(x.shape[1], self.config.max_items)
        self.encoder, self.item_factors = closed_form(x, self.config)
        self.user_factors = self.fold_in(x)
        self.history = []
        self._index = None
        return self

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        if self.encoder is None:
            self._require_items()  # raises NotFittedError
            raise DataError(f"the {self.name} model has no encoder; it was saved incompletely")
        rows = self.recipe.apply_matrix(user_items)
        if rows.shape[1] != len(self.encoder):
            raise DataError(f"user_items must have {len(self.encoder)} columns, got {rows.shape[1]}")
        return np.asarray(sp.csr_matrix(rows, dtype=np.float32) @ self.encoder, dtype=np.float32)

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {} if self.encoder is None else {"encoder": self.encoder}

    def _restore_extra_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.encoder = arrays.get("encoder")


def history_times_encoder(encoder: np.ndarray, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """One history's vector, ``values`` (float32) at the sorted, unique ``columns`` times
    ``encoder``, summed as :meth:`LowRankAE.fold_in`'s CSR x dense product sums a row: each value
    times its encoder row, rounded to float32, added one row after another in column order (a
    reduction over the first axis runs in that order). So it is bit for bit the row a block
    fold-in gives; a BLAS vector x matrix product sums in its own order and differed from it in
    the last bit for about a third of ml-100k histories. Binary values (the recipe's) skip the
    multiplication by 1: the same floats, and as fast as the BLAS product for 20 items."""
    rows = encoder.take(columns, axis=0)
    if not (values == 1).all():
        rows *= values[:, None]
    encoded: np.ndarray = np.add.reduce(rows, axis=0)
    return encoded


def check_memory(n_items: int, max_items: int) -> None:
    """Refuse catalogues beyond ``max_items`` or beyond the memory available, naming both."""
    check_dense_items_memory(
        "lowrank-ae", n_items, max_items, matrices=PEAK_MATRICES,
        alternatives="train ials, whose memory grows with the catalogue, not its square",
    )  # fmt: skip


def closed_form(x: sp.csr_matrix, config: LowRankAEConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(W, V)`` for the binary matrix ``x``: encoder ``B V`` and item vectors ``V`` (items x r)."""
    from scipy.linalg import blas, lapack

    n_items = x.shape[1]
    gram = np.asarray((x.T @ x).toarray(), dtype=np.float32)
    penalty = config.dropout / (1.0 - config.dropout) * np.diag(gram) + config.l2
    gram[np.diag_indices_from(gram)] += penalty.astype(np.float32)  # now A = G + Lambda
    # Invert A in place by Cholesky (A is symmetric positive definite); only its upper triangle
    # is kept, and the symmetric product ssymm reads just that triangle, so one dense matrix is
    # alive at a time and each product runs at matrix-multiply speed.
    factor, info = lapack.spotrf(gram, lower=False, overwrite_a=True)
    if info != 0:
        raise ConfigError(f"lowrank-ae: G + Lambda is not positive definite (info {info}); raise l2")
    inverse, info = lapack.spotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ConfigError(f"lowrank-ae: inverting G + Lambda failed (info {info})")
    del factor
    xt = sp.csr_matrix(x.T)

    def ridge(block: np.ndarray) -> np.ndarray:
        """B @ block = A^-1 G block, through the sparse X and the upper triangle of A^-1."""
        gram_block = np.asarray(xt @ (x @ block), dtype=np.float32)
        solved: np.ndarray = blas.ssymm(1.0, inverse, gram_block, side=0, lower=0)
        return solved

    def gram_ridge(block: np.ndarray) -> np.ndarray:
        """(G A^-1 G) @ block: the matrix whose top eigenvectors are V."""
        return np.asarray(xt @ (x @ ridge(block)), dtype=np.float32)

    rank = min(config.rank, n_items)
    width = min(rank + OVERSAMPLE, n_items)
    rng = np.random.default_rng(config.seed)
    basis = orthonormal(gram_ridge(rng.standard_normal((n_items, width), dtype=np.float32)))
    for _ in range(config.power_iterations):
        basis = orthonormal(gram_ridge(basis))
    # Rayleigh-Ritz on the subspace: eigenvectors of the small width x width projection.
    projected = basis.T @ gram_ridge(basis)
    values, vectors = np.linalg.eigh((projected + projected.T) / 2)
    top = np.argsort(values)[::-1][:rank]
    items = np.ascontiguousarray(basis @ vectors[:, top], dtype=np.float32)
    encoder = np.ascontiguousarray(ridge(items), dtype=np.float32)
    return encoder, items


def orthonormal(block: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of ``block`` by Cholesky QR, twice (CholQR2).

    Matrix products only: a Householder QR of a 9,700 x 544 block took longer than the whole
    inverse on two cores. The Gram matrix is float64, so blocks with a condition number up to
    about 1e7 stay exact enough; beyond that, or for rank-deficient blocks, Householder QR.
    """
    basis: np.ndarray = np.asarray(block, dtype=np.float64)
    try:
        for _ in range(2):
            upper = np.linalg.cholesky(basis.T @ basis).T
            basis = solve_triangular(upper, basis.T, trans="T", lower=False).T
    except np.linalg.LinAlgError:
        basis, _ = qr(np.asarray(block, dtype=np.float64), mode="economic")
    return np.ascontiguousarray(basis, dtype=np.float32)
