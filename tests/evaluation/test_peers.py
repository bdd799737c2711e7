"""Peers: EASE against its closed form, implicit and Surprise wrappers against their libraries."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError
from recsys.evaluation.peers import (
    PEER_CLASSES,
    EASEPeer,
    binarize,
    evaluate_peer_ranking,
    get_peer_class,
    missing_requirement,
    tune_peer,
)
from recsys.models.popularity import Popularity


def planted_blocks(seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Two taste groups: users 0-39 like items 0-19, users 40-79 like items 20-39 (plus a few
    popular items everyone sees). Returns (train, test) with 2 held-out group items per user."""
    rng = np.random.default_rng(seed)
    train_rows, test_rows = [], []
    for user in range(80):
        group = np.arange(20) if user < 40 else np.arange(20, 40)
        liked = rng.choice(group, size=8, replace=False)
        train_rows.append([*liked[:6], 40, 41])
        test_rows.append(list(liked[6:]))
    shape = (80, 42)

    def to_csr(rows: list[list[int]]) -> sp.csr_matrix:
        users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        items = np.concatenate([np.asarray(r) for r in rows])
        return sp.csr_matrix((np.full(len(items), 4.0), (users, items)), shape=shape)

    return to_csr(train_rows), to_csr(test_rows)


def test_ease_matches_its_closed_form() -> None:
    train, _ = planted_blocks()
    l2 = 10.0
    peer = EASEPeer(l2=l2).fit(train)

    x = binarize(train).toarray().astype(np.float64)
    inverse = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    scores = x @ weights
    scores[x > 0] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :5]

    top = peer.recommend(np.arange(80), train, 5)
    # Compare scores rather than ids so that float32 near-ties cannot flip the test.
    np.testing.assert_allclose(
        np.take_along_axis(scores, top, axis=1), np.take_along_axis(scores, expected, axis=1), rtol=1e-4
    )


def test_ease_pads_and_never_returns_seen_items() -> None:
    train = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0]], dtype=np.float32))
    top = EASEPeer(l2=1.0).fit(train).recommend(np.arange(2), train, 3)

    assert top[0].tolist() == [2, -1, -1]
    assert sorted(top[1][:2].tolist()) == [0, 2] and top[1][2] == -1


@pytest.mark.parametrize("name", ["implicit-als", "implicit-bpr", "ease-reference"])
def test_ranking_peers_find_the_planted_groups_and_beat_popularity(name: str) -> None:
    cls = get_peer_class(name)
    if missing_requirement(name):
        pytest.importorskip(str(cls.requires))
    train, test = planted_blocks()
    # Small vectors and (for ALS) a small L2 weight suit 80 users; the grids are for MovieLens.
    small = {
        "implicit-als": {"factors": 8, "regularization": 0.1, "alpha": 1.0},
        "implicit-bpr": {"factors": 8},
    }
    params = {**cls.grid[0], **small.get(name, {})}
    peer = cls(seed=1, **params).fit(train)

    metrics = evaluate_peer_ranking(peer, train, test, k=5)
    top = peer.recommend(np.arange(80), train, 5)
    baseline = evaluate_peer_ranking_of(Popularity().fit(binarize(train)), train, test)

    own_group = np.where(np.arange(80)[:, None] < 40, top < 20, (top >= 20) & (top < 40))
    assert own_group.mean() >= 0.9  # recommendations come from the user's planted group
    assert metrics["recall"] > baseline["recall"] + 0.1
    seen = train[np.arange(80)].toarray() > 0
    assert not np.take_along_axis(seen, np.maximum(top, 0), axis=1)[top >= 0].any()


def evaluate_peer_ranking_of(
    model: Popularity, train: sp.csr_matrix, test: sp.csr_matrix
) -> dict[str, float]:
    from recsys.evaluation import evaluate_ranking

    return evaluate_ranking(model, binarize(train), test, k=5)


def test_implicit_pads_when_the_catalogue_is_smaller_than_k() -> None:
    pytest.importorskip("implicit")
    train, _ = planted_blocks()
    peer = get_peer_class("implicit-als")(factors=4, iterations=2).fit(train)

    top = peer.recommend(np.arange(3), train[:3], 40)  # 42 items, 8 seen: 34 rankable

    assert top.shape == (3, 40)
    assert (top[:, 34:] == -1).all() and (top[:, :34] >= 0).all()


def test_surprise_svd_predicts_as_surprise_does() -> None:
    pytest.importorskip("surprise")
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 30, 400), rng.integers(0, 20, 400)
    ratings = sp.csr_matrix((rng.integers(1, 6, 400).astype(float), (users, items)), shape=(31, 21))
    ratings.sum_duplicates()
    ratings.data = np.clip(ratings.data, 1, 5)
    peer = get_peer_class("surprise-svd")(n_factors=4, n_epochs=5).fit(ratings)

    # user 30 and item 20 never appear in training: the biases-only fallback applies
    pairs_u, pairs_i = np.array([0, 5, 30, 7, 30]), np.array([3, 19, 2, 20, 20])
    ours = peer.predict(pairs_u, pairs_i)
    theirs = [peer.algo.predict(u, i, clip=False).est for u, i in zip(pairs_u, pairs_i, strict=True)]

    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours[-1] == pytest.approx(peer.global_mean)


def test_tuning_tries_the_grid_and_keeps_the_best() -> None:
    train, test = planted_blocks()
    tuning = tune_peer("ease-reference", train, test, k=5)

    assert [trial["params"] for trial in tuning.trials] == list(EASEPeer.grid)
    assert tuning.best == max(tuning.trials, key=lambda t: t["ndcg"])["params"]
    assert len(tune_peer("ease-reference", train, test, k=5, quick=True).trials) == 1


def test_missing_library_gives_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PEER_CLASSES["implicit-bpr"], "requires", "no_such_module_for_recsys_tests")

    message = missing_requirement("implicit-bpr")

    assert message is not None and "skipped" in message and "recsys[bench]" in message
    assert missing_requirement("ease-reference") is None
    with pytest.raises(ConfigError, match="unknown peer"):
        get_peer_class("lightfm")


def test_a_ranking_peer_refuses_to_predict_ratings() -> None:
    train, _ = planted_blocks()
    with pytest.raises(ConfigError, match="does not predict ratings"):
        EASEPeer(l2=1.0).fit(train).predict(np.array([0]), np.array([0]))
