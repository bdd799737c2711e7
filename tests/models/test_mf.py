"""Explicit MF: the shared contract, hand-checked predictions, fold-in, checkpoints, warm start."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data.interactions import Interactions
from recsys.data.splits import protocol_r_folds
from recsys.errors import ConfigError, NotFittedError
from recsys.evaluation import evaluate_rating
from recsys.models import FitOptions, WarmStart
from recsys.models.mf import MatrixFactorization

from .contract import ModelContract, planted_data

FAST: dict[str, Any] = {
    "optimizer": "adam",
    "final_lr_fraction": 0.05,
    "factors": 16,
    "epochs": 30,
    "batch_size": 256,
    "learning_rate": 0.02,
    "regularization": 0.02,
    "bias_regularization": 0.01,
}


class TestMatrixFactorization(ModelContract):
    model_name = "mf"
    params: ClassVar[dict[str, Any]] = FAST
    invalid_params: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"learning_rate": 0}, "learning_rate"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"factors": -1}, "factors"),
    ]


@pytest.fixture(scope="module")
def fitted() -> MatrixFactorization:
    return MatrixFactorization(**FAST).fit(planted_data().train)


def test_loss_decreases(fitted: MatrixFactorization) -> None:
    losses = [entry["loss"] for entry in fitted.history]
    assert losses[-1] < 0.5 * losses[0]
    assert fitted.history[-1]["rmse"] < 0.5


def test_predictions_match_the_hand_formula(fitted: MatrixFactorization) -> None:
    users, items = np.array([0, 7, -1, 3, -1]), np.array([5, 110, 2, -1, -1])
    mu = fitted.global_mean
    bu, bi = fitted.user_bias, fitted.item_bias
    p, q = fitted.user_factors[:, :16], fitted.similarity_factors  # type: ignore[index]
    assert bu is not None and bi is not None
    expected = [
        mu + bu[0] + bi[5] + p[0] @ q[5],
        mu + bu[7] + bi[110] + p[7] @ q[110],
        mu + bi[2],  # unknown user: mean plus the item's bias
        mu + bu[3],  # unknown item: mean plus the user's bias
        mu,
    ]
    np.testing.assert_allclose(fitted.predict(users, items), expected, rtol=1e-5)
    # The augmented vectors score exactly the predicted rating.
    known = fitted.user_factors[[0, 7]] @ fitted.item_factors[[5, 110]].T  # type: ignore[index]
    np.testing.assert_allclose(np.diag(known), expected[:2], rtol=1e-5)
    clipped = fitted.predict(np.array([0, 0]), np.array([5, 6]), clip=(2.0, 2.5))
    assert ((clipped >= 2.0) & (clipped <= 2.5)).all()


def test_planted_ratings_are_learned(fitted: MatrixFactorization) -> None:
    data = planted_data()
    test = sp.coo_matrix(data.test)
    predicted = fitted.predict(test.row, test.col)
    assert np.mean(predicted) > 3.5  # held-out liked items predicted high
    pairs = sp.coo_matrix(data.train)
    assert np.sqrt(np.mean((fitted.predict(pairs.row, pairs.col) - pairs.data) ** 2)) < 0.5


def test_fold_in_is_the_closed_form_ridge_solution(fitted: MatrixFactorization) -> None:
    row = planted_data().train[11]
    q, bi, mu = fitted.similarity_factors.astype(np.float64), fitted.item_bias, fitted.global_mean
    assert bi is not None
    features = np.hstack([q[row.indices], np.ones((row.nnz, 1))])
    penalty = np.diag([FAST["regularization"]] * 16 + [FAST["bias_regularization"]]) * row.nnz
    target = row.data - mu - bi[row.indices]
    solution = np.linalg.solve(features.T @ features + penalty, features.T @ target)
    vector = fitted.fold_in(row)[0]
    np.testing.assert_allclose(vector[:16], solution[:16], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vector[16:], [1.0, mu + solution[16]], rtol=1e-4)


def test_predict_before_fit_is_refused() -> None:
    with pytest.raises(NotFittedError):
        MatrixFactorization().predict(np.array([0]), np.array([0]))


def test_warm_start_keeps_old_vectors_for_old_ids(fitted: MatrixFactorization) -> None:
    data = planted_data()
    assert fitted.user_factors is not None and fitted.item_factors is not None
    # New data: one more user who rates item 0.
    grown = sp.vstack([data.train, sp.csr_matrix(([4.0], ([0], [0])), shape=(1, data.n_items))]).tocsr()
    warm = WarmStart(
        user_factors=np.vstack([fitted.user_factors, np.zeros((1, 18), np.float32)]),
        item_factors=fitted.item_factors,
        known_users=np.r_[np.ones(data.n_users, bool), False],
        known_items=np.ones(data.n_items, bool),
        extra={"global_mean": np.array(fitted.global_mean)},
    )
    model = MatrixFactorization(**FAST)
    model.global_mean = fitted.global_mean
    start = model._initial_arrays(data.n_users + 1, data.n_items, warm)
    np.testing.assert_array_equal(start["item_q"], fitted.similarity_factors)
    np.testing.assert_allclose(start["user_bias"][:-1], fitted.user_bias, atol=1e-5)  # type: ignore[arg-type]
    assert np.abs(start["user_p"][-1]).max() < 0.1  # the new user starts fresh (small random)
    warm_fit = MatrixFactorization(**{**FAST, "learning_rate": 0.002}).fit(
        grown, FitOptions(epochs=1, warm_start=warm)
    )
    cold_fit = MatrixFactorization(**{**FAST, "learning_rate": 0.002}).fit(grown, FitOptions(epochs=1))
    assert warm_fit.history[0]["rmse"] < 0.5 * cold_fit.history[0]["rmse"]
    with pytest.raises(ConfigError, match="warm-start"):
        MatrixFactorization(**{**FAST, "factors": 8}).fit(grown, FitOptions(warm_start=warm))


@pytest.mark.slow
def test_default_parameters_on_a_protocol_r_fold_of_ml100k(ml100k_dir: Path) -> None:
    ratings = np.loadtxt(ml100k_dir / "u.data", dtype=np.int64)
    data = Interactions.from_arrays(ratings[:, 0], ratings[:, 1], ratings[:, 2].astype(np.float32))
    train, test = protocol_r_folds(data, n_folds=5, seed=42)[0]
    model = MatrixFactorization().fit(train.to_csr())
    # The 5-fold mean is the benchmark's figure (benchmarks/quality_check.py mf); one fold must be close.
    assert evaluate_rating(model, train.to_csr(), test.to_csr(), clip=(1.0, 5.0))["rmse"] <= 0.91
