"""The contract every model honours, as a test mixin each model's test module inherits.

The data has planted structure with a known answer: users belong to taste clusters and rate
their cluster's items high and a few other clusters' items low; a block of globally popular
items is seen by everyone and rated low.
A model that learns the structure recommends the user's unseen cluster items (the held-out
ones are among them); the popularity baseline recommends the popular block and misses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError, NotFittedError
from recsys.evaluation import evaluate_ranking
from recsys.models import FitOptions, Recommender, WarmStart, create_model, load_model
from recsys.models.base import EpochConfig, refit_epochs
from recsys.runtime.checkpoint import CHECKPOINT_FILE
from recsys.training.validation import validation_callback

N_CLUSTERS = 5
USERS_PER_CLUSTER = 40
ITEMS_PER_CLUSTER = 20
N_POPULAR = 20
LIKED_PER_USER = 12
POPULAR_PER_USER = 8
HELD_OUT_PER_USER = 3
DISLIKED_PER_USER = 4


@dataclass(frozen=True)
class Planted:
    train: sp.csr_matrix  # ratings: 4-5 for cluster items, 1-2 for popular ones
    test: sp.csr_matrix  # held-out cluster items (value 1)
    user_cluster: np.ndarray
    item_cluster: np.ndarray  # -1 for the popular block

    @property
    def n_users(self) -> int:
        return int(self.train.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])


def planted_data(seed: int = 7) -> Planted:
    rng = np.random.default_rng(seed)
    n_users = N_CLUSTERS * USERS_PER_CLUSTER
    user_cluster = np.repeat(np.arange(N_CLUSTERS), USERS_PER_CLUSTER)
    item_cluster = np.concatenate(
        [np.repeat(np.arange(N_CLUSTERS), ITEMS_PER_CLUSTER), np.full(N_POPULAR, -1)]
    )
    popular = np.flatnonzero(item_cluster == -1)
    # One row of random keys per user: the smallest keys pick that user's items, vectorised.
    cluster_pick = np.argsort(rng.random((n_users, ITEMS_PER_CLUSTER)), axis=1)[:, :LIKED_PER_USER]
    liked = user_cluster[:, None] * ITEMS_PER_CLUSTER + cluster_pick
    seen_popular = popular[np.argsort(rng.random((n_users, N_POPULAR)), axis=1)[:, :POPULAR_PER_USER]]
    # Items of other clusters: skip past the user's own cluster (explicit models need this signal).
    n_other = (N_CLUSTERS - 1) * ITEMS_PER_CLUSTER
    other = np.argsort(rng.random((n_users, n_other)), axis=1)[:, :DISLIKED_PER_USER]
    own_start = user_cluster[:, None] * ITEMS_PER_CLUSTER
    disliked = np.where(other >= own_start, other + ITEMS_PER_CLUSTER, other)
    held_out = liked[:, :HELD_OUT_PER_USER]
    train_liked = liked[:, HELD_OUT_PER_USER:]
    users_liked = np.repeat(np.arange(n_users), train_liked.shape[1])
    users_popular = np.repeat(np.arange(n_users), POPULAR_PER_USER)
    users_disliked = np.repeat(np.arange(n_users), DISLIKED_PER_USER)
    rows = np.concatenate([users_liked, users_popular, users_disliked])
    cols = np.concatenate([train_liked.ravel(), seen_popular.ravel(), disliked.ravel()])
    values = np.concatenate(
        [
            rng.integers(4, 6, users_liked.size),
            rng.integers(1, 3, users_popular.size),
            np.ones(users_disliked.size),
        ]
    ).astype(np.float32)
    shape = (n_users, len(item_cluster))
    train = sp.csr_matrix((values, (rows, cols)), shape=shape)
    test_rows = np.repeat(np.arange(n_users), HELD_OUT_PER_USER)
    test = sp.csr_matrix((np.ones(test_rows.size, np.float32), (test_rows, held_out.ravel())), shape=shape)
    return Planted(train, test, user_cluster, item_cluster)


class ModelContract:
    """Inherit and set ``model_name`` and ``params`` (small and fast settings for the planted data)."""

    model_name: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}
    #: Parameters that must be refused, each with a word the error message has to contain.
    invalid_params: ClassVar[list[tuple[dict[str, Any], str]]] = []
    #: Recall@10 on the held-out cluster items the model must reach (the best possible is 1).
    min_recall: ClassVar[float] = 0.7
    #: How far above the popularity baseline its recall@10 must be.
    min_margin_over_popularity: ClassVar[float] = 0.4
    #: Epoch limit of the early-stopping check (models that train in epochs).
    stopping_limit: ClassVar[int] = 12

    @pytest.fixture(scope="class")
    @classmethod
    def planted(cls) -> Planted:
        return planted_data()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, planted: Planted) -> Recommender:
        return cls.new_model().fit(planted.train)

    @classmethod
    def new_model(cls, **overrides: Any) -> Recommender:
        return create_model(cls.model_name, **{**cls.params, **overrides})

    # --- quality ------------------------------------------------------------------------------------

    def test_recovers_planted_structure_and_beats_popularity(
        self, planted: Planted, fitted: Recommender
    ) -> None:
        metrics = evaluate_ranking(fitted, planted.train, planted.test, k=10)
        baseline = evaluate_ranking(
            create_model("popularity").fit(planted.train), planted.train, planted.test
        )
        assert metrics["recall"] >= self.min_recall
        assert metrics["recall"] >= baseline["recall"] + self.min_margin_over_popularity

    def test_recommendations_stay_in_the_users_cluster(self, planted: Planted, fitted: Recommender) -> None:
        users = np.arange(planted.n_users)
        ids, _ = fitted.recommend(users, planted.train, N=5)
        same_cluster = planted.item_cluster[ids] == planted.user_cluster[:, None]
        assert same_cluster.mean() >= self.min_recall

    # --- users --------------------------------------------------------------------------------------

    def test_unknown_user_is_folded_in_from_their_history(
        self, planted: Planted, fitted: Recommender
    ) -> None:
        # Present known users' rows as users the model has never seen (indices past the trained ones).
        users = np.arange(0, planted.n_users, 7)
        strangers = users + planted.n_users
        rows = planted.train[users]
        folded_ids, folded_scores = fitted.recommend(strangers, rows, N=10)
        assert folded_ids.shape == (len(users), 10)
        assert np.isfinite(folded_scores).all()
        assert not (rows.multiply(sp.csr_matrix(_one_hot(folded_ids, planted.n_items)))).nnz
        same_cluster = planted.item_cluster[folded_ids[:, :5]] == planted.user_cluster[users][:, None]
        assert same_cluster.mean() >= self.min_recall

    def test_one_history_folds_in_as_its_row(self, fitted: Recommender, planted: Planted) -> None:
        rows = planted.train[:3]
        blocked = fitted.fold_in(rows)
        for user in range(3):
            row = rows[user]
            np.testing.assert_allclose(
                fitted.fold_in_one(row.indices, row.data)[0], blocked[user], rtol=1e-5, atol=1e-6
            )

    def test_empty_history_gives_a_full_finite_list(self, fitted: Recommender, planted: Planted) -> None:
        empty = sp.csr_matrix((2, planted.n_items), dtype=np.float32)
        vectors = fitted.fold_in(empty)
        assert vectors.shape == (2, fitted._require_items().shape[1])
        assert np.isfinite(vectors).all()
        ids, scores = fitted.recommend(np.array([planted.n_users, planted.n_users + 1]), empty, N=10)
        assert (ids >= 0).all() and np.isfinite(scores).all()

    # --- recommend / similar_items --------------------------------------------------------------------

    def test_recommend_excludes_seen_items_and_pads(self, fitted: Recommender, planted: Planted) -> None:
        user = 3
        seen = planted.train[user].indices
        banned = np.array([i for i in range(planted.n_items) if i not in set(seen)][:4])
        ids, scores = fitted.recommend(user, planted.train[user], N=planted.n_items, filter_items=banned)
        n_allowed = planted.n_items - len(seen) - len(banned)
        assert ids.shape == (planted.n_items,)
        assert set(ids[:n_allowed]) == set(range(planted.n_items)) - set(seen) - set(banned)
        assert (ids[n_allowed:] == -1).all() and np.isneginf(scores[n_allowed:]).all()
        assert np.all(np.diff(scores[:n_allowed]) <= 1e-6)  # best first
        kept, _ = fitted.recommend(
            user, planted.train[user], N=planted.n_items, filter_already_liked_items=False
        )
        assert set(seen) <= set(kept)

    def test_recommend_takes_exactly_one_row_per_requested_user(
        self, fitted: Recommender, planted: Planted
    ) -> None:
        users = np.array([1, 0])
        # Row i is the history of users[i]: user 1 never gets its own training items back.
        ids, _ = fitted.recommend(users, planted.train[users], N=10)
        for row, user in zip(ids, users, strict=True):
            assert not set(row) & set(planted.train[user].indices)
        np.testing.assert_array_equal(ids[0], fitted.recommend(1, planted.train[1], N=10)[0])
        # The whole matrix is not guessed at (a guess once paired user 1 with user 0's row).
        expected = rf"got shape \({planted.n_users}, {planted.n_items}\), expected \(2, {planted.n_items}\)"
        with pytest.raises(ValueError, match=expected):
            fitted.recommend(users, planted.train, N=10)
        with pytest.raises(ValueError, match=rf"expected \(1, {planted.n_items}\)"):
            fitted.recommend(1, planted.train[[1, 0]], N=10)

    def test_scores_are_inner_products_of_the_exported_vectors(
        self, fitted: Recommender, planted: Planted
    ) -> None:
        ids, scores = fitted.recommend(5, planted.train[5], N=10)
        assert fitted.user_factors is not None
        expected = fitted.item_factors[ids] @ fitted.user_factors[5]  # type: ignore[index]
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)

    def test_similar_items_exclude_the_item_itself(self, fitted: Recommender, planted: Planted) -> None:
        items = np.arange(0, planted.n_items, 11)
        ids, scores = fitted.similar_items(items, N=5)
        assert ids.shape == (len(items), 5)
        assert not (ids == items[:, None]).any()
        assert (ids >= 0).all() and np.isfinite(scores).all()

    # --- persistence and reproducibility --------------------------------------------------------------

    def test_save_load_round_trip_gives_identical_recommendations(
        self, fitted: Recommender, planted: Planted, tmp_path: Path
    ) -> None:
        fitted.save(tmp_path / "model")
        loaded = load_model(tmp_path / "model")
        assert type(loaded) is type(fitted) and loaded.params == fitted.params
        users = np.arange(planted.n_users)
        before = fitted.recommend(users, planted.train, N=10)
        after = loaded.recommend(users, planted.train, N=10)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
        np.testing.assert_array_equal(fitted.similar_items(3)[0], loaded.similar_items(3)[0])
        np.testing.assert_allclose(
            fitted.fold_in(planted.train[:4]), loaded.fold_in(planted.train[:4]), atol=1e-6
        )

    def test_same_seed_gives_identical_vectors(self, fitted: Recommender, planted: Planted) -> None:
        again = self.new_model().fit(planted.train)
        np.testing.assert_array_equal(again.item_factors, fitted.item_factors)  # type: ignore[arg-type]
        np.testing.assert_array_equal(again.user_factors, fitted.user_factors)  # type: ignore[arg-type]

    # --- errors ---------------------------------------------------------------------------------------

    def test_invalid_parameters_are_refused_with_the_field_named(self) -> None:
        with pytest.raises(ConfigError, match="no_such_parameter"):
            self.new_model(no_such_parameter=1)
        for params, word in self.invalid_params:
            with pytest.raises(ConfigError, match=word):
                self.new_model(**params)

    def test_unfitted_model_refuses_to_recommend(self, planted: Planted) -> None:
        with pytest.raises(NotFittedError):
            self.new_model().recommend(0, planted.train[0], N=3)

    def test_fit_options_epochs_sets_the_history(self, planted: Planted) -> None:
        model = self.new_model().fit(planted.train, FitOptions(epochs=2))
        assert [entry["epoch"] for entry in model.history] == [1, 2]
        assert all(np.isfinite(entry["loss"]) for entry in model.history)

    # --- the epoch loop: resume, early stopping, warm start (models that train in epochs) ---------

    def require_epochs(self) -> None:
        if not isinstance(self.new_model().config, EpochConfig):
            pytest.skip(f"the {self.model_name} model does not train in epochs")

    def test_the_epoch_limit_has_one_name_and_former_names_still_load(self) -> None:
        self.require_epochs()
        config_class = self.new_model().Config
        assert "epochs" in config_class.model_fields
        for former in ("iterations", "max_epochs"):  # as saved by earlier versions
            config = config_class(**{**self.params, former: 3})
            assert config.model_dump()["epochs"] == 3 and former not in config.model_dump()

    def test_resume_continues_from_the_checkpoint_exactly(self, planted: Planted, tmp_path: Path) -> None:
        self.require_epochs()
        straight = self.new_model().fit(planted.train, FitOptions(epochs=4))
        checkpoints = tmp_path / "checkpoints"
        self.new_model().fit(planted.train, FitOptions(epochs=2, checkpoint_dir=checkpoints))
        assert (checkpoints / CHECKPOINT_FILE).is_file()
        resumed = self.new_model().fit(
            planted.train, FitOptions(epochs=4, checkpoint_dir=checkpoints, resume=True)
        )
        assert [entry["epoch"] for entry in resumed.history] == [1, 2, 3, 4]
        losses = [entry["loss"] for entry in resumed.history]
        np.testing.assert_allclose(losses, [entry["loss"] for entry in straight.history], rtol=1e-4)
        np.testing.assert_allclose(resumed.item_factors, straight.item_factors, atol=1e-5)  # type: ignore[arg-type]
        np.testing.assert_allclose(resumed.user_factors, straight.user_factors, atol=1e-5)  # type: ignore[arg-type]
        # A checkpoint of other data (one item fewer) is refused, not half-loaded.
        with pytest.raises(ConfigError, match="checkpoint"):
            self.new_model().fit(planted.train[:, 1:], FitOptions(checkpoint_dir=checkpoints, resume=True))

    def test_early_stopping_keeps_the_epoch_its_rule_chose(self, planted: Planted, tmp_path: Path) -> None:
        self.require_epochs()
        validate = validation_callback(planted.train, planted.test * 5.0)  # ratings for RMSE models
        limit, patience = self.stopping_limit, 2
        model = self.new_model(epochs=limit, patience=patience, min_epochs=1)
        model.fit(planted.train, FitOptions(validate=validate, log_dir=tmp_path / "logs"))
        rule, chosen, history = model.stopping_rule(), refit_epochs(model), model.history
        assert rule.metric in history[0] and chosen is not None
        assert [entry["epoch"] for entry in history] == list(range(1, len(history) + 1))
        assert len(history) <= limit
        if len(history) < limit:  # stopped early: patience epochs after the chosen one
            assert len(history) - chosen == patience
        # The fitted model is the chosen epoch's, not the last one's.
        assert validate(model)[rule.metric] == pytest.approx(history[chosen - 1][rule.metric], abs=1e-6)
        assert list((tmp_path / "logs").glob("events.out.tfevents.*"))  # TensorBoard scalars

    def test_warm_start_from_its_own_vectors_keeps_what_it_learned(
        self, planted: Planted, fitted: Recommender
    ) -> None:
        self.require_epochs()
        assert fitted.user_factors is not None
        warm = WarmStart(
            user_factors=fitted.user_factors,
            item_factors=fitted._require_items(),
            known_users=np.ones(planted.n_users, bool),
            known_items=np.ones(planted.n_items, bool),
            extra=fitted._extra_arrays(),
        )
        # One epoch from the fitted vectors against one from scratch, on the same data.
        continued = self.new_model().fit(planted.train, FitOptions(epochs=1, warm_start=warm))
        cold = self.new_model().fit(planted.train, FitOptions(epochs=1))
        warm_recall = evaluate_ranking(continued, planted.train, planted.test)["recall"]
        cold_recall = evaluate_ranking(cold, planted.train, planted.test)["recall"]
        assert warm_recall >= max(cold_recall - 0.02, self.min_recall - 0.05)

    def test_warm_start_vectors_of_another_size_are_refused(
        self, planted: Planted, fitted: Recommender
    ) -> None:
        self.require_epochs()
        assert fitted.user_factors is not None
        narrow = WarmStart(
            user_factors=fitted.user_factors[:, 1:],
            item_factors=fitted._require_items()[:, 1:],
            known_users=np.ones(planted.n_users, bool),
            known_items=np.ones(planted.n_items, bool),
        )
        with pytest.raises(ConfigError, match=r"warm.start .*shape"):
            self.new_model().fit(planted.train, FitOptions(epochs=1, warm_start=narrow))


def _one_hot(ids: np.ndarray, n_items: int) -> np.ndarray:
    dense = np.zeros((len(ids), n_items), dtype=np.float32)
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])
    valid = ids.ravel() >= 0
    dense[rows[valid], ids.ravel()[valid]] = 1
    return dense
