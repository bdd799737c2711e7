"""FAISS indexes against the exact numpy reference: results, exclusion, padding, recall, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.index import PAD_ID, ExactIndex, build_index, load_index
from recsys.index.faiss_index import FaissIndex, HnswParams, recall_at_k
from recsys.settings import Settings


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _random_exclusions(n_rows: int, n_items: int, per_row: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    cols = np.concatenate([rng.choice(n_items, per_row, replace=False) for _ in range(n_rows)])
    rows = np.repeat(np.arange(n_rows), per_row)
    return sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n_rows, n_items))


@pytest.fixture
def small_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, exact_index_max_items=1000, min_index_recall=0.95)


def test_flat_index_equals_exact_index() -> None:
    items, queries = _vectors(500, 16, 0), _vectors(64, 16, 1)
    exclude = _random_exclusions(64, 500, 30, seed=2)
    for excluded in (None, exclude):
        ids, scores = FaissIndex.flat(items).search(queries, 20, excluded)
        want_ids, want_scores = ExactIndex(items).search(queries, 20, excluded)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_exclusion_returns_exactly_k_unexcluded_items() -> None:
    items, queries = _vectors(300, 8, 3), _vectors(40, 8, 4)
    # Exclude each query's own true top 50, the hardest case for an over-fetch margin.
    true_top, _ = ExactIndex(items).search(queries, 50)
    rows = np.repeat(np.arange(40), 50)
    exclude = sp.csr_matrix((np.ones(rows.size), (rows, true_top.ravel())), shape=(40, 300))
    ids, scores = FaissIndex.flat(items).search(queries, 10, exclude)
    assert ids.shape == (40, 10)
    assert (ids != PAD_ID).all() and np.isfinite(scores).all()
    assert not (ids[:, :, None] == true_top[:, None, :]).any()
    np.testing.assert_array_equal(ids, ExactIndex(items).search(queries, 10, exclude)[0])


def test_padding_when_catalogue_smaller_than_k() -> None:
    items = _vectors(6, 4, 5)
    exclude = sp.csr_matrix(([1.0, 1.0], ([0, 0], [1, 4])), shape=(2, 6))
    ids, scores = FaissIndex.flat(items).search(_vectors(2, 4, 6), 10, exclude)
    assert ids.shape == (2, 10)
    assert (ids[0, :4] != PAD_ID).all() and (ids[0, 4:] == PAD_ID).all()
    assert (ids[1, :6] != PAD_ID).all() and (ids[1, 6:] == PAD_ID).all()
    assert np.isneginf(scores[ids == PAD_ID]).all()
    assert not {1, 4} & set(ids[0].tolist())


def test_build_index_chooses_flat_below_threshold(small_settings: Settings) -> None:
    index = build_index(_vectors(1000, 8, 7), small_settings)
    assert isinstance(index, FaissIndex)
    assert index.kind == "flat" and index.is_exact and index.recall == 1.0


def test_hnsw_recall_is_measured_stored_and_reloaded(small_settings: Settings, tmp_path: Path) -> None:
    items, users = _vectors(5000, 24, 8), _vectors(2000, 24, 9)
    index = build_index(items, small_settings, queries=users)
    assert isinstance(index, FaissIndex) and index.kind == "hnsw" and not index.is_exact
    assert index.recall >= 0.95
    # The stored figure is the real one: recompute recall on fresh queries at the chosen efSearch.
    fresh = _vectors(500, 24, 10)
    found, _ = index.search(fresh, 10)
    truth, _ = ExactIndex(items).search(fresh, 10)
    assert recall_at_k(found, truth) >= 0.9
    index.save(tmp_path / "index")
    meta = json.loads((tmp_path / "index" / "meta.json").read_text())
    assert meta["kind"] == "hnsw" and meta["recall_at_10"] == index.recall
    assert meta["ef_search"] >= HnswParams().ef_search_start
    loaded = load_index(tmp_path / "index")
    assert isinstance(loaded, FaissIndex) and loaded.meta["ef_search"] == meta["ef_search"]
    np.testing.assert_array_equal(loaded.search(fresh, 10)[0], found)


def test_hnsw_exclusion_still_returns_k(small_settings: Settings) -> None:
    items = _vectors(3000, 16, 11)
    index = FaissIndex.hnsw(items, 0.95)
    queries = _vectors(30, 16, 12)
    exclude = _random_exclusions(30, 3000, 200, seed=13)
    ids, _ = index.search(queries, 25, exclude)
    assert (ids != PAD_ID).all()
    hit = exclude[np.repeat(np.arange(30), 25), ids.ravel()]
    assert hit.sum() == 0
    assert all(len(set(row)) == 25 for row in ids.tolist())


def test_unreachable_recall_falls_back_to_exact() -> None:
    params = HnswParams(m=4, ef_construction=8, ef_search_start=1, ef_search_max=1)
    index = FaissIndex.hnsw(_vectors(2000, 32, 14), 1.0, params=params)
    assert index.kind == "flat" and "fallback" in index.meta


def test_flat_save_load_round_trip(tmp_path: Path) -> None:
    items, queries = _vectors(100, 8, 15), _vectors(5, 8, 16)
    index = FaissIndex.flat(items)
    index.save(tmp_path / "flat")
    loaded = load_index(tmp_path / "flat")
    np.testing.assert_array_equal(loaded.search(queries, 7)[0], index.search(queries, 7)[0])


def test_bad_queries_name_the_shape() -> None:
    with pytest.raises(ValueError, match=r"8 columns, got shape \(2, 3\)"):
        FaissIndex.flat(_vectors(10, 8, 17)).search(np.zeros((2, 3)), 5)


def _columns(exclude: sp.csr_matrix, row: int) -> np.ndarray:
    return np.asarray(exclude.indices[exclude.indptr[row] : exclude.indptr[row + 1]])


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw"])
def test_search_one_equals_the_filled_slots_of_search(kind: str) -> None:
    items, queries = _vectors(800, 16, 18), _vectors(12, 16, 19)
    indexes = {
        "exact": lambda: ExactIndex(items),
        "flat": lambda: FaissIndex.flat(items),
        "hnsw": lambda: FaissIndex.hnsw(items, 0.95, params=HnswParams(recall_queries=100)),
    }
    index = indexes[kind]()
    exclude = _random_exclusions(12, 800, 40, seed=20)
    for row in range(12):
        for columns in (None, _columns(exclude, row)):
            ids, scores = index.search_one(queries[row], 15, columns)
            want_ids, want_scores = index.search(
                queries[row : row + 1], 15, None if columns is None else exclude[row]
            )
            np.testing.assert_array_equal(ids, want_ids[0])
            np.testing.assert_allclose(scores, want_scores[0], rtol=1e-5, atol=1e-5)
            if columns is not None:
                assert not set(ids.tolist()) & set(columns.tolist())


def test_search_one_leaves_out_excluded_and_breaks_ties_by_index() -> None:
    # Five items with equal vectors tie; the lower index comes first, and repeated exclusions
    # are harmless.
    items = np.array([[1.0], [2.0], [2.0], [2.0], [0.5], [2.0], [2.0]], dtype=np.float32)
    for index in (ExactIndex(items), FaissIndex.flat(items)):
        ids, scores = index.search_one(np.array([1.0]), 3, np.array([2, 2, 5]))
        assert ids.tolist() == [1, 3, 6] and scores.tolist() == [2.0, 2.0, 2.0]
        # Fewer than k left: only the remaining items, no padding.
        ids, scores = index.search_one(np.array([1.0]), 10, np.array([0, 1, 2, 3]))
        assert ids.tolist() == [5, 6, 4] and scores.tolist() == [2.0, 2.0, 0.5]
        with pytest.raises(ValueError, match="one query"):
            index.search_one(np.ones((2, 1)), 3)
