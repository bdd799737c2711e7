"""The retriever on its own: one query answers as a block does (exact and HNSW), the fold-in rule,
paging, exclusions, the bounded vector cache, and forgetting users and items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.data.interactions import IdMap, Interactions
from recsys.data.recipe import Recipe
from recsys.index.base import PAD_ID, Exclusions
from recsys.index.faiss_index import FaissIndex, HnswParams
from recsys.models.base import Recommender
from recsys.models.ials import ImplicitALS
from recsys.retrieval import RankOptions, Retriever, VectorCache, changed_since
from recsys.retrieval.filters import Catalogue
from recsys.retrieval.retriever import FOLDED_IN, PERSONALIZED, POPULAR, Ranked
from tests.vector_model import MeanOfItems

N_USERS, N_ITEMS, DIM = 60, 400, 12


def ids(n: int, prefix: str) -> IdMap:
    return IdMap(np.array([f"{prefix}{i}" for i in range(n)], dtype=object))


@pytest.fixture
def model() -> MeanOfItems:
    rng = np.random.default_rng(5)
    fixed = MeanOfItems()
    fixed.item_factors = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    fixed.user_factors = rng.normal(size=(N_USERS - 10, DIM)).astype(np.float32)  # 10 users are new
    return fixed


@pytest.fixture
def seen() -> sp.csr_matrix:
    matrix = sp.random(N_USERS, N_ITEMS, density=0.05, random_state=6, format="csr", dtype=np.float32)
    matrix.data[:] = np.round(matrix.data * 4 + 1)
    matrix = sp.lil_matrix(matrix)
    matrix[N_USERS - 1, :] = 0  # the last (new) user has no history: popular
    return sp.csr_matrix(matrix)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_one_user_answers_as_the_block(model: MeanOfItems, seen: sp.csr_matrix, kind: str) -> None:
    index = None
    if kind == "hnsw":
        index = FaissIndex.hnsw(model.item_factors, 0.9, params=HnswParams(recall_queries=50))
    fold = np.zeros(N_USERS, bool)
    fold[3] = True  # a trained user whose history changed
    retriever = Retriever.from_matrix(
        model, ids(N_USERS, "u"), ids(N_ITEMS, "i"), seen, fold=fold, index=index
    )
    options = RankOptions(k=15, offset=4, exclude_items=np.array([1, 2, 3]))
    block = retriever.recommend_known(np.arange(N_USERS), options)
    assert block.strategies[0] == PERSONALIZED and block.strategies[3] == FOLDED_IN
    assert block.strategies[N_USERS - 2] == FOLDED_IN and block.strategies[N_USERS - 1] == POPULAR
    for user in range(N_USERS):
        one = retriever.recommend_user(f"u{user}", options)
        filled = block.item_ids[user] >= 0
        np.testing.assert_array_equal(one.item_ids, block.item_ids[user][filled])
        np.testing.assert_array_equal(one.scores, block.scores[user][filled])
        assert not set(one.item_ids.tolist()) & ({1, 2, 3} | set(seen[user].indices.tolist()))
    # The evaluation entry point (histories passed in) gives the same lists.
    again = retriever.recommend(np.arange(N_USERS), seen, options, fold)
    np.testing.assert_array_equal(again.item_ids, block.item_ids)


@pytest.mark.parametrize("kind", ["mean-of-items", "ials"])
def test_a_posted_history_answers_as_its_row_in_a_block(
    model: MeanOfItems, seen: sp.csr_matrix, kind: str
) -> None:
    """POST /recommendations folds one history in without building its row (the model's
    fold_in_one): the same list as the blocked fold-in of that row, under the version's value rule."""
    fitted: Recommender = model
    if kind == "ials":
        fitted = ImplicitALS(factors=DIM, epochs=2).fit(seen[: N_USERS - 10])
    rule = Recipe(values="binary").apply_values
    retriever = Retriever.from_matrix(fitted, ids(N_USERS, "u"), ids(N_ITEMS, "i"), seen, history_rule=rule)
    options = RankOptions(k=20, exclude_items=np.array([5]))
    # i3 twice (summed), i9 with 0 (the binary rule leaves it out, as a stored 0 is no interaction)
    one = retriever.recommend_history(["i3", "i9", "i40", "i3", "i200"], [2.0, 0.0, 1.0, 1.0, 4.0], options)
    row = sp.csr_matrix(
        (np.array([3.0, 0.0, 1.0, 4.0], np.float32), np.array([3, 9, 40, 200]), np.array([0, 4])),
        shape=(1, N_ITEMS),
    )
    block = retriever.recommend(np.array([N_USERS]), row, options)  # a user the version does not know
    assert one.strategy == "folded-in" and block.strategies[0] == FOLDED_IN
    np.testing.assert_array_equal(one.item_ids, block.item_ids[0])
    np.testing.assert_allclose(one.scores, block.scores[0], rtol=1e-6)
    assert not {3, 9, 40, 200, 5} & set(one.item_ids.tolist())


def test_offset_continues_the_list(model: MeanOfItems, seen: sp.csr_matrix) -> None:
    retriever = Retriever.from_matrix(model, ids(N_USERS, "u"), ids(N_ITEMS, "i"), seen)
    whole = retriever.recommend_known(np.arange(N_USERS), RankOptions(k=30)).item_ids
    pages = [
        retriever.recommend_known(np.arange(N_USERS), RankOptions(k=10, offset=o)).item_ids
        for o in (0, 10, 20)
    ]
    np.testing.assert_array_equal(np.hstack(pages), whole)
    with pytest.raises(ValueError, match="offset"):
        retriever.recommend_known(np.arange(2), RankOptions(offset=-1))


def test_changed_since_marks_users_with_newer_interactions() -> None:
    data = Interactions.from_arrays(
        ["a", "b", "b", "c"], ["x", "x", "y", "y"], [1.0, 1.0, 1.0, 1.0], timestamps=[10, 10, 30, 30]
    )
    model_users, items = IdMap(np.array(["a", "b"], dtype=object)), IdMap(np.array(["x", "y"], dtype=object))
    assert changed_since(data, model_users, items, 20).tolist() == [False, True, True]
    assert changed_since(data, model_users, items, None).tolist() == [False, False, False]


def test_vector_cache_is_bounded_and_per_generation() -> None:
    cache = VectorCache(size=2)
    cache.put("a", 1, np.ones(2))
    cache.put("b", 1, np.ones(2))
    assert cache.get("a", 1) is not None  # a is now the most recent
    cache.put("c", 1, np.ones(2))
    assert "b" not in cache and "a" in cache and len(cache) == 2
    assert cache.get("a", 2) is None  # a newer history generation makes the entry stale
    assert VectorCache(size=0).get("a", 0) is None


def test_forget_user_and_item(model: MeanOfItems, seen: sp.csr_matrix) -> None:
    retriever = Retriever.from_matrix(model, ids(N_USERS, "u"), ids(N_ITEMS, "i"), seen)
    options = RankOptions(k=5)
    retriever.overlay.apply(1, ["u4"], np.array([7]), np.array([5.0], np.float32))
    assert retriever.recommend_user("u4", options).strategy == "folded-in" and "u4" in retriever.cache
    retriever.forget_user("u4")
    forgotten = retriever.recommend_user("u4", options)
    assert forgotten.strategy == "popular" and "u4" not in retriever.cache
    assert retriever.overlay.row("u4")[0] is None

    top = retriever.recommend_user("u0", options).item_ids
    erased = f"i{top[0]}"
    retriever.forget_item(erased)
    assert top[0] not in retriever.recommend_user("u0", RankOptions(k=N_ITEMS)).item_ids
    assert top[0] not in retriever.recommend_known(np.arange(N_USERS), RankOptions(k=N_ITEMS)).item_ids
    assert top[0] not in retriever.similar(np.array([top[1]]), RankOptions(k=N_ITEMS)).item_ids
    with pytest.raises(Exception, match=erased):
        retriever.item_indices([erased])


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw"])
def test_one_user_lists_match_the_general_path_over_many_options(kind: str) -> None:
    """recommend_user ranks one row through the index's search_one; the lists and scores (ties
    included) are those of the general path: rank() of that row, and the block of all users."""
    rng = np.random.default_rng(11)
    item_vectors = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    item_vectors[200:260] = item_vectors[100:160]  # exact ties, broken by the lower index
    tied = MeanOfItems()
    tied.item_factors = item_vectors
    tied.user_factors = rng.normal(size=(N_USERS - 10, DIM)).astype(np.float32)
    seen = sp.random(N_USERS, N_ITEMS, density=0.2, random_state=12, format="csr", dtype=np.float32)
    seen.data[:] = 1
    seen = sp.lil_matrix(seen)
    seen[N_USERS - 1, :] = 0  # popular
    seen[0, :] = 1  # nothing left to recommend unless exclude_seen is off
    seen = sp.csr_matrix(seen)
    index = {
        "exact": None,
        "flat": FaissIndex.flat(item_vectors),
        "hnsw": FaissIndex.hnsw(item_vectors, 0.9, params=HnswParams(recall_queries=50)),
    }[kind]
    genres = [["a"], ["b"], ["a", "c"], []]
    frame = pd.DataFrame(
        {"title": [f"t{i}" for i in range(N_ITEMS)], "genres": [genres[i % 4] for i in range(N_ITEMS)]}
    )
    fold = np.zeros(N_USERS, bool)
    fold[[3, 7]] = True
    retriever = Retriever.from_matrix(
        tied,
        ids(N_USERS, "u"),
        ids(N_ITEMS, "i"),
        seen,
        fold=fold,
        index=index,
        catalogue=Catalogue.from_frame(N_ITEMS, frame),
    )
    # Feedback after the snapshot: these users are folded in again, with their merged history.
    changed = {5: "u5", 9: "u9", 55: "u55"}
    retriever.overlay.apply(1, ["u5", "u5", "u9", "u55"], np.array([1, 2, 3, 4]), np.ones(4, np.float32))
    retriever.forget_item("i7")
    options = [
        RankOptions(
            k=k,
            offset=offset,
            exclude_seen=exclude_seen,
            include_genres=include,
            exclude_genres=exclude,
            exclude_items=items,
        )
        for k, offset in ((1, 0), (10, 0), (10, 30), (25, 5), (N_ITEMS, 0), (5, N_ITEMS - 3))
        for exclude_seen in (True, False)
        for include, exclude in (((), ()), (("a",), ()), ((), ("a", "b")), (("c",), ("b",)))
        for items in (None, np.array([], np.int64), np.array([9, 2, 9, 100, 201]))
    ]
    users = np.arange(N_USERS)
    assert retriever.vectors is not None and retriever.strategies is not None
    for option in options:
        block = retriever.recommend_known(users, option)
        for user in users.tolist():
            one = retriever.recommend_user(f"u{user}", option)
            if user in changed:  # the folded-in vector and merged history, cached by recommend_user
                cached = retriever.cache.get(changed[user], retriever.overlay.generation(changed[user]) or 0)
                assert cached is not None
                general = Ranked.row(retriever.rank(*cached, option))
            else:
                row = Exclusions.sorted_row(seen[user].indices)
                vector, strategy = retriever.vectors[user : user + 1], retriever.strategies[user : user + 1]
                general = Ranked.row(retriever.rank(vector, strategy, row, option))
                in_block = Ranked.row(block, user)
                np.testing.assert_array_equal(general.item_ids, in_block.item_ids)
                np.testing.assert_array_equal(general.scores, in_block.scores)
            assert one.strategy == general.strategy
            np.testing.assert_array_equal(one.item_ids, general.item_ids)
            np.testing.assert_array_equal(one.scores, general.scores)
            assert one.scores.dtype == general.scores.dtype == np.float32


def test_search_one_answers_as_search_with_unsorted_repeated_exclusions() -> None:
    rng = np.random.default_rng(13)
    item_vectors = rng.integers(-2, 3, size=(N_ITEMS, DIM)).astype(np.float32)
    for index in (
        FaissIndex.flat(item_vectors),
        FaissIndex.hnsw(item_vectors, 0.9, params=HnswParams(recall_queries=50)),
    ):
        for _ in range(50):
            query = rng.integers(-2, 3, size=DIM).astype(np.float32)
            exclude = rng.integers(0, N_ITEMS, size=int(rng.integers(0, 300)))
            k = int(rng.integers(1, N_ITEMS + 5))
            found_ids, found_scores = index.search_one(query, k, exclude)
            ids_, scores = index.search(query[None, :], k, Exclusions.one(exclude))
            filled = ids_[0] != PAD_ID
            np.testing.assert_array_equal(found_ids, ids_[0][filled])
            np.testing.assert_array_equal(found_scores, scores[0][filled])
    with pytest.raises(ValueError, match="columns"):
        index.search_one(np.zeros(DIM + 1, np.float32), 3)
    with pytest.raises(ValueError, match="one query"):
        index.search_one(np.zeros((2, DIM), np.float32), 3)
