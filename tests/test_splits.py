"""Each split's stated properties (docs/protocol.md), exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.interactions import IdMap, Interactions
from recsys.data.splits import (
    holdout_sizes,
    protocol_k_split,
    protocol_r_folds,
    temporal_split,
    validation_split,
)
from recsys.errors import ConfigError


@pytest.fixture(scope="module")
def data() -> Interactions:
    """400 users with 1 to 60 distinct items each (many below 5), timestamps with ties."""
    rng = np.random.default_rng(7)
    n_users, n_items = 400, 250
    counts = rng.integers(1, 61, size=n_users)
    user_index = np.repeat(np.arange(n_users), counts)
    item_index = np.concatenate([rng.choice(n_items, size=c, replace=False) for c in counts])
    # Shuffle the rows so that no split can rely on the input being grouped by user.
    order = rng.permutation(len(user_index))
    return Interactions(
        users=IdMap(np.array([f"u{i}" for i in range(n_users)], dtype=object)),
        items=IdMap(np.array([f"i{i}" for i in range(n_items)], dtype=object)),
        user_index=user_index[order].astype(np.int32),
        item_index=item_index[order].astype(np.int32),
        values=rng.integers(1, 6, size=len(order)).astype(np.float32),
        timestamps=rng.integers(0, 50, size=len(order)).astype(np.int64),  # many ties
    )


def pair_keys(part: Interactions) -> np.ndarray:
    return np.sort(part.user_index.astype(np.int64) * part.shape[1] + part.item_index)


def per_user(part: Interactions) -> np.ndarray:
    return np.bincount(part.user_index, minlength=part.shape[0])


def test_holdout_size_rule_rounds_half_up() -> None:
    n = np.arange(1, 16)
    # floor(0.2 n + 0.5) worked out by hand; users below 5 get nothing.
    expected = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3]
    assert holdout_sizes(n).tolist() == expected
    assert holdout_sizes(n, min_user_interactions=1).tolist()[:4] == [0, 0, 1, 1]
    # A user never loses all train items, even with an extreme fraction.
    assert (holdout_sizes(n, test_fraction=0.95) < n).all()


@pytest.mark.parametrize("split", ["protocol_k", "temporal"])
def test_per_user_split_properties(data: Interactions, split: str) -> None:
    train, test = protocol_k_split(data) if split == "protocol_k" else temporal_split(data)
    n = per_user(data)
    assert train.users is data.users and test.items is data.items
    # Sizes: floor(0.2 n + 0.5) per user, computed here with integer arithmetic.
    expected_test = np.where(n >= 5, (2 * n + 5) // 10, 0)
    np.testing.assert_array_equal(per_user(test), expected_test)
    np.testing.assert_array_equal(per_user(train), n - expected_test)
    # No overlap, and the union is the input (pairs are unique in the fixture).
    assert len(np.intersect1d(pair_keys(train), pair_keys(test))) == 0
    np.testing.assert_array_equal(np.sort(np.r_[pair_keys(train), pair_keys(test)]), pair_keys(data))
    # Users below 5 interactions are not in test; every evaluated user keeps train items.
    assert not np.isin(test.user_index, np.flatnonzero(n < 5)).any()
    evaluated = np.unique(test.user_index)
    assert (per_user(train)[evaluated] > 0).all()
    assert len(train) + len(test) == len(data)


def test_protocol_k_is_deterministic_and_seed_sensitive(data: Interactions) -> None:
    first, second = protocol_k_split(data, seed=42)[1], protocol_k_split(data, seed=42)[1]
    np.testing.assert_array_equal(pair_keys(first), pair_keys(second))
    zero_a, zero_b = protocol_k_split(data, seed=0)[1], protocol_k_split(data, seed=0)[1]
    np.testing.assert_array_equal(pair_keys(zero_a), pair_keys(zero_b))  # 0 is a fixed seed too
    assert not np.array_equal(pair_keys(first), pair_keys(zero_a))
    with pytest.raises(ConfigError, match="seed"):
        protocol_k_split(data, seed=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="test_fraction"):
        protocol_k_split(data, test_fraction=1.5)


def test_protocol_k_shuffle_is_uniform_within_a_user() -> None:
    # One user with 10 items: 2 go to test. Over 2,000 seeds each item should be picked ~20% of the time.
    one_user = Interactions.from_arrays(["u"] * 10, [f"i{k}" for k in range(10)])
    picks = np.zeros(10)
    for seed in range(2000):
        picks[protocol_k_split(one_user, seed=seed)[1].item_index] += 1
    assert picks.sum() == 4000
    np.testing.assert_allclose(picks / 2000, 0.2, atol=0.04)


def test_validation_split_uses_another_seed(data: Interactions) -> None:
    train, test = protocol_k_split(data)
    fit, valid = validation_split(train)
    # Carved out of train only, with the same rule on train's per-user counts.
    assert len(np.intersect1d(pair_keys(valid), pair_keys(test))) == 0
    n_train = per_user(train)
    np.testing.assert_array_equal(per_user(valid), np.where(n_train >= 5, (2 * n_train + 5) // 10, 0))
    np.testing.assert_array_equal(np.sort(np.r_[pair_keys(fit), pair_keys(valid)]), pair_keys(train))
    # Seed 43 by default: not the carve seed 42 would give.
    assert not np.array_equal(pair_keys(valid), pair_keys(protocol_k_split(train, seed=42)[1]))
    np.testing.assert_array_equal(pair_keys(valid), pair_keys(protocol_k_split(train, seed=43)[1]))


def test_temporal_split_puts_the_newest_events_in_test(data: Interactions) -> None:
    train, test = temporal_split(data)
    users = data.shape[0]
    newest_train = np.full(users, -1)
    np.maximum.at(newest_train, train.user_index, train.timestamps)
    oldest_test = np.full(users, np.iinfo(np.int64).max)
    np.minimum.at(oldest_test, test.user_index, test.timestamps)
    assert (oldest_test >= newest_train).all()
    again = temporal_split(data)[1]
    np.testing.assert_array_equal(pair_keys(again), pair_keys(test))


def test_protocol_r_folds_partition_the_rows(data: Interactions) -> None:
    folds = protocol_r_folds(data, n_folds=5, seed=42)
    assert len(folds) == 5
    sizes = [len(test) for _, test in folds]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(data)
    all_test = np.sort(np.concatenate([pair_keys(test) for _, test in folds]))
    np.testing.assert_array_equal(all_test, pair_keys(data))  # every row in exactly one test fold
    for train, test in folds:
        assert len(np.intersect1d(pair_keys(train), pair_keys(test))) == 0
        assert len(train) + len(test) == len(data)
    again = protocol_r_folds(data, n_folds=5, seed=42)
    other = protocol_r_folds(data, n_folds=5, seed=0)
    np.testing.assert_array_equal(pair_keys(again[2][1]), pair_keys(folds[2][1]))
    assert not np.array_equal(pair_keys(other[2][1]), pair_keys(folds[2][1]))
    with pytest.raises(ConfigError, match="n_folds"):
        protocol_r_folds(data, n_folds=1)


def test_protocol_k_on_ml100k(ml100k_dir: Path) -> None:
    ratings = pd.read_csv(
        ml100k_dir / "u.data",
        sep="\t",
        names=["user", "item", "rating", "ts"],
        dtype={"user": str, "item": str},
    )
    data = Interactions.from_arrays(ratings["user"], ratings["item"], ratings["rating"], ratings["ts"])
    train, test = protocol_k_split(data, seed=42)
    n = ratings.groupby("user").size().to_numpy()
    assert n.min() >= 20  # every ml-100k user is evaluated
    expected = int(((2 * n + 5) // 10).sum())
    assert len(test) == expected
    assert 19_900 <= len(test) <= 20_100
    assert len(train) == 100_000 - expected
    assert len(np.unique(test.user_index)) == 943
