"""Offline top-k evaluation through the same ``recommend`` path that serving and scoring use."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.evaluation.metrics import ranking_metrics
from recsys.models.base import Recommender


def recommend_top_k(
    model: Recommender,
    train: sp.csr_matrix,
    users: np.ndarray,
    k: int = 10,
    block_size: int = 2048,
) -> np.ndarray:
    """Top ``k`` item indices (``-1`` padded) for ``users``, their ``train`` items excluded.

    Goes through ``model.recommend`` (and so the model's index) in blocks of users, exactly as
    batch scoring does.
    """
    train = sp.csr_matrix(train)
    users = np.asarray(users, dtype=np.int64)
    top = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), block_size):
        block = users[start : start + block_size]
        top[start : start + len(block)] = model.recommend(block, train[block], N=k)[0]
    return top


def evaluate_ranking(
    model: Recommender,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    k: int = 10,
    block_size: int = 2048,
) -> dict[str, float]:
    """Protocol K metrics: each user with test items gets the top ``k`` of the whole catalogue,
    their ``train`` items excluded. ``train`` and ``test`` are users x items matrices of the
    same shape; users beyond the model's trained users are folded in from their train row."""
    if train.shape != test.shape:
        raise ValueError(f"train and test shapes differ: {train.shape} vs {test.shape}")
    train, test = sp.csr_matrix(train), sp.csr_matrix(test)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    top = recommend_top_k(model, train, users, k, block_size)
    return ranking_metrics(top, test[users], n_items=test.shape[1])
