"""Popularity: the contract, with the known answer of the planted data (the popular block)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.models import FitOptions, Recommender

from .contract import ModelContract, Planted


class TestPopularity(ModelContract):
    model_name = "popularity"
    invalid_params: ClassVar[list[tuple[dict[str, Any], str]]] = [({"window_seconds": 0}, "window_seconds")]

    # The baseline cannot beat itself: it must find exactly the planted popular block instead.
    def test_recovers_planted_structure_and_beats_popularity(
        self, planted: Planted, fitted: Recommender
    ) -> None:
        ids, _ = fitted.recommend(np.arange(planted.n_users), planted.train, N=5)
        assert (planted.item_cluster[ids] == -1).all()

    def test_recommendations_stay_in_the_users_cluster(self, planted: Planted, fitted: Recommender) -> None:
        counts = np.diff(sp.csc_matrix(planted.train).indptr)
        ids, scores = fitted.recommend(0, sp.csr_matrix((1, planted.n_items)), N=3)
        np.testing.assert_array_equal(scores, np.sort(counts)[::-1][:3])
        np.testing.assert_array_equal(counts[ids], scores)

    def test_unknown_user_is_folded_in_from_their_history(
        self, planted: Planted, fitted: Recommender
    ) -> None:
        rows = planted.train[:3]
        folded = fitted.recommend(np.arange(3) + planted.n_users, rows, N=10)
        known = fitted.recommend(np.arange(3), rows, N=10)
        np.testing.assert_array_equal(folded[0], known[0])

    def test_fit_options_epochs_sets_the_history(self, planted: Planted) -> None:
        # Counting has no epochs: nothing to record.
        assert self.new_model().fit(planted.train, FitOptions(epochs=2)).history == []

    def test_window_counts_only_recent_interactions(self, planted: Planted) -> None:
        stamps = planted.train.copy()
        stamps.data[:] = 100.0
        recent_item = planted.train[0].indices[0]
        stamps.data[stamps.indices == recent_item] = 1_000.0
        model = self.new_model(window_seconds=10).fit(
            planted.train, FitOptions(features={"timestamps": stamps})
        )
        ids, _ = model.recommend(0, sp.csr_matrix((1, planted.train.shape[1])), N=1)
        assert ids[0] == recent_item
