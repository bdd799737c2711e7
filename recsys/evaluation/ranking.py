"""Offline top-k evaluation through the retriever, the object the service answers with."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.evaluation.metrics import ranking_metrics
from recsys.models.base import Recommender
from recsys.retrieval import RankOptions, Retriever


def as_retriever(model: Recommender | Retriever, train: sp.csr_matrix) -> Retriever:
    """``model`` itself when it is a retriever; else a retriever over the model's exact index
    whose popular fallback counts the ``train`` interactions."""
    if isinstance(model, Retriever):
        return model
    counts = np.bincount(sp.csr_matrix(train).indices, minlength=train.shape[1]).astype(np.float32)
    return Retriever.for_model(model, popular_counts=counts)


def recommend_top_k(
    model: Recommender | Retriever,
    train: sp.csr_matrix,
    users: np.ndarray,
    k: int = 10,
    block_size: int = 2048,
    options: RankOptions | None = None,
    fold: np.ndarray | None = None,
) -> np.ndarray:
    """Top ``k`` item indices (``-1`` padded) for ``users``, their ``train`` items excluded.

    Ranks through :meth:`Retriever.recommend` in blocks of users: trained users with their
    vector, users beyond the trained ones folded in from their ``train`` row, users with an
    empty row the popular items; ``options`` adds the filters the service takes. ``fold`` (one
    flag per row of ``train``) marks trained users to fold in as well, as the service does for
    users with interactions newer than the version.
    """
    retriever = as_retriever(model, train)
    train = sp.csr_matrix(train)
    users = np.asarray(users, dtype=np.int64)
    options = RankOptions(k=k) if options is None else options
    top = np.empty((len(users), options.k), dtype=np.int64)
    for start in range(0, len(users), block_size):
        block = users[start : start + block_size]
        block_fold = None if fold is None else fold[block]
        top[start : start + len(block)] = retriever.recommend(
            block, train[block], options, block_fold
        ).item_ids
    return top


def evaluate_ranking(
    model: Recommender | Retriever,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    k: int = 10,
    block_size: int = 2048,
    fold: np.ndarray | None = None,
) -> dict[str, float]:
    """Protocol K metrics: each user with test items gets the top ``k`` of the whole catalogue,
    their ``train`` items excluded. ``train`` and ``test`` are users x items matrices of the
    same shape; users beyond the model's trained users (and those ``fold`` marks) are folded in
    from their train row."""
    if train.shape != test.shape:
        raise ValueError(f"train and test shapes differ: {train.shape} vs {test.shape}")
    train, test = sp.csr_matrix(train), sp.csr_matrix(test)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    top = recommend_top_k(model, train, users, k, block_size, fold=fold)
    return ranking_metrics(top, test[users], n_items=test.shape[1])
