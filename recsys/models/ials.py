"""Implicit ALS: weighted matrix factorization (Hu, Koren and Volinsky 2008), batched in TensorFlow.

Every observed pair has preference 1 and confidence ``1 + alpha * value``; every other pair has
preference 0 and confidence 1. Each iteration solves the regularised weighted least-squares
problem exactly for all users (items fixed), then for all items (users fixed). The dense part
``Y^T Y`` is shared by all rows, so a row's system only adds its own observed items:

    (Y^T Y + Y_u^T (C_u - I) Y_u + reg_u I) x_u = Y_u^T C_u p_u

The default solver runs a few conjugate-gradient steps warm-started from the previous factors
(as benfred/implicit does): memory grows with the number of interactions, never with factors
squared per row, which is what lets 25M interactions train in a few GB. On the CPU the CG kernel
is compiled by numba (:mod:`recsys.models.ials_cpu`, 1.5-1.7x implicit's time per iteration at
5M-25M interactions); on a GPU it is a TensorFlow function (gathers and segment sums over blocks
of rows). The exact solver builds each row's matrix and solves it by Cholesky in TensorFlow;
fold-in of new users solves exactly in numpy.

A warm start (``FitOptions.warm_start``) keeps the previous version's vectors, solves the users and
then the items it did not know exactly against them, and runs at most ``warm_start_epochs``
sweeps, stopping at the first that does not improve validation: it needs one to three sweeps where
a fit from random vectors needs five to ten (``benchmarks/warm_start_benchmark.py``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from scipy.linalg import lapack

from recsys.data.recipe import Recipe
from recsys.errors import ConfigError, DataError
from recsys.models.base import EpochConfig, FitOptions, Recommender, SearchRange, WarmStart
from recsys.runtime.device import gpu_possible, import_tensorflow
from recsys.runtime.epochs import StoppingRule

if TYPE_CHECKING:
    from recsys.models.ials_distributed import ShardedSweeps
    from recsys.runtime.cluster import RayEngine

logger = logging.getLogger(__name__)

#: Floats one block's largest temporary may hold (2^26 floats = 256 MB); bounds memory at any scale.
BLOCK_FLOATS = 1 << 26
#: Floats of one conjugate-gradient block's ``interactions x factors`` temporaries (2^21 = 8 MB).
#: Each CG step streams them several times; blocks that stay in the CPU cache made a sweep about
#: 1.5x faster on ml-100k than one large block (benchmarks/ials_benchmark.py).
CG_BLOCK_FLOATS = 1 << 21
#: Conjugate-gradient steps that solve a warm start's new rows from zero (close to exact).
NEW_ROW_CG_STEPS = 12


class ImplicitALSConfig(EpochConfig):
    """Hyper-parameters of implicit ALS. Defaults are the best mean validation nDCG@10 over ml-100k
    and ml-latest-small: Protocol K train part (seed 42), validation carve-out (seed 43), early
    stopping as in ``recsys train`` (``benchmarks/quality_check.py ials --grid``).
    The optimum is a broad plateau (mean 0.2570; regularization 4-9, frequency_exponent 0.3-0.45,
    alpha 2-6 all within 0.001). 192 factors scored 0.2576, within noise, at 1.5x the fit time, so
    128 stay. Constant regularization (exponent 0, the form of benfred/implicit) is about 0.008
    worse at its best (reg 50, alpha 5-10)."""

    factors: int = Field(default=128, ge=1)
    """Length of the user and item vectors."""
    regularization: float = Field(default=6.0, ge=0)
    """L2 weight ``reg``. Weights are unnormalised (confidence sums grow with the data), so good
    values are in the tens to hundreds for MovieLens-sized data."""
    frequency_exponent: float = Field(default=0.4, ge=0, le=2)
    """Frequency-scaled regularisation: a row with ``n`` observed pairs gets
    ``reg * (1 + n) ** frequency_exponent``. 0 is the classic constant weight."""
    alpha: float = Field(default=4.0, ge=0)
    """Confidence of an observed pair is ``1 + alpha * value``."""
    solver: Literal["cg", "cholesky"] = "cg"
    """``cg``: a few conjugate-gradient steps per sweep (fast, light); ``cholesky``: exact solve."""
    cg_steps: int = Field(default=3, ge=1)
    """Conjugate-gradient steps per row and sweep (warm-started, so few are needed)."""
    init_scale: float = Field(default=0.01, gt=0)
    """Standard deviation of the random initial vectors."""
    epochs: int = Field(default=15, ge=1)
    """Alternating sweeps (users then items); the maximum when early stopping. Formerly
    ``iterations`` (still accepted)."""
    min_epochs: int = Field(default=5, ge=1)
    """Early stopping keeps at least this many sweeps from random vectors: 2 sweeps scored 0.92x
    of 5 on an ml-100k split, where one noisy validation peak had chosen 2."""
    warm_start_epochs: int = Field(default=3, ge=1)
    """Most sweeps from a warm start (capped by ``epochs``). The previous vectors are already
    near the optimum, so early stopping there ends at the first sweep that does not improve.
    Formerly ``warm_start_iterations`` (still accepted)."""

    FORMER_NAMES: ClassVar[dict[str, str]] = {
        **EpochConfig.FORMER_NAMES,
        "warm_start_iterations": "warm_start_epochs",
    }


class ImplicitALS(Recommender):
    """Implicit-feedback matrix factorization trained by alternating least squares."""

    name = "ials"
    Config = ImplicitALSConfig
    # Binary beat ratings as confidence on the validation splits of both MovieLens sets
    # loaded with their ratings (docs/benchmarks.md, "Recipes").
    recipe = Recipe(values="binary")
    predicts_ratings = False
    uses_catalog = False
    search_space = (
        SearchRange("factors", 32, 256, log=True, integer=True),
        # Unnormalised weights want tens to hundreds on MovieLens-sized data.
        SearchRange("regularization", 1e-2, 300.0, log=True),
        SearchRange("alpha", 1.0, 50.0, log=True),
        SearchRange("frequency_exponent", 0.0, 1.0),
    )
    epoch_limit = "epochs"
    engines = ("local", "ray")
    config: ImplicitALSConfig

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        options = options or FitOptions()
        with self.epoch_plan(user_items, options.warm_start, options.engine) as plan:
            self._run_epochs(plan.step, options, limit=plan.limit, rule=plan.rule)
        return self

    @contextlib.contextmanager
    def epoch_plan(
        self, user_items: sp.csr_matrix, warm: WarmStart | None = None, engine: RayEngine | None = None
    ) -> Iterator[EpochPlan]:
        """Everything :meth:`fit` hands the epoch loop: the sweeps from their initial vectors
        (here, or sharded across ``engine``'s Ray workers while the context is open), the epoch
        limit and the stopping rule (a warm start's, or None for the config's). A model that
        contains iALS (the ``ials-lowrank`` blend) runs the same sweeps in its own loop."""
        config = self.config
        confidence = self._confidence_matrix(user_items)
        item_confidence = sp.csr_matrix(confidence.T)
        n_users, n_items = confidence.shape
        users, items = self._initial_factors(n_users, n_items, warm)
        if warm is not None:
            users, items = self._solve_new_rows(confidence, item_confidence, users, items, warm)
        rule = None
        if warm is not None:
            # From a warm start every sweep is a small correction: the first one that does not
            # help validation says the vectors have caught up with the new data.
            rule = replace(self.stopping_rule(), patience=1, min_epochs=1)
        limit = min(config.epochs, config.warm_start_epochs) if warm is not None else config.epochs
        with contextlib.ExitStack() as stack:
            if engine is None:
                step: _Sweeps | ShardedSweeps = _Sweeps(self, confidence, item_confidence, users, items)
            else:  # half-steps sharded by rows across Ray workers
                from recsys.models.ials_distributed import ShardedSweeps

                step = stack.enter_context(
                    ShardedSweeps(self, confidence, item_confidence, users, items, engine)
                )
            yield EpochPlan(step=step, limit=limit, rule=rule)

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        """Exact least-squares vectors of new users against the fixed item vectors.

        Numpy only: the service folds in users after every feedback event and must not import
        TensorFlow for it. Rows are solved in blocks, never one Python iteration per user.
        """
        items = self._require_items()
        confidence = self._confidence_matrix(user_items)
        if confidence.shape[1] != len(items):
            raise DataError(f"user_items must have {len(items)} columns, got {confidence.shape[1]}")
        return self._exact_rows(confidence, items)

    def fold_in_one(self, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
        """One history's exact vector, the row ``fold_in`` would solve, without building sparse
        matrices: the service folds in one history per request, and scipy's constructors and the
        block bookkeeping cost more than the ``factors x factors`` solve itself."""
        items = self._require_items()
        values = np.asarray(values, dtype=np.float32)
        observed = values != 0  # explicit zeros are no interaction (fold_in drops them too)
        if not observed.all():
            columns, values = columns[observed], values[observed]
        if len(values) and values.min() < 0:
            raise DataError(
                f"implicit ALS needs non-negative interaction values, got {values.min()}; "
                "map dislikes to 0 or drop them"
            )
        vectors_of = items[columns].astype(np.float64)  # exact; reads half the bytes of the wide copy
        weights = (values * self.config.alpha).astype(np.float64)  # C - 1, in float32 as fold_in
        reg = self.config.regularization * (1.0 + len(values)) ** self.config.frequency_exponent
        vector = None
        if 0 < len(values) <= items.shape[1] // 2 and reg > 0:
            vector = self._short_history_solve(items, vectors_of, weights, reg)
        if vector is None:
            _, gram = self._fixed_side(items)
            system = gram + (vectors_of.T * weights) @ vectors_of
            system.flat[:: len(system) + 1] += reg  # the diagonal
            target = (1.0 + weights) @ vectors_of  # Y_u^T C_u p_u, p = 1
            # Cholesky (LAPACK's dposv, called directly): the system is positive definite whenever
            # reg > 0, and this solve costs half of np.linalg.solve's. LU for anything else.
            _, vector, info = lapack.dposv(system, target)
            if info != 0:
                vector = np.linalg.solve(system, target)
        return np.asarray(vector, dtype=np.float32)[None]

    def prepare_fold_in(self) -> None:
        """The Gram matrix of the item vectors and its eigendecomposition, which
        :meth:`fold_in_one` reuses for every history (the eigendecomposition costs some 10 ms at
        128 factors, far more than one history's solve). Nothing without item vectors."""
        if self.item_factors is None:
            return
        if self.config.regularization > 0 and self.item_factors.shape[1] >= 2:
            self._gram_eigen(self.item_factors)  # short histories' solve (and the Gram matrix)
        else:
            self._fixed_side(self.item_factors)  # only the f x f solve runs

    def _short_history_solve(
        self, items: np.ndarray, vectors_of: np.ndarray, weights: np.ndarray, reg: float
    ) -> np.ndarray | None:
        """:meth:`fold_in_one`'s system for a history of ``n`` items, ``n`` at most half the
        factors, solved in float64 through an ``n x n`` system instead of the ``f x f`` one.

        With the Gram matrix's eigendecomposition ``Y^T Y = Q L Q^T`` (once per item vectors),
        the history's vectors in that basis ``Z = Y_u Q``, ``D = L + reg I`` (diagonal) and
        ``S = W^1/2 Z`` (``W`` the weights ``C - 1``), the Woodbury identity gives

            x = Q (D^-1 b' - D^-1 S^T (I + S D^-1 S^T)^-1 S D^-1 b'),   b' = Q^T Y_u^T C_u p_u

        The ``n x n`` matrix has eigenvalues of at least 1 and ``D`` at least ``reg``, so this is
        as accurate as the Cholesky solve (relative differences to np.linalg.solve of 1e-14 on
        ml-100k, both): the float32 vector is the same. At 128 factors and 20 items it costs a
        quarter of the ``f x f`` Cholesky (``docs/benchmarks.md``, serving). None when a
        factorisation fails (the caller then solves the ``f x f`` system)."""
        eigenvalues, basis = self._gram_eigen(items)
        diagonal = eigenvalues + reg
        if diagonal.min() <= 0:
            return None
        inverse = 1.0 / diagonal
        z = vectors_of @ basis
        target = (1.0 + weights) @ z  # b' = Q^T Y_u^T C_u p_u, p = 1
        scaled = z * np.sqrt(weights)[:, None]  # S
        over = scaled * inverse  # S D^-1
        capacitance = over @ scaled.T
        capacitance.flat[:: len(capacitance) + 1] += 1.0
        _, correction, info = lapack.dposv(capacitance, over @ target)
        if info != 0:
            return None
        vector: np.ndarray = basis @ (inverse * target - over.T @ correction)
        return vector

    # --- the solve ------------------------------------------------------------------------------

    def _confidence_matrix(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        """``C - 1`` (``alpha * value``) on the observed pairs, explicit zeros dropped."""
        matrix = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
        if not matrix.data.all():  # checks first: each scipy call costs more than a served fold-in's solve
            matrix.eliminate_zeros()
        if not matrix.has_sorted_indices:
            matrix.sort_indices()
        if matrix.nnz and matrix.data.min() < 0:
            raise DataError(
                f"implicit ALS needs non-negative interaction values, got {matrix.data.min()}; "
                "map dislikes to 0 or drop them"
            )
        matrix.data *= self.config.alpha
        return matrix

    def _regularization(self, confidence: sp.csr_matrix) -> np.ndarray:
        """Each row's weight ``reg * (1 + n) ** frequency_exponent``, ``n`` its observed pairs."""
        counts = np.diff(confidence.indptr)
        config = self.config
        return (config.regularization * (1.0 + counts) ** config.frequency_exponent).astype(np.float32)

    def _side(self, confidence: sp.csr_matrix, solver: str) -> _Side:
        """One side's rows as the solver wants them, prepared once per fit: the CPU CG kernel reads
        the CSR matrix as it is; the TensorFlow kernels (GPU CG, Cholesky) take it in blocks."""
        blocks = self._blocks(confidence, solver) if solver != "cg" or _cg_kernel() == "tensorflow" else None
        return _Side(confidence=confidence, reg=self._regularization(confidence), blocks=blocks)

    def _blocks(self, confidence: sp.csr_matrix, solver: str) -> list[_Block]:
        """The rows of ``confidence`` cut into blocks whose temporaries fit the memory budget,
        converted to tensors once per fit."""
        tf = import_tensorflow()
        factors = self.config.factors
        counts = np.diff(confidence.indptr)
        reg = self._regularization(confidence)
        if solver == "cg":
            order = np.arange(confidence.shape[0])
            ranges = _row_blocks(counts, max_nnz=max(1, CG_BLOCK_FLOATS // factors), max_rows=1 << 20)
        else:  # rows sorted by length so that padding each block to its longest row wastes little
            order = np.argsort(counts, kind="stable")
            ranges = _padded_blocks(counts[order], factors)
        blocks = []
        for start, stop in ranges:
            rows = order[start:stop]
            block = confidence[rows] if solver != "cg" else confidence[start:stop]
            local_rows = np.repeat(np.arange(len(rows), dtype=np.int32), np.diff(block.indptr))
            blocks.append(
                _Block(
                    rows=rows,
                    tensors=(
                        tf.constant(local_rows),
                        tf.constant(block.indices.astype(np.int32)),
                        tf.constant(block.indptr.astype(np.int64)),
                        tf.constant(block.data),
                        tf.constant(reg[rows]),
                    ),
                )
            )
        return blocks

    def _solve(
        self,
        side: _Side,
        other: np.ndarray,
        current: np.ndarray,
        solver: str,
        cg_steps: int | None = None,
        gram: np.ndarray | None = None,
    ) -> np.ndarray:
        """New vectors for every row of ``side`` given the ``other`` side's vectors (and their
        Gram matrix when the caller has it: the Ray workers receive it broadcast)."""
        steps = cg_steps or self.config.cg_steps
        if side.blocks is None:
            from recsys.models import ials_cpu  # numba: compiled on first use, only when training

            return ials_cpu.solve_rows(side.confidence, other, current, side.reg, steps, gram)
        tf = import_tensorflow()
        other_t = tf.constant(other, dtype=tf.float32)
        gram = (
            tf.matmul(other_t, other_t, transpose_a=True)
            if gram is None
            else tf.constant(gram, dtype=tf.float32)
        )
        # A concrete function: the polymorphic dispatch costs about a millisecond per block call.
        step = (_cg_function(steps) if solver == "cg" else _cholesky_function()).get_concrete_function()
        solved = np.empty_like(current, dtype=np.float32)
        for block in side.blocks:
            start = tf.constant(current[block.rows], dtype=tf.float32)
            solved[block.rows] = step(other_t, gram, start, *block.tensors).numpy()
        return solved

    def _loss(self, user_side: _Side, item_reg: np.ndarray, users: np.ndarray, items: np.ndarray) -> float:
        """The weighted objective divided by the total confidence (a weighted mean squared error).

        Sum over all pairs of ``c (p - x.y)^2`` = sum of all ``(x.y)^2`` (from the two Gram
        matrices, ``f x f`` each) plus, over observed pairs, ``c (1 - s)^2 - s^2`` (one pass over
        the interactions in the numba kernel), plus the regularisation terms.
        """
        from recsys.models import ials_cpu

        with ials_cpu.blas_alone():
            wide_users, wide_items = users.astype(np.float64), items.astype(np.float64)
            total = float(np.sum((wide_users.T @ wide_users) * (wide_items.T @ wide_items)))
            total += float(item_reg @ np.einsum("ij,ij->i", wide_items, wide_items))
            total += float(user_side.reg @ np.einsum("ij,ij->i", wide_users, wide_users))
        total += ials_cpu.observed_loss(user_side.confidence, users, items)
        total_confidence = users.shape[0] * items.shape[0] + float(
            user_side.confidence.data.sum(dtype=np.float64)
        )
        return total / total_confidence

    def _exact_rows(self, confidence: sp.csr_matrix, other: np.ndarray) -> np.ndarray:
        """Exact least-squares vectors of the rows of ``confidence`` (``C - 1``) against the fixed
        ``other`` side, in numpy, a block of rows at a time."""
        other, gram = self._fixed_side(other)
        counts = np.diff(confidence.indptr)
        reg = self.config.regularization * (1.0 + counts) ** self.config.frequency_exponent
        order = np.argsort(counts, kind="stable")  # similar lengths together: little padding
        vectors = np.zeros((confidence.shape[0], other.shape[1]), dtype=np.float32)
        diagonal = np.arange(len(gram))
        for start, stop in _padded_blocks(counts[order], other.shape[1]):
            rows = order[start:stop]
            block = confidence if len(rows) == confidence.shape[0] == 1 else confidence[rows]
            width = max(1, int(np.diff(block.indptr).max(initial=0)))
            position = np.arange(block.nnz) - np.repeat(block.indptr[:-1], np.diff(block.indptr))
            row_of = np.repeat(np.arange(len(rows)), np.diff(block.indptr))
            columns = np.zeros((len(rows), width), dtype=np.int64)
            weights = np.zeros((len(rows), width))  # C - 1 on observed pairs, 0 in the padding
            observed = np.zeros((len(rows), width))
            columns[row_of, position] = block.indices
            weights[row_of, position] = block.data
            observed[row_of, position] = 1.0
            vectors_of = other[columns]  # (rows, width, factors)
            # Batched matrix products (BLAS), far faster than the equivalent einsum.
            system = gram + np.matmul(np.swapaxes(vectors_of * weights[:, :, None], 1, 2), vectors_of)
            system[:, diagonal, diagonal] += reg[rows, None]
            target = np.matmul((observed + weights)[:, None, :], vectors_of)[:, 0]  # Y_u^T C_u p_u, p = 1
            vectors[rows] = np.linalg.solve(system, target[:, :, None])[:, :, 0]
        return vectors

    def _fixed_side(self, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``other`` in float64 and its Gram matrix, kept while the same array is passed: a loaded
        version folds users in against the same item vectors again and again, and the Gram
        matrix costs far more than one user's solve."""
        cached: tuple[np.ndarray, np.ndarray, np.ndarray] | None = getattr(self, "_fixed_cache", None)
        if cached is None or cached[0] is not other:
            wide = other.astype(np.float64)
            cached = (other, wide, wide.T @ wide)
            self._fixed_cache = cached
        return cached[1], cached[2]

    def _gram_eigen(self, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues and eigenvectors (float64) of ``other``'s Gram matrix, kept while the same
        array is passed, as :meth:`_fixed_side` keeps the matrix (a ``factors x factors`` pair)."""
        cached: tuple[np.ndarray, np.ndarray, np.ndarray] | None = getattr(self, "_eigen_cache", None)
        if cached is None or cached[0] is not other:
            _, gram = self._fixed_side(other)
            eigenvalues, basis = np.linalg.eigh(gram)
            cached = (other, eigenvalues, np.ascontiguousarray(basis))
            self._eigen_cache = cached
        return cached[1], cached[2]

    def _solve_new_rows(
        self,
        confidence: sp.csr_matrix,
        item_confidence: sp.csr_matrix,
        users: np.ndarray,
        items: np.ndarray,
        warm_start: WarmStart,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Solve the users, then the items, that the previous version did not know, against the
        known vectors: they start at their optimum instead of at random, so the sweeps that follow
        only refine and a warm start converges in one to three of them."""
        for rows, matrix, own, other in (
            (np.flatnonzero(~warm_start.known_users), confidence, users, items),
            (np.flatnonzero(~warm_start.known_items), item_confidence, items, users),
        ):
            if len(rows):
                # From zero, with more conjugate-gradient steps than a sweep takes: the start is
                # far from the optimum. (Exact Cholesky solves cost f^3 per row, several times more.)
                side = self._side(matrix[rows], "cg")
                start = np.zeros((len(rows), own.shape[1]), np.float32)
                own[rows] = self._solve(side, other, start, "cg", NEW_ROW_CG_STEPS)
        return users, items

    # --- fit plumbing -----------------------------------------------------------------------------

    def _initial_factors(
        self, n_users: int, n_items: int, warm_start: WarmStart | None
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.config.seed)
        shape_f = self.config.factors
        users = (rng.standard_normal((n_users, shape_f)) * self.config.init_scale).astype(np.float32)
        items = (rng.standard_normal((n_items, shape_f)) * self.config.init_scale).astype(np.float32)
        if warm_start is not None:
            for name, fresh, old, known in (
                ("user", users, warm_start.user_factors, warm_start.known_users),
                ("item", items, warm_start.item_factors, warm_start.known_items),
            ):
                if old.shape != fresh.shape or len(known) != len(fresh):
                    raise ConfigError(
                        f"warm-start {name} vectors have shape {old.shape} (flags {len(known)}), "
                        f"expected {fresh.shape}; the factors setting must match the previous version"
                    )
                fresh[known] = old[known]
        return users, items


class FactorSweeps:
    """What every iALS epoch step shares: the current vectors of both sides, handed to the model
    (``export``) and checkpointed (``state``/``load_state``). Subclasses set ``model``, ``users``
    and ``items`` and define ``train_epoch``."""

    model: ImplicitALS
    users: np.ndarray
    items: np.ndarray

    def export(self) -> None:
        self.model.user_factors, self.model.item_factors = self.users, self.items
        self.model._index = None

    def state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.users.copy(), "item_factors": self.items.copy()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.users, self.items = arrays["user_factors"], arrays["item_factors"]


class _Sweeps(FactorSweeps):
    """The epoch step of iALS: one sweep solves every user, then every item."""

    def __init__(
        self,
        model: ImplicitALS,
        confidence: sp.csr_matrix,
        item_confidence: sp.csr_matrix,
        users: np.ndarray,
        items: np.ndarray,
    ) -> None:
        solver = model.config.solver
        self.model, self.users, self.items = model, users, items
        self.user_side = model._side(confidence, solver)
        self.item_side = model._side(item_confidence, solver)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        model, solver = self.model, self.model.config.solver
        self.users = model._solve(self.user_side, self.items, self.users, solver)
        self.items = model._solve(self.item_side, self.users, self.items, solver)
        return {"loss": model._loss(self.user_side, self.item_side.reg, self.users, self.items)}


@dataclass(frozen=True)
class _Side:
    """The rows of one side: ``C - 1`` as CSR, each row's regularisation weight, and the blocks of
    tensors when a TensorFlow kernel solves them (None for the CPU CG kernel)."""

    confidence: sp.csr_matrix
    reg: np.ndarray
    blocks: list[_Block] | None


def _cg_kernel() -> Literal["numba", "tensorflow"]:
    """Which kernel runs conjugate gradients: TensorFlow's when it sees a GPU, numba's on the CPU
    (decided without importing TensorFlow where no GPU driver shows itself)."""
    if not gpu_possible():
        return "numba"
    tf = import_tensorflow()
    return "tensorflow" if tf.config.list_logical_devices("GPU") else "numba"


@dataclass(frozen=True)
class EpochPlan:
    """What iALS's fit hands the epoch loop (:meth:`ImplicitALS.epoch_plan`)."""

    step: _Sweeps | ShardedSweeps
    limit: int
    rule: StoppingRule | None


@dataclass(frozen=True)
class _Block:
    """Rows solved together: their indices and (local row, column, row pointers, alpha * value,
    regularisation per row) as tensors."""

    rows: np.ndarray
    tensors: tuple[Any, ...]


def _row_blocks(counts: np.ndarray, *, max_nnz: int, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive row ranges holding at most ``max_nnz`` interactions (or one longer row)."""
    ends = np.cumsum(counts)
    blocks, start = [], 0
    while start < len(counts):
        before = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, before + max_nnz, side="right"))
        stop = min(max(stop, start + 1), start + max_rows, len(counts))
        blocks.append((start, stop))
        start = stop
    return blocks


def _padded_blocks(sorted_counts: np.ndarray, factors: int) -> list[tuple[int, int]]:
    """Row ranges (of rows sorted by length) whose padded block and ``f x f`` systems fit the budget."""
    blocks, start = [], 0
    max_rows = max(1, BLOCK_FLOATS // (factors * factors))
    while start < len(sorted_counts):
        stop = min(start + max_rows, len(sorted_counts))
        # Shrink until rows x longest row x factors fits (the longest is the last, rows are sorted).
        while stop - start > 1 and (stop - start) * max(1, sorted_counts[stop - 1]) * factors > BLOCK_FLOATS:
            stop = start + (stop - start) // 2
        blocks.append((start, stop))
        start = stop
    return blocks


@functools.cache
def _cg_function(steps: int) -> Any:
    """A compiled block solve by ``steps`` conjugate-gradient iterations from the current vectors."""
    tf = import_tensorflow()
    spec = [
        tf.TensorSpec([None, None], tf.float32),  # other side's vectors
        tf.TensorSpec([None, None], tf.float32),  # their Gram matrix
        tf.TensorSpec([None, None], tf.float32),  # current vectors of the block's rows
        tf.TensorSpec([None], tf.int32),  # block-local row of each interaction
        tf.TensorSpec([None], tf.int32),  # other-side index of each interaction
        tf.TensorSpec([None], tf.int64),  # CSR row pointers (unused by CG)
        tf.TensorSpec([None], tf.float32),  # alpha * value of each interaction
        tf.TensorSpec([None], tf.float32),  # regularisation of each row
    ]

    @tf.function(input_signature=spec)
    def solve(other, gram, x, rows, cols, indptr, weights, reg):
        del indptr
        n = tf.shape(x)[0]
        gathered = tf.gather(other, cols)

        def per_row_sum(values):
            # Rows come in CSR order, so the sorted segment sum applies (faster than the unsorted
            # one); it stops at the last row with data, so trailing empty rows are padded back.
            summed = tf.math.segment_sum(values, rows)
            return tf.pad(summed, [[0, n - tf.shape(summed)[0]], [0, 0]])

        def times_a(p):
            scores = tf.reduce_sum(gathered * tf.gather(p, rows), axis=1) * weights
            return tf.matmul(p, gram) + reg[:, None] * p + per_row_sum(gathered * scores[:, None])

        target = per_row_sum(gathered * (1.0 + weights)[:, None])
        residual = target - times_a(x)
        direction = residual
        old_norm = tf.reduce_sum(residual * residual, axis=1)
        for _ in range(steps):
            product = times_a(direction)
            step = tf.math.divide_no_nan(old_norm, tf.reduce_sum(direction * product, axis=1))
            x = x + step[:, None] * direction
            residual = residual - step[:, None] * product
            new_norm = tf.reduce_sum(residual * residual, axis=1)
            direction = residual + tf.math.divide_no_nan(new_norm, old_norm)[:, None] * direction
            old_norm = new_norm
        return x

    return solve


@functools.cache
def _cholesky_function() -> Any:
    """A compiled exact block solve: each row's ``f x f`` system built from its padded items."""
    tf = import_tensorflow()
    spec = [
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.float32),
    ]

    @tf.function(input_signature=spec)
    def solve(other, gram, x, rows, cols, indptr, weights, reg):
        del rows
        factors = tf.shape(gram)[0]
        # rows x longest row x factors; the row count comes from the row pointers
        padded = tf.RaggedTensor.from_row_splits(tf.gather(other, cols), indptr).to_tensor()
        weight = tf.RaggedTensor.from_row_splits(weights, indptr).to_tensor()
        system = tf.matmul(padded * weight[:, :, None], padded, transpose_a=True)
        system += gram[None] + tf.linalg.diag(tf.repeat(reg[:, None], factors, axis=1))
        # Padding slots hold zero vectors, so they add nothing to the system or the target.
        target = tf.reduce_sum(padded * (1.0 + weight)[:, :, None], axis=1)
        return tf.linalg.cholesky_solve(tf.linalg.cholesky(system), target[:, :, None])[:, :, 0]

    return solve
