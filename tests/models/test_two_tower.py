"""Two-tower model: the shared contract, fold-in through the user tower, early stopping,
checkpoints and resume, warm start and item features."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import DataError
from recsys.evaluation import evaluate_ranking, recommend_top_k
from recsys.models import FitOptions, WarmStart, create_model, load_model
from recsys.models.two_tower import NEW_ITEM_BIAS_QUANTILE, TwoTower, new_item_bias

from .contract import ITEMS_PER_CLUSTER, ModelContract, Planted, planted_data

# Small and quick. No log-Q here: in the planted data popularity carries no signal beyond the
# clusters (the popular block is filler), and correcting for it puts the popular block on top.
FAST: dict[str, Any] = {
    "log_q": False,
    "dim": 16,
    "hidden": 32,
    "batch_size": 16,  # users per step: about a dozen steps per epoch on the planted data
    "learning_rate": 0.01,
    "epochs": 12,
    "n_negatives": 32,
    "title_bins": 64,
}


class TestTwoTower(ModelContract):
    model_name = "two-tower"
    params: ClassVar[dict[str, Any]] = FAST
    # As for EASE: the two-tower model reads a binary history, in which the planted low ratings
    # (the popular block, disliked items of other clusters) count as much as the liked cluster
    # items, so a softmax over every item ranks the unseen popular items beside the cluster's.
    min_recall: ClassVar[float] = 0.35
    min_margin_over_popularity: ClassVar[float] = 0.35
    invalid_params: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"temperature": 0}, "temperature"),
        ({"history_dropout": 1.0}, "history_dropout"),
        ({"batch_size": 1}, "batch_size"),
    ]


@pytest.fixture(scope="module")
def planted() -> Planted:
    return planted_data()


@pytest.fixture(scope="module")
def fitted(planted: Planted) -> TwoTower:
    model = create_model("two-tower", **FAST).fit(planted.train)
    assert isinstance(model, TwoTower)
    return model


def item_features(planted: Planted, genres: bool = True) -> dict[str, Any]:
    """Genres name the planted cluster; titles carry a cluster word plus noise."""
    names = [f"cluster{c}" if c >= 0 else "popular" for c in planted.item_cluster]
    features: dict[str, Any] = {"item_titles": [f"The {name} story {i}" for i, name in enumerate(names)]}
    if genres:
        features["item_genres"] = [[name] for name in names]
    return features


def test_fold_in_of_a_known_history_equals_the_exported_user_vector(
    fitted: TwoTower, planted: Planted
) -> None:
    assert fitted.user_factors is not None
    folded = fitted.fold_in(planted.train[:30])
    np.testing.assert_allclose(folded, fitted.user_factors[:30], atol=1e-5)
    # Unit-length tower outputs (cosine scores) and a last 1 that meets the item bias.
    np.testing.assert_allclose(np.linalg.norm(folded[:, :-1], axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(folded[:, -1], 1.0)
    assert not np.allclose(folded[0], folded[-1])


def test_item_bias_is_the_last_dimension_and_learns_popularity(fitted: TwoTower, planted: Planted) -> None:
    assert fitted.item_factors is not None
    assert fitted.item_factors.shape[1] == FAST["dim"] + 1
    bias = fitted._net.item_tower.bias.get_weights()[0][:, 0]
    # Inner products rank as the training logits do: cosine / temperature + bias, times temperature.
    np.testing.assert_allclose(fitted.item_factors[:, -1], bias * fitted.config.temperature, rtol=1e-6)
    # The popular block is seen by 80 users an item, a cluster item by at most 40.
    popular = planted.item_cluster == -1
    assert bias[popular].mean() > bias[~popular].mean() + 0.2


def test_sampled_softmax_recovers_the_planted_structure(planted: Planted) -> None:
    """Above ``full_softmax_items`` the candidates are the batch's items plus uniform ones."""
    model = create_model("two-tower", **{**FAST, "full_softmax_items": 0}).fit(planted.train)
    assert model._net.full_softmax is False  # type: ignore[attr-defined]
    assert evaluate_ranking(model, planted.train, planted.test)["recall"] >= TestTwoTower.min_recall


def test_loaded_model_folds_in_without_refitting(fitted: TwoTower, planted: Planted, tmp_path: Path) -> None:
    fitted.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.history == fitted.history
    strangers = planted.train[[1, 50, 120]]
    np.testing.assert_allclose(loaded.fold_in(strangers), fitted.fold_in(strangers), atol=1e-6)
    ids = loaded.recommend(np.array([planted.n_users, planted.n_users + 1, planted.n_users + 2]), strangers)[
        0
    ]
    np.testing.assert_array_equal(
        ids, fitted.recommend(np.array([1, 50, 120]), planted.train[[1, 50, 120]])[0]
    )
    # A loaded model saved again (as the registry copies versions) keeps everything fold-in needs.
    loaded.save(tmp_path / "again")
    again = load_model(tmp_path / "again")
    np.testing.assert_allclose(again.fold_in(strangers), fitted.fold_in(strangers), atol=1e-6)


def warm_start_from(model: TwoTower, n_items: int, new_items: np.ndarray) -> WarmStart:
    """The previous model's arrays with ``new_items`` marked unknown (as the trainer aligns them)."""
    assert model.user_factors is not None
    known = np.ones(n_items, dtype=bool)
    known[new_items] = False
    history = model._extra_arrays()["history_embedding"]
    return WarmStart(
        user_factors=model.user_factors,
        item_factors=np.where(known[:, None], model._require_items(), 0.0),
        known_users=np.ones(len(model.user_factors), dtype=bool),
        known_items=known,
        extra={"history_embedding": np.where(known[:, None], history, 0.0)},
    )


def test_warm_start_keeps_old_item_vectors_and_learns_fast(fitted: TwoTower, planted: Planted) -> None:
    new_items = np.array([0, 21, 57])
    warm = warm_start_from(fitted, planted.n_items, new_items)
    untrained = create_model("two-tower", **FAST).fit(planted.train, FitOptions(epochs=0, warm_start=warm))
    known = warm.known_items
    np.testing.assert_allclose(untrained.item_factors[known], fitted.item_factors[known], atol=1e-6)  # type: ignore[index]
    assert not np.allclose(untrained.item_factors[new_items], fitted.item_factors[new_items])  # type: ignore[index]
    # Two epochs from the warm start beat two epochs from scratch.
    continued = create_model("two-tower", **FAST).fit(planted.train, FitOptions(epochs=2, warm_start=warm))
    cold = create_model("two-tower", **FAST).fit(planted.train, FitOptions(epochs=2))
    warm_recall = evaluate_ranking(continued, planted.train, planted.test)["recall"]
    cold_recall = evaluate_ranking(cold, planted.train, planted.test)["recall"]
    assert warm_recall > cold_recall + 0.01


@pytest.mark.parametrize("genres", [True, False], ids=["genres-and-titles", "titles-only"])
def test_item_features_are_used(planted: Planted, genres: bool) -> None:
    features = item_features(planted, genres=genres)
    model = create_model("two-tower", **FAST).fit(planted.train, FitOptions(features=features))
    assert isinstance(model, TwoTower)
    recall = evaluate_ranking(model, planted.train, planted.test)["recall"]
    assert recall >= TestTwoTower.min_recall
    layers = model._net.item_tower
    assert (layers.genre_projection is not None) == genres
    assert np.abs(layers.title_embedding.get_weights()[0]).sum() > 0  # titles were trained


def test_features_with_the_wrong_length_are_refused(planted: Planted) -> None:
    features = {"item_genres": [["a"]] * (planted.n_items - 1)}
    with pytest.raises(DataError, match=f"expected {planted.n_items}"):
        create_model("two-tower", **FAST).fit(planted.train, FitOptions(features=features))


def test_feature_only_items_score_by_their_cluster(planted: Planted) -> None:
    """An item nobody interacted with still reaches its genre's users through its features."""
    train = sp.lil_matrix(planted.train)
    cold_item = 3 * ITEMS_PER_CLUSTER + 5  # cluster 3
    train[:, cold_item] = 0
    train = sp.csr_matrix(train)
    train.eliminate_zeros()
    model = create_model("two-tower", **FAST).fit(train, FitOptions(features=item_features(planted)))
    scores = model.user_factors @ model.item_factors[cold_item]  # type: ignore[index,operator]
    own = planted.user_cluster == 3
    assert scores[own].mean() > scores[~own].mean() + 0.1


def test_items_without_interactions_get_vectors_from_their_features_alone(planted: Planted) -> None:
    """Their id embedding never left its random start: two new items with the same genres and title
    get the same vector, one that ranks among its genre's items; without features, none."""
    train = sp.lil_matrix(planted.train)
    new_items = np.array([2 * ITEMS_PER_CLUSTER + 1, 2 * ITEMS_PER_CLUSTER + 2])  # cluster 2
    train[:, new_items] = 0
    train = sp.csr_matrix(train)
    train.eliminate_zeros()
    features = item_features(planted)
    features["item_titles"][new_items[0]] = features["item_titles"][new_items[1]] = "A premiere"
    params = {**FAST, "n_negatives": 0}  # the default: no negative ever reaches the new items
    model = create_model("two-tower", **params).fit(train, FitOptions(features=features))
    assert model.item_factors is not None
    vectors = model.item_factors[:, :-1]  # the towers' part (the last column is the item bias)
    np.testing.assert_allclose(vectors[new_items[0]], vectors[new_items[1]], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors[new_items], axis=1), 1.0, atol=1e-5)
    nearest = np.argsort(-(vectors @ vectors[new_items[0]]))[2:12]  # after the two new items
    assert (planted.item_cluster[nearest] == 2).mean() >= 0.9
    no_features = create_model("two-tower", **params).fit(train)
    assert no_features.item_factors is not None
    np.testing.assert_array_equal(no_features.item_factors[new_items, :-1], 0.0)


def test_new_item_bias_is_a_quantile_of_the_trained_items() -> None:
    """Only the trained items' biases count (the untrained ones never moved from their start)."""
    bias = np.linspace(-1.0, 1.0, 101, dtype=np.float32)
    trained = np.ones(101, dtype=bool)
    trained[-20:] = False  # the 20 highest: untrained, ignored
    assert new_item_bias(bias, trained) == pytest.approx(np.quantile(bias[:81], NEW_ITEM_BIAS_QUANTILE))
    assert new_item_bias(bias, trained, quantile=0.5) == pytest.approx(-0.2)  # the median of -1 .. 0.6
    assert new_item_bias(bias, trained, quantile=0.0) == pytest.approx(-1.0)
    assert bias[:81].min() < new_item_bias(bias, trained) < bias[:81].max()


def test_new_item_surfaces_in_whole_catalogue_lists_of_its_clusters_users(planted: Planted) -> None:
    """An item nobody interacted with, with the genres and title of cluster 3, enters the top 10 of
    the whole catalogue for cluster 3's users (the lowest bias kept it out of every list) and
    stays out of the other clusters' lists."""
    train = sp.lil_matrix(planted.train)
    new_item = 3 * ITEMS_PER_CLUSTER + 5
    train[:, new_item] = 0
    train = sp.csr_matrix(train)
    train.eliminate_zeros()
    model = create_model("two-tower", **FAST).fit(train, FitOptions(features=item_features(planted)))
    assert model.item_factors is not None
    trained_bias = np.quantile(np.delete(model.item_factors[:, -1], new_item), NEW_ITEM_BIAS_QUANTILE)
    assert model.item_factors[new_item, -1] == pytest.approx(trained_bias)
    top = recommend_top_k(model, train, np.arange(train.shape[0]), k=10)
    listed = (top == new_item).any(axis=1)
    own = planted.user_cluster == 3
    assert listed[own].mean() >= 0.5
    assert listed[~own].mean() <= 0.05
