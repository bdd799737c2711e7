"""Protocol R: rating prediction error on held-out ratings (docs/protocol.md)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.evaluation.metrics import mae, rmse
from recsys.models.base import Recommender


def predict_ratings(
    model: Recommender, train: sp.csr_matrix, user_index: np.ndarray, item_index: np.ndarray
) -> np.ndarray:
    """Predicted ratings of (user, item) pairs.

    A model with its own ``predict`` (explicit MF: global mean, biases and the unseen-id
    fallback) uses it; any other model predicts the inner product of its vectors, which is the
    score it ranks by. ``train`` gives the rows of users the model must fold in.
    """
    user_index = np.asarray(user_index, dtype=np.int64)
    item_index = np.asarray(item_index, dtype=np.int64)
    predict = getattr(model, "predict", None)
    if callable(predict):
        return np.asarray(predict(user_index, item_index), dtype=np.float64)
    users, inverse = np.unique(user_index, return_inverse=True)
    user_vectors = model.user_vectors(users, sp.csr_matrix(train)[users])
    item_vectors = model.index.item_vectors
    return np.einsum("ij,ij->i", user_vectors[inverse], item_vectors[item_index]).astype(np.float64)


def evaluate_rating(
    model: Recommender,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    clip: tuple[float, float] | None = None,
) -> dict[str, float]:
    """RMSE and MAE over every stored rating of ``test`` (users x items, same shape as ``train``).

    Predictions are clipped to ``clip``, the dataset's rating range; ``None`` takes the range
    of the ratings in ``train``. No test rating is dropped: unseen users and items get the
    model's fallback prediction.
    """
    if train.shape != test.shape:
        raise ValueError(f"train and test shapes differ: {train.shape} vs {test.shape}")
    pairs = sp.coo_matrix(test)
    if pairs.nnz == 0:
        raise ValueError("the test matrix holds no rating: nothing to evaluate")
    if clip is None:
        train_values = sp.csr_matrix(train).data
        if len(train_values) == 0:
            raise ValueError("cannot infer the rating range from an empty train matrix; pass clip")
        clip = (float(train_values.min()), float(train_values.max()))
    low, high = clip
    if low > high:
        raise ValueError(f"clip must be (low, high) with low <= high, got {clip}")
    predicted = np.clip(predict_ratings(model, train, pairs.row, pairs.col), low, high)
    return {
        "rmse": rmse(predicted, pairs.data),
        "mae": mae(predicted, pairs.data),
        "ratings": float(pairs.nnz),
    }
