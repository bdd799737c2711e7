"""Train/test splits of docs/protocol.md, vectorised over users.

Every split returns ``Interactions`` with the same id maps as its input, so train and test
matrices have the same shape and index the same users and items.

Per-user splits rank each user's rows without a Python loop: sort the rows by (user, key) where
the key is a seeded random number (or the timestamp), and a row's rank within its user is its
sorted position minus the position where that user's rows start. The sort is one pass over
both keys packed into 64 bits (:func:`recsys.data.ordering.lexsort2`).
"""

from __future__ import annotations

import numpy as np

from recsys.data.interactions import Interactions
from recsys.data.ordering import lexsort2
from recsys.errors import ConfigError


def protocol_k_split(
    data: Interactions,
    seed: int = 42,
    test_fraction: float = 0.2,
    min_user_interactions: int = 5,
) -> tuple[Interactions, Interactions]:
    """Protocol K: per user, a seeded shuffle puts floor(test_fraction * n + 0.5) of the user's n
    interactions in test and the rest in train; users with fewer than ``min_user_interactions``
    keep everything in train (they are not evaluated). Returns (train, test).
    """
    _check_seed(seed)
    # random() draws multiples of 2**-53: scaled up they are exact integers in the same order.
    key = (np.random.default_rng(seed).random(len(data)) * 2.0**53).astype(np.int64)
    return _split_by_rank(data, key, test_fraction, min_user_interactions, test_last=False)


def validation_split(
    train: Interactions,
    seed: int = 43,
    test_fraction: float = 0.2,
    min_user_interactions: int = 5,
) -> tuple[Interactions, Interactions]:
    """The validation split carved out of a Protocol K train part: the same rule with another
    seed, so hyper-parameters are tuned without touching the test part. Returns (train, valid)."""
    return protocol_k_split(train, seed, test_fraction, min_user_interactions)


def temporal_split(
    data: Interactions,
    test_fraction: float = 0.2,
    min_user_interactions: int = 5,
) -> tuple[Interactions, Interactions]:
    """Per user, the newest floor(test_fraction * n + 0.5) interactions go to test (same size rule
    as Protocol K), so every test event of a user is at least as recent as each of their train
    events. Ties on the timestamp keep the input order. Returns (train, test)."""
    return _split_by_rank(data, data.timestamps, test_fraction, min_user_interactions, test_last=True)


def protocol_r_folds(
    data: Interactions, n_folds: int = 5, seed: int = 42
) -> list[tuple[Interactions, Interactions]]:
    """Protocol R: shuffle all rows with the seed and cut them into ``n_folds`` folds whose sizes
    differ by at most one; fold f is the test part of the f-th (train, test) pair."""
    _check_seed(seed)
    if not isinstance(n_folds, int) or n_folds < 2:
        raise ConfigError(f"n_folds must be an integer of at least 2, got {n_folds!r}")
    if len(data) < n_folds:
        raise ConfigError(f"cannot cut {len(data)} interactions into {n_folds} non-empty folds")
    fold_of_row = np.empty(len(data), dtype=np.int64)
    permutation = np.random.default_rng(seed).permutation(len(data))
    # Consecutive runs of the shuffled rows form the folds, like numpy.array_split.
    fold_of_row[permutation] = np.arange(len(data)) * n_folds // len(data)
    return [(data.subset(fold_of_row != fold), data.subset(fold_of_row == fold)) for fold in range(n_folds)]


def holdout_sizes(n: np.ndarray, test_fraction: float = 0.2, min_user_interactions: int = 5) -> np.ndarray:
    """Test interactions per user with n interactions: floor(test_fraction * n + 0.5), 0 below
    ``min_user_interactions``, and never all of a user's interactions."""
    n = np.asarray(n, dtype=np.int64)
    sizes = np.floor(test_fraction * n + 0.5).astype(np.int64)
    # Only reachable with large fractions (0.2 leaves 4 of 5 in train); an evaluated user must keep
    # some train items to recommend from.
    sizes = np.minimum(sizes, n - 1)
    return np.where(n >= min_user_interactions, np.maximum(sizes, 0), 0)


def _split_by_rank(
    data: Interactions,
    key: np.ndarray,
    test_fraction: float,
    min_user_interactions: int,
    test_last: bool,
) -> tuple[Interactions, Interactions]:
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if min_user_interactions < 1:
        raise ConfigError(f"min_user_interactions must be at least 1, got {min_user_interactions}")
    users = data.user_index
    # Stable: equal keys keep the input order, so ties are deterministic.
    order = lexsort2(key, users)
    counts = np.bincount(users, minlength=data.shape[0])
    starts = np.cumsum(counts) - counts
    sorted_users = users[order]
    rank = np.arange(len(order)) - starts[sorted_users]
    n_test = holdout_sizes(counts, test_fraction, min_user_interactions)[sorted_users]
    in_test_sorted = rank >= counts[sorted_users] - n_test if test_last else rank < n_test
    is_test = np.empty(len(order), dtype=bool)
    is_test[order] = in_test_sorted
    return data.subset(~is_test), data.subset(is_test)


def _check_seed(seed: int) -> None:
    # None would make numpy draw fresh entropy: a split that silently changes from run to run.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer (0 is a valid fixed seed), got {seed!r}")
