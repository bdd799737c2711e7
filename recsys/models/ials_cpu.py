"""The CPU kernels of implicit ALS, compiled by numba: a half-step's conjugate-gradient solve and the
observed part of the loss.

Each row's work touches only its own interactions and the other side's vectors, the way
benfred/implicit's CPU solver does, so nothing of size ``interactions x factors`` is ever
materialised. The TensorFlow kernel (gathers, then segment sums) writes and rereads such arrays
several times per CG step and was 4.5-6.4x slower than implicit at 5M-25M interactions; this one
takes 1.5-1.7x its time per iteration (``benchmarks/ials_benchmark.py``). The dense part of every
product, ``D @ Y^T Y``, is one BLAS matrix product per block of rows.

numba is imported only by training (this module is loaded lazily by :mod:`recsys.models.ials`):
serving folds users in with numpy and never compiles anything.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numba
import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

#: Rows solved together. Their CG state is a few ``rows x factors`` float32 arrays (64 MB each at
#: 128 factors); each block costs four parallel regions per sweep, whose barriers wait for the
#: slowest thread, so few large blocks fare better on a busy machine than many small ones.
BLOCK_ROWS = 1 << 17
#: Rows a numba thread takes at a time. Rows differ in length by orders of magnitude (popular items),
#: and numba's default cuts the range into one equal piece per thread, leaving one thread the tail.
CHUNK_ROWS = 16


def solve_rows(
    confidence: sp.csr_matrix,
    other: np.ndarray,
    current: np.ndarray,
    reg: np.ndarray,
    steps: int,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    """New vectors for every row of ``confidence`` (``C - 1``) against the fixed ``other`` side:
    ``steps`` conjugate-gradient steps on ``(Y^T Y + Y^T (C_u - I) Y + reg_u I) x = Y^T C_u 1``,
    warm-started from ``current``; ``gram`` is ``Y^T Y`` when the caller has it already."""
    other = np.ascontiguousarray(other, dtype=np.float32)
    with blas_alone():
        gram = other.T @ other if gram is None else np.asarray(gram, dtype=np.float32)
    indptr, indices = confidence.indptr, confidence.indices
    weights = np.asarray(confidence.data, dtype=np.float32)
    reg = np.asarray(reg, dtype=np.float32)
    solved = np.empty((confidence.shape[0], other.shape[1]), dtype=np.float32)
    with _chunked():
        for start in range(0, confidence.shape[0], BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, confidence.shape[0])
            x = np.array(current[start:stop], dtype=np.float32, order="C")
            residual, direction = np.empty_like(x), np.empty_like(x)
            norms = np.empty(stop - start, dtype=np.float32)
            _residual(indptr, indices, weights, other, start, x, x @ gram, reg, residual, direction, norms)
            for _ in range(steps):
                _cg_step(
                    indptr,
                    indices,
                    weights,
                    other,
                    start,
                    x,
                    direction @ gram,
                    reg,
                    residual,
                    direction,
                    norms,
                )
            solved[start:stop] = x
    return solved


def observed_loss(confidence: sp.csr_matrix, users: np.ndarray, items: np.ndarray) -> float:
    """Sum over the observed pairs of ``c (1 - s)^2 - s^2`` with ``s`` the predicted score and
    ``c = 1 + confidence`` (the rest of the objective comes from the Gram matrices)."""
    with _chunked():
        return float(
            _observed_loss(
                confidence.indptr,
                confidence.indices,
                np.asarray(confidence.data, dtype=np.float32),
                np.ascontiguousarray(users, dtype=np.float32),
                np.ascontiguousarray(items, dtype=np.float32),
            )
        )


def blas_alone() -> contextlib.AbstractContextManager[object]:
    """BLAS on one thread, for numpy work between the kernels (see :func:`_chunked`)."""
    return _controller().limit(limits=1, user_api="blas")


@functools.cache
def _controller() -> ThreadpoolController:
    """The thread pools of the loaded libraries, found once: a fresh search of the loaded shared
    libraries costs tens of milliseconds, a sweep of ml-100k about a hundred."""
    return ThreadpoolController()


@contextlib.contextmanager
def _chunked() -> Iterator[None]:
    """numba's threads take ``CHUNK_ROWS`` rows at a time, and BLAS runs on one thread: its own
    pool's threads would spin against numba's between the kernels (a sweep ran 3-5x slower)."""
    previous = numba.set_parallel_chunksize(CHUNK_ROWS)
    try:
        with blas_alone():
            yield
    finally:
        numba.set_parallel_chunksize(previous)


@numba.njit(parallel=True, fastmath=True, cache=True)
def _residual(indptr, indices, weights, other, start, x, x_gram, reg, residual, direction, norms):
    """``r = b - A x`` for the block's rows (also the first direction) and ``|r|^2``."""
    rows, factors = x.shape
    for local in numba.prange(rows):
        row = start + local
        vector, dense, weight = x[local], x_gram[local], reg[row]
        acc = np.empty(factors, np.float32)
        for k in range(factors):
            acc[k] = -(dense[k] + weight * vector[k])
        for j in range(indptr[row], indptr[row + 1]):
            item = other[indices[j]]
            score = np.float32(0.0)
            for k in range(factors):
                score += item[k] * vector[k]
            # target adds (1 + w) y (preference 1), A x adds w (y . x) y
            scale = np.float32(1.0) + weights[j] - weights[j] * score
            for k in range(factors):
                acc[k] += scale * item[k]
        total = np.float32(0.0)
        for k in range(factors):
            residual[local, k] = acc[k]
            direction[local, k] = acc[k]
            total += acc[k] * acc[k]
        norms[local] = total


@numba.njit(parallel=True, fastmath=True, cache=True)
def _cg_step(indptr, indices, weights, other, start, x, direction_gram, reg, residual, direction, norms):
    """One conjugate-gradient step of every row of the block, in place."""
    rows, factors = x.shape
    for local in numba.prange(rows):
        row = start + local
        old = norms[local]
        if old <= 0:  # solved exactly already
            continue
        d, dense, weight = direction[local], direction_gram[local], reg[row]
        product = np.empty(factors, np.float32)
        for k in range(factors):
            product[k] = dense[k] + weight * d[k]
        for j in range(indptr[row], indptr[row + 1]):
            item = other[indices[j]]
            score = np.float32(0.0)
            for k in range(factors):
                score += item[k] * d[k]
            score *= weights[j]
            for k in range(factors):
                product[k] += score * item[k]
        curvature = np.float32(0.0)
        for k in range(factors):
            curvature += d[k] * product[k]
        if curvature <= 0:
            continue
        step = old / curvature
        new = np.float32(0.0)
        for k in range(factors):
            x[local, k] += step * d[k]
            residual[local, k] -= step * product[k]
            new += residual[local, k] * residual[local, k]
        ratio = new / old
        for k in range(factors):
            direction[local, k] = residual[local, k] + ratio * d[k]
        norms[local] = new


@numba.njit(parallel=True, fastmath=True, cache=True)
def _observed_loss(indptr, indices, weights, users, items):
    rows, factors = users.shape
    totals = np.zeros(rows, np.float64)
    for row in numba.prange(rows):
        user = users[row]
        total = 0.0
        for j in range(indptr[row], indptr[row + 1]):
            item = items[indices[j]]
            score = np.float32(0.0)
            for k in range(factors):
                score += user[k] * item[k]
            total += (1.0 + weights[j]) * (1.0 - score) ** 2 - score**2
        totals[row] = total
    return totals.sum()
