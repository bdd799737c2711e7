"""Metrics of docs/protocol.md, vectorised over users.

Ranking metrics take the top-k item ids per evaluated user (``-1`` padding allowed) and a CSR
matrix whose row ``r`` holds that user's test items.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def hit_matrix(top_ids: np.ndarray, test: sp.csr_matrix) -> np.ndarray:
    """Boolean (users x k): whether the item at each rank is one of that user's test items."""
    n_users, k = top_ids.shape
    if test.shape[0] != n_users:
        raise ValueError(f"test must have one row per ranked user ({n_users}), got {test.shape[0]}")
    # A stored entry is a test item whatever its value (Protocol K ignores values, and a value
    # of 0 must still count), so look up the sparsity structure, not the values.
    relevant = sp.csr_matrix((np.ones(test.nnz, dtype=np.int8), test.indices, test.indptr), shape=test.shape)
    valid = top_ids >= 0
    rows = np.repeat(np.arange(n_users), k)
    cols = np.where(valid, top_ids, 0).ravel()
    looked_up = np.asarray(relevant[rows, cols]).ravel().reshape(n_users, k)
    return (looked_up != 0) & valid


def ranking_metrics(top_ids: np.ndarray, test: sp.csr_matrix, n_items: int | None = None) -> dict[str, float]:
    """Precision, recall, nDCG, MAP and HR at k = ``top_ids.shape[1]``, averaged over users
    with at least one test item; coverage when ``n_items`` is given."""
    top_ids = np.asarray(top_ids)
    if top_ids.ndim != 2 or top_ids.shape[1] == 0:
        raise ValueError(f"top_ids must be (users, k) with k >= 1, got shape {top_ids.shape}")
    test = sp.csr_matrix(test, copy=True)
    if test.shape[0] != top_ids.shape[0]:
        raise ValueError(f"test must have one row per ranked user ({top_ids.shape[0]}), got {test.shape[0]}")
    test.sum_duplicates()  # a repeated (user, item) pair is one test item, not two
    n_test = np.diff(test.indptr)
    evaluated = n_test > 0
    top_ids, test, n_test = top_ids[evaluated], test[evaluated], n_test[evaluated]
    k = top_ids.shape[1]
    if len(top_ids) == 0:
        raise ValueError("no user has a test item: nothing to evaluate")
    hits = hit_matrix(top_ids, test).astype(np.float64)
    n_hits = hits.sum(axis=1)
    ranks = np.arange(1, k + 1)
    discounts = 1.0 / np.log2(ranks + 1)
    ideal_hits = np.minimum(k, n_test)
    ideal_dcg = np.cumsum(discounts)[ideal_hits - 1]
    precision_at_rank = np.cumsum(hits, axis=1) / ranks
    metrics = {
        "precision": float(np.mean(n_hits / k)),
        "recall": float(np.mean(n_hits / n_test)),
        "ndcg": float(np.mean((hits @ discounts) / ideal_dcg)),
        "map": float(np.mean((precision_at_rank * hits).sum(axis=1) / ideal_hits)),
        "hr": float(np.mean(n_hits > 0)),
        "users": float(len(top_ids)),
    }
    if n_items is not None:
        metrics["coverage"] = coverage(top_ids, n_items)
    return metrics


def coverage(top_ids: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top k."""
    shown = np.unique(top_ids[top_ids >= 0])
    return float(len(shown) / n_items) if n_items else 0.0


def rmse(predictions: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error of rating predictions."""
    errors = _errors(predictions, truth)
    return float(np.sqrt(np.mean(errors**2)))


def mae(predictions: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error of rating predictions."""
    return float(np.mean(np.abs(_errors(predictions, truth))))


def _errors(predictions: np.ndarray, truth: np.ndarray) -> np.ndarray:
    # Without the shape check, (n, 1) against (n,) would broadcast to an (n, n) error matrix.
    predicted = np.asarray(predictions, dtype=np.float64)
    true = np.asarray(truth, dtype=np.float64)
    if predicted.shape != true.shape:
        raise ValueError(f"predictions and truth shapes differ: {predicted.shape} vs {true.shape}")
    if predicted.size == 0:
        raise ValueError("no ratings to compare: predictions and truth are empty")
    return predicted - true
