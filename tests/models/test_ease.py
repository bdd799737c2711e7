"""EASE: the shared contract (served as an inner product of the history row and B's columns),
the closed form itself, and the memory check before fitting."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError
from recsys.models import FitOptions, Recommender
from recsys.models.ease import EASE, check_memory

from .contract import ModelContract, Planted


class TestEASE(ModelContract):
    model_name = "ease"
    params: ClassVar[dict[str, Any]] = {"l2": 20.0}
    # EASE reads a binary history: the planted low ratings (the popular block, disliked items of
    # other clusters) count as much as the liked cluster items, which halves what it can recover.
    # Popularity recovers nothing here.
    min_recall: ClassVar[float] = 0.35
    min_margin_over_popularity: ClassVar[float] = 0.35
    invalid_params: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"l2": 0}, "l2"),
        ({"max_items": 0}, "max_items"),
    ]

    def test_scores_are_inner_products_of_the_exported_vectors(
        self, fitted: Recommender, planted: Planted
    ) -> None:
        # No stored user vectors: a user's vector is their binarised history row.
        assert fitted.user_factors is None
        ids, scores = fitted.recommend(5, planted.train[[5]], N=10)
        history = (planted.train[5].toarray()[0] > 0).astype(np.float32)
        np.testing.assert_allclose(scores, fitted.item_factors[ids] @ history, rtol=1e-4, atol=1e-4)  # type: ignore[index]

    def test_fit_options_epochs_sets_the_history(self, planted: Planted) -> None:
        # Closed form: no epochs to record.
        assert self.new_model().fit(planted.train, FitOptions(epochs=2)).history == []

    def test_closed_form_matches_the_definition(self, planted: Planted) -> None:
        l2 = 50.0
        model = EASE(l2=l2).fit(planted.train)
        x = (planted.train.toarray() > 0).astype(np.float64)
        p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
        b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        # Item vector i is column i of B: scores x_u . B[:, i].
        np.testing.assert_allclose(model.item_factors, b.T, atol=2e-4)  # type: ignore[arg-type]

    def test_ratings_are_read_as_a_binary_history(self, planted: Planted) -> None:
        ones = sp.csr_matrix(planted.train, copy=True)
        ones.data[:] = 1.0
        np.testing.assert_array_equal(
            EASE(l2=50.0).fit(planted.train).item_factors,
            EASE(l2=50.0).fit(ones).item_factors,  # type: ignore[arg-type]
        )

    def test_recommending_needs_the_history_rows(self, fitted: Recommender) -> None:
        with pytest.raises(ConfigError, match="history rows"):
            fitted.user_vectors(np.array([0]))


def test_catalogues_beyond_the_limit_are_refused_before_fitting() -> None:
    with pytest.raises(ConfigError, match=r"max_items=20000.*ials or two-tower"):
        check_memory(20_001, 20_000)
    with pytest.raises(ConfigError, match=r"max_items=10.*--param max_items"):
        EASE(max_items=10).fit(sp.random(30, 11, density=0.3, format="csr", random_state=0))
    with pytest.raises(ConfigError, match="is available; train ials or two-tower"):
        check_memory(10**6, 10**7)  # 12 TB: more than any machine here has
