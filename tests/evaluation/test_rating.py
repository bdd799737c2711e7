"""Protocol R evaluation: predictions from ``predict`` or the inner product, clipped, none dropped."""

from __future__ import annotations

import math
from typing import Self

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.evaluation import evaluate_rating, predict_ratings
from recsys.models.base import FitOptions, Recommender


class FixedVectors(Recommender):
    """Stand-in factor model with hand-set vectors; folds a new user in as the mean of the
    vectors of the items they rated."""

    name = "fixed-vectors"

    def __init__(self, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
        super().__init__()
        self.user_factors = user_factors.astype(np.float32)
        self.item_factors = item_factors.astype(np.float32)

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        return self

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        rows = sp.csr_matrix(user_items)
        assert self.item_factors is not None
        counts = np.maximum(np.diff(rows.indptr), 1)[:, None]
        return np.asarray((rows != 0).astype(np.float32) @ self.item_factors) / counts


class BiasOnly(FixedVectors):
    """Stand-in explicit model: predicts global mean + item bias, 3.0 for an unknown id (-1)."""

    name = "bias-only"
    item_bias = np.array([1.0, -0.5, 0.0])

    def predict(self, user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        known = (item_index >= 0) & (user_index >= 0)
        return np.where(known, 3.0 + self.item_bias[np.maximum(item_index, 0)], 3.0)


def csr(entries: list[tuple[int, int, float]], shape: tuple[int, int]) -> sp.csr_matrix:
    users, items, values = zip(*entries, strict=True)
    return sp.csr_matrix((values, (users, items)), shape=shape)


TRAIN = csr([(0, 0, 5.0), (0, 1, 3.0), (1, 1, 1.0), (2, 0, 4.0), (2, 2, 2.0)], (3, 3))


def test_predict_method_is_used_and_clipped_to_the_range() -> None:
    model = BiasOnly(np.zeros((3, 1)), np.zeros((3, 1)))
    test = csr([(1, 0, 5.0), (1, 2, 2.0), (2, 1, 3.0)], (3, 3))

    metrics = evaluate_rating(model, TRAIN, test, clip=(1.0, 3.5))

    # predictions 4.0 -> clipped 3.5, 3.0, 2.5: errors -1.5, +1.0, -0.5
    assert metrics["rmse"] == pytest.approx(math.sqrt((2.25 + 1.0 + 0.25) / 3))
    assert metrics["mae"] == pytest.approx(3.0 / 3)
    assert metrics["ratings"] == 3


def test_inner_product_is_the_prediction_without_predict_and_new_users_are_folded_in() -> None:
    # Two trained users; user 2 is beyond them and is folded in from its train row (items 0, 2).
    model = FixedVectors(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[4.0, 1.0], [2.0, 1.5], [2.0, 3.0]]))
    test = csr([(0, 2, 2.0), (1, 0, 1.0), (2, 1, 3.0)], (3, 3))

    predicted = predict_ratings(model, TRAIN, np.array([0, 1, 2]), np.array([2, 0, 1]))
    # user 0: 2.0; user 1: 2 * 1.0 = 2.0; user 2 folded in as mean of items 0 and 2 = [3, 2]:
    # [3, 2] . [2, 1.5] = 9.0
    np.testing.assert_allclose(predicted, [2.0, 2.0, 9.0])

    metrics = evaluate_rating(model, TRAIN, test)  # clip inferred from train: [1, 5]
    # 9.0 is clipped to 5.0: errors 0, +1, +2
    assert metrics["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert metrics["mae"] == pytest.approx(1.0)


def test_bad_inputs_are_named() -> None:
    model = BiasOnly(np.zeros((3, 1)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="no rating"):
        evaluate_rating(model, TRAIN, sp.csr_matrix((3, 3)))
    with pytest.raises(ValueError, match="shapes differ"):
        evaluate_rating(model, TRAIN, sp.csr_matrix((3, 4)))
    with pytest.raises(ValueError, match="low <= high"):
        evaluate_rating(model, TRAIN, TRAIN, clip=(5.0, 1.0))
