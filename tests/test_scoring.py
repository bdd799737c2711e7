"""Batch scoring against a naive numpy computation; Parquet resume; database replacement."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sqlalchemy import Engine, func, insert, select

from recsys.data.interactions import IdMap, Interactions
from recsys.db.engine import session_scope
from recsys.db.models import Recommendation
from recsys.models.base import FitOptions, Recommender
from recsys.retrieval import Retriever
from recsys.scoring import align_to_model, score_all_users, write_database, write_parquet

N_USERS, N_ITEMS, DIM = 50, 30, 6


class FixedVectors(Recommender):
    """Hand-made vectors; fold-in averages the vectors of the items in a row."""

    name = "fixed"

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        return self

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        counts = np.maximum(np.asarray(user_items.getnnz(axis=1)), 1)[:, None]
        return np.asarray((user_items != 0) @ self._require_items() / counts, dtype=np.float32)


class Interruptible(Retriever):
    """Fails (like an interrupted run) on a block holding a user from ``fail_from_user`` on, and
    records the first user of each block it ranks."""

    fail_from_user: int | None = None
    calls: list[int]

    def recommend_known(self, users, options=None):  # type: ignore[no-untyped-def]
        if self.fail_from_user is not None and np.max(users) >= self.fail_from_user:
            raise KeyboardInterrupt
        self.calls.append(int(users[0]))
        return super().recommend_known(users, options)


def retriever_of(model: FixedVectors, seen: sp.csr_matrix, user_map: IdMap | None = None) -> Interruptible:
    user_map = user_map or IdMap(np.array([f"u{i}" for i in range(seen.shape[0])], dtype=object))
    retriever = Interruptible.from_matrix(model, user_map, items, seen)
    assert isinstance(retriever, Interruptible)
    retriever.calls = []
    return retriever


@pytest.fixture
def model() -> FixedVectors:
    rng = np.random.default_rng(0)
    fixed = FixedVectors()
    fixed.user_factors = rng.normal(size=(N_USERS, DIM)).astype(np.float32)
    fixed.item_factors = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    return fixed


@pytest.fixture
def seen() -> sp.csr_matrix:
    # User 0 has seen every item but the first 3, so their list is padded.
    matrix = sp.random(N_USERS, N_ITEMS, density=0.2, random_state=1, format="csr", dtype=np.float32)
    matrix.data[:] = 1.0
    matrix = sp.lil_matrix(matrix)
    matrix[0, 3:] = 1.0
    return sp.csr_matrix(matrix)


def naive_top_k(user_vectors: np.ndarray, items: np.ndarray, seen: sp.csr_matrix, k: int):
    scores = user_vectors @ items.T
    scores[seen.toarray() != 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, axis=1)
    return np.where(np.isfinite(top), order, -1), top


users = IdMap(np.array([f"u{i}" for i in range(N_USERS)], dtype=object))
items = IdMap(np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object))


def test_blocks_equal_naive_computation(model: FixedVectors, seen: sp.csr_matrix) -> None:
    blocks = list(score_all_users(retriever_of(model, seen), k=5, block_size=16))
    assert [len(block.users) for block in blocks] == [16, 16, 16, 2]
    ids = np.vstack([block.item_ids for block in blocks])
    scores = np.vstack([block.scores for block in blocks])
    want_ids, want_scores = naive_top_k(model.user_factors, model.item_factors, seen, 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    assert (ids[0, :3] >= 0).all() and (ids[0, 3:] == -1).all()  # only 3 unseen items: padded


def test_new_users_are_folded_in(model: FixedVectors, seen: sp.csr_matrix) -> None:
    extra = sp.csr_matrix(([1.0, 1.0], ([0, 0], [2, 7])), shape=(1, N_ITEMS), dtype=np.float32)
    matrix = sp.vstack([seen, extra], format="csr")
    block = next(score_all_users(retriever_of(model, matrix), k=4, block_size=100))
    folded = model.fold_in(extra)
    want_ids, _ = naive_top_k(folded, model.item_factors, extra, 4)
    np.testing.assert_array_equal(block.item_ids[-1], want_ids[0])


def test_align_to_model_maps_ids_and_drops_unknown_items() -> None:
    data = Interactions.from_arrays(["u1", "new", "u0", "u1"], ["i2", "i0", "i9", "zz"], [5, 4, 3, 2])
    model_users = IdMap(np.array(["u0", "u1"], dtype=object))
    model_items = IdMap(np.array(["i0", "i2", "i9"], dtype=object))
    all_users, matrix = align_to_model(data, model_users, model_items)
    assert all_users.to_list() == ["u0", "u1", "new"]
    np.testing.assert_array_equal(matrix.toarray(), [[0, 0, 3], [0, 5, 0], [4, 0, 0]])


def test_parquet_output_and_resume(model: FixedVectors, seen: sp.csr_matrix, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    retriever = retriever_of(model, seen)
    retriever.fail_from_user = 32  # the third block fails
    with pytest.raises(KeyboardInterrupt):
        write_parquet(retriever, out, k=5, version="v1", block_size=16)
    parts = tmp_path / ".recs.parquet.parts"
    assert sorted(p.name for p in parts.glob("part-*.parquet")) == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]
    assert not out.exists()

    retriever.fail_from_user = None
    retriever.calls = []
    rows = write_parquet(retriever, out, k=5, version="v1", block_size=16)
    assert retriever.calls == [32, 48]  # finished blocks were not recomputed
    assert not parts.exists()

    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["user_id", "rank", "item_id", "score"]
    assert rows == len(frame) == (N_USERS - 1) * 5 + 3
    want_ids, want_scores = naive_top_k(model.user_factors, model.item_factors, seen, 5)
    user7 = frame[frame.user_id == "u7"].sort_values("rank")
    assert user7["rank"].tolist() == [1, 2, 3, 4, 5]
    assert user7["item_id"].tolist() == [f"i{i}" for i in want_ids[7]]
    np.testing.assert_allclose(user7["score"], want_scores[7], rtol=1e-5)


def test_parts_of_other_parameters_are_discarded(
    model: FixedVectors, seen: sp.csr_matrix, tmp_path: Path
) -> None:
    out = tmp_path / "recs.parquet"
    retriever = retriever_of(model, seen)
    retriever.fail_from_user = 16
    with pytest.raises(KeyboardInterrupt):
        write_parquet(retriever, out, k=3, version="v1", block_size=16)
    retriever.fail_from_user = None
    write_parquet(retriever, out, k=5, version="v1", block_size=16)
    frame = pd.read_parquet(out)
    assert frame.groupby("user_id").size().max() == 5


def test_database_output_replaces_the_version_rows(
    engine: Engine, model: FixedVectors, seen: sp.csr_matrix
) -> None:
    with session_scope(engine) as session:
        session.execute(
            insert(Recommendation),
            [
                {"version": "v1", "user_id": "stale", "rank": 1, "item_id": "x", "score": 1.0},
                {"version": "v0", "user_id": "u1", "rank": 1, "item_id": "i1", "score": 2.0},
            ],
        )
    written = write_database(engine, retriever_of(model, seen), k=4, version="v1", block_size=20)
    want_ids, want_scores = naive_top_k(model.user_factors, model.item_factors, seen, 4)
    with session_scope(engine) as session:
        count = session.scalar(select(func.count()).where(Recommendation.version == "v1"))
        other = session.scalar(select(func.count()).where(Recommendation.version == "v0"))
        stale = session.scalar(select(func.count()).where(Recommendation.user_id == "stale"))
        user3 = session.execute(
            select(Recommendation.item_id, Recommendation.score)
            .where(Recommendation.version == "v1", Recommendation.user_id == "u3")
            .order_by(Recommendation.rank)
        ).all()
    assert written == count == (N_USERS - 1) * 4 + 3
    assert other == 1 and stale == 0
    assert [row.item_id for row in user3] == [f"i{i}" for i in want_ids[3]]
    np.testing.assert_allclose([row.score for row in user3], want_scores[3], rtol=1e-5)


def test_database_output_is_unchanged_when_scoring_fails(
    sqlite_engine: Engine, model: FixedVectors, seen: sp.csr_matrix
) -> None:
    retriever = retriever_of(model, seen)
    write_database(sqlite_engine, retriever, k=2, version="v1")
    retriever.fail_from_user = 20
    with pytest.raises(KeyboardInterrupt):
        write_database(sqlite_engine, retriever, k=4, version="v1", block_size=20)
    with session_scope(sqlite_engine) as session:
        count = session.scalar(select(func.count()).where(Recommendation.version == "v1"))
    assert count == (N_USERS - 1) * 2 + 2
