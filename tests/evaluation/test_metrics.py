"""Ranking and rating metrics against hand-computed examples (docs/protocol.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.evaluation import coverage, evaluate_ranking, mae, ranking_metrics, rmse
from recsys.models.popularity import Popularity


def rows_to_csr(rows: list[list[int]], n_items: int, value: float = 1.0) -> sp.csr_matrix:
    users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    items = np.array([i for r in rows for i in r], dtype=np.int64)
    return sp.csr_matrix((np.full(len(items), value), (users, items)), shape=(len(rows), n_items))


# Four users, six items, k = 3 (worked out by hand below):
#   user 0: test {1, 4}, top [1, 2, 4]   -> hits at ranks 1 and 3
#   user 1: test {0, 1, 2, 3, 5} (more than k), top [5, -1, -1] -> hit at rank 1; the padding
#           (-1) must not count as item 0, which is a test item
#   user 2: no test item                  -> not evaluated
#   user 3: test {0}, top [2, 3, 4]       -> no hit
TOP = np.array([[1, 2, 4], [5, -1, -1], [0, 1, 2], [2, 3, 4]])
TEST = rows_to_csr([[1, 4], [0, 1, 2, 3, 5], [], [0]], n_items=6)
LOG3 = math.log2(3)


def test_ranking_metrics_match_hand_computation() -> None:
    metrics = ranking_metrics(TOP, TEST, n_items=6)

    assert metrics["users"] == 3
    assert metrics["precision"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert metrics["recall"] == pytest.approx((2 / 2 + 1 / 5 + 0) / 3)
    ndcg_0 = (1 + 1 / 2) / (1 + 1 / LOG3)  # ideal: min(k, 2) = 2 hits
    ndcg_1 = 1 / (1 + 1 / LOG3 + 1 / 2)  # ideal: min(k, 5) = 3 hits
    assert metrics["ndcg"] == pytest.approx((ndcg_0 + ndcg_1 + 0) / 3)
    ap_0 = (1 / 1 + 2 / 3) / 2
    ap_1 = (1 / 1) / 3
    assert metrics["map"] == pytest.approx((ap_0 + ap_1 + 0) / 3)
    assert metrics["hr"] == pytest.approx(2 / 3)
    # coverage over evaluated users only: {1, 2, 4} + {5} + {2, 3, 4} = 5 of 6 items
    assert metrics["coverage"] == pytest.approx(5 / 6)


def test_perfect_ranking_scores_one_even_with_fewer_test_items_than_k() -> None:
    top = np.array([[3, 0, 1, 2]])
    test = rows_to_csr([[3]], n_items=5)

    metrics = ranking_metrics(top, test)

    assert metrics["ndcg"] == pytest.approx(1.0)
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["recall"] == pytest.approx(1.0)
    assert metrics["precision"] == pytest.approx(1 / 4)
    assert "coverage" not in metrics


def test_no_hits_give_zero_everywhere() -> None:
    metrics = ranking_metrics(np.array([[0, 1], [-1, -1]]), rows_to_csr([[2], [0, 1]], n_items=3))

    for name in ("precision", "recall", "ndcg", "map", "hr"):
        assert metrics[name] == 0.0


def test_a_test_item_counts_whatever_its_stored_value() -> None:
    # Protocol K ignores values: an explicitly stored 0 (for example a zero-weight event) is a
    # test item, and counting it in |test| but not as a hit would bias recall downwards.
    test = rows_to_csr([[2]], n_items=3, value=0.0)
    assert test.nnz == 1

    metrics = ranking_metrics(np.array([[2]]), test)

    assert metrics["recall"] == 1.0


def test_duplicate_test_entries_count_once() -> None:
    test = sp.csr_matrix((np.ones(2), ([0, 0], [1, 1])), shape=(1, 3))  # (0, 1) stored twice

    assert ranking_metrics(np.array([[1, 0]]), test)["recall"] == 1.0


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="no user has a test item"):
        ranking_metrics(np.array([[0]]), rows_to_csr([[]], n_items=2))
    with pytest.raises(ValueError, match="k >= 1"):
        ranking_metrics(np.zeros((1, 0), dtype=np.int64), rows_to_csr([[1]], n_items=2))
    with pytest.raises(ValueError, match="one row per ranked user"):
        ranking_metrics(np.array([[0], [1]]), rows_to_csr([[1]], n_items=2))


def test_coverage_ignores_padding() -> None:
    assert coverage(np.array([[0, -1], [0, 2]]), n_items=4) == pytest.approx(2 / 4)


def test_rmse_and_mae_by_hand() -> None:
    predicted, truth = np.array([3.0, 4.0, 5.0]), np.array([4.0, 4.0, 2.0])  # errors -1, 0, 3

    assert rmse(predicted, truth) == pytest.approx(math.sqrt(10 / 3))
    assert mae(predicted, truth) == pytest.approx(4 / 3)


def test_rmse_refuses_shapes_that_would_broadcast() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        rmse(np.ones((3, 1)), np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        mae(np.array([]), np.array([]))


def test_evaluate_ranking_excludes_train_items_and_pads() -> None:
    # Popularity counts: item 0 = 4, item 1 = 3, item 2 = 2, item 3 = 1, item 4 = 0.
    train = rows_to_csr([[0, 1, 2, 3], [0, 1, 2], [0, 1], [0]], n_items=5)
    test = rows_to_csr([[4], [3], [2, 4], []], n_items=5)
    model = Popularity().fit(train)

    metrics = evaluate_ranking(model, train, test, k=2)

    # user 0 gets [4, -1] (everything else seen), user 1 [3, 4], user 2 [2, 3]; user 3 has no test
    assert metrics["users"] == 3
    assert metrics["precision"] == pytest.approx(0.5)
    assert metrics["recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert metrics["ndcg"] == pytest.approx((1 + 1 + 1 / (1 + 1 / LOG3)) / 3)
    assert metrics["map"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert metrics["hr"] == 1.0
    assert metrics["coverage"] == pytest.approx(3 / 5)


def test_evaluate_ranking_with_tied_scores_returns_one_of_the_tied_items_once() -> None:
    # Items 1 and 2 tie (two users each); both are the user's test items, so whichever the
    # index puts first, k = 1 is a hit, and k = 2 must return both, each once.
    train = rows_to_csr([[0], [1, 2], [1, 2], [0, 3]], n_items=4)
    test = rows_to_csr([[1, 2], [], [], []], n_items=4)
    model = Popularity().fit(train)

    assert evaluate_ranking(model, train, test, k=1)["precision"] == 1.0
    both = evaluate_ranking(model, train, test, k=2)
    assert both["recall"] == 1.0
    assert both["ndcg"] == pytest.approx(1.0)


def test_evaluate_ranking_refuses_mismatched_shapes() -> None:
    train = rows_to_csr([[0]], n_items=3)
    with pytest.raises(ValueError, match="shapes differ"):
        evaluate_ranking(Popularity().fit(train), train, rows_to_csr([[0]], n_items=4))
