"""Validation metrics for early stopping, handed to a model's fit as a callback.

Models never import the evaluation code (it imports the models): the caller builds the callback
here, and ``FitOptions.validate`` carries it into the epoch loop, which calls it after each epoch.

Ranking every validation user each epoch would cost more than the epoch itself at millions of
interactions (3x an iALS sweep at 5M), so the callback ranks a seeded sample of at most
``RECSYS_VALIDATION_USERS`` of them, the same users every epoch, through the one retrieval path in
blocks of users. The fit's final validation metrics (``validation_metrics``: the version's reported
figures and the promotion gate) rank a larger seeded sample, ``RECSYS_METRIC_USERS``, drawn by the
same rule (:func:`sample_users`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recsys.evaluation.metrics import rmse
from recsys.evaluation.ranking import evaluate_ranking
from recsys.models.base import Recommender
from recsys.settings import get_settings

#: Cut-off of the validation ranking metric (the protocol's k).
VALIDATION_K = 10
#: Seed of the validation users' sample: the same data gives the same users.
SAMPLE_SEED = 0


@dataclass(frozen=True)
class ValidationCallback:
    """Measures a model against the held-out ``valid`` pairs (a ``FitOptions.validate`` callback).

    Called with a model, it returns ``val_ndcg`` (nDCG@``k`` with the ``train`` items excluded,
    through the model's own ``recommend``) and, for models that predict ratings, ``val_rmse`` on
    the held-out ratings with predictions clipped to the training range. ``ratings=None`` decides
    per model: those with a ``predict`` method get the RMSE.

    When more than ``max_users`` users (0: no limit) have validation pairs, both metrics use a
    sample of that many, drawn once with ``seed``: every epoch is measured on the same users.
    """

    train: sp.csr_matrix
    valid: sp.csr_matrix
    k: int = VALIDATION_K
    ratings: bool | None = None
    max_users: int = 0
    seed: int = SAMPLE_SEED
    _pairs: sp.coo_matrix = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.train.shape != self.valid.shape:
            raise ValueError(f"train and validation shapes differ: {self.train.shape} vs {self.valid.shape}")
        if self.max_users < 0:
            raise ValueError(f"max_users must be 0 (all) or positive, got {self.max_users}")
        valid = sample_users(sp.csr_matrix(self.valid), self.max_users, self.seed)
        object.__setattr__(self, "train", sp.csr_matrix(self.train))
        object.__setattr__(self, "valid", valid)
        object.__setattr__(self, "_pairs", sp.coo_matrix(valid))

    @property
    def users(self) -> int:
        """How many users the metrics rank."""
        return int(np.count_nonzero(np.diff(self.valid.indptr)))

    def __call__(self, model: Recommender) -> dict[str, float]:
        scores = {"val_ndcg": float(evaluate_ranking(model, self.train, self.valid, k=self.k)["ndcg"])}
        predict = getattr(model, "predict", None)
        wants_rmse = self.ratings if self.ratings is not None else callable(predict)
        if wants_rmse and self._pairs.nnz:
            if predict is None:
                raise TypeError(f"the {model.name} model has no predict(); it cannot be validated by RMSE")
            low, high = float(self.train.data.min()), float(self.train.data.max())
            predicted = np.clip(predict(self._pairs.row, self._pairs.col), low, high)
            scores["val_rmse"] = rmse(predicted, self._pairs.data)
        return scores


def sample_users(valid: sp.csr_matrix, max_users: int, seed: int = SAMPLE_SEED) -> sp.csr_matrix:
    """``valid`` with the rows of a seeded sample of ``max_users`` of its users kept and the others
    emptied (shape unchanged); ``valid`` itself when it has no more users than that or ``max_users``
    is 0. The same matrix and seed give the same users."""
    users = np.flatnonzero(np.diff(valid.indptr))
    if not max_users or len(users) <= max_users:
        return valid
    chosen = np.zeros(valid.shape[0], dtype=np.float32)
    chosen[np.random.default_rng(seed).choice(users, max_users, replace=False)] = 1.0
    sampled = sp.csr_matrix(sp.diags(chosen) @ valid)
    sampled.eliminate_zeros()
    return sampled


def validation_callback(
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    *,
    k: int = VALIDATION_K,
    ratings: bool | None = None,
    max_users: int | None = None,
) -> ValidationCallback:
    """The ``FitOptions.validate`` callback of a fit on ``train`` validated on ``valid``, on at most
    ``max_users`` users (default: the ``validation_users`` setting; 0 for all)."""
    if max_users is None:
        max_users = get_settings().validation_users
    return ValidationCallback(train, valid, k=k, ratings=ratings, max_users=max_users)
