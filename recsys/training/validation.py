"""Validation metrics for early stopping, handed to a model's fit as a callback.

Models never import the evaluation code (it imports the models): the caller builds the callback
here, and ``FitOptions.validate`` carries it into the epoch loop, which calls it after each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recsys.evaluation.metrics import rmse
from recsys.evaluation.ranking import evaluate_ranking
from recsys.models.base import Recommender

#: Cut-off of the validation ranking metric (the protocol's k).
VALIDATION_K = 10


@dataclass(frozen=True)
class ValidationCallback:
    """Measures a model against the held-out ``valid`` pairs (a ``FitOptions.validate`` callback).

    Called with a model, it returns ``val_ndcg`` (nDCG@``k`` with the ``train`` items excluded,
    through the model's own ``recommend``) and, for models that predict ratings, ``val_rmse`` on
    the held-out ratings with predictions clipped to the training range. ``ratings=None`` decides
    per model: those with a ``predict`` method get the RMSE.
    """

    train: sp.csr_matrix
    valid: sp.csr_matrix
    k: int = VALIDATION_K
    ratings: bool | None = None
    _pairs: sp.coo_matrix = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.train.shape != self.valid.shape:
            raise ValueError(f"train and validation shapes differ: {self.train.shape} vs {self.valid.shape}")
        object.__setattr__(self, "train", sp.csr_matrix(self.train))
        object.__setattr__(self, "valid", sp.csr_matrix(self.valid))
        object.__setattr__(self, "_pairs", sp.coo_matrix(self.valid))

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


def validation_callback(
    train: sp.csr_matrix, valid: sp.csr_matrix, *, k: int = VALIDATION_K, ratings: bool | None = None
) -> ValidationCallback:
    """The ``FitOptions.validate`` callback of a fit on ``train`` validated on ``valid``."""
    return ValidationCallback(train, valid, k=k, ratings=ratings)
