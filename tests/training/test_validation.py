"""The validation callback of early stopping: a bounded, seeded sample of the validation users."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.evaluation import evaluate_ranking
from recsys.models.popularity import Popularity
from recsys.settings import get_settings
from recsys.training.validation import validation_callback


def matrices(users: int = 300, items: int = 40) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    rng = np.random.default_rng(5)
    both = sp.csr_matrix(sp.random(users, items, density=0.2, random_state=rng, dtype=np.float32))
    both.data[:] = 1.0
    held = rng.random(both.nnz) < 0.25
    coo = both.tocoo()
    train = sp.csr_matrix((coo.data[~held], (coo.row[~held], coo.col[~held])), shape=both.shape)
    valid = sp.csr_matrix((coo.data[held], (coo.row[held], coo.col[held])), shape=both.shape)
    return train, valid


def test_sample_is_bounded_seeded_and_ranked_through_the_retrieval_path() -> None:
    train, valid = matrices()
    model = Popularity().fit(train)
    holders = np.flatnonzero(np.diff(valid.indptr))
    assert len(holders) > 100
    sampled = validation_callback(train, valid, max_users=100)
    again = validation_callback(train, valid, max_users=100)
    assert sampled.users == 100
    np.testing.assert_array_equal(sampled.valid.indptr, again.valid.indptr)  # same users each time
    rows = np.flatnonzero(np.diff(sampled.valid.indptr))
    assert set(rows) <= set(holders)
    # the sampled users keep all their validation pairs, and the metric is theirs
    np.testing.assert_array_equal(sampled.valid[rows].toarray(), valid[rows].toarray())
    subset = sp.csr_matrix(sp.diags(np.isin(np.arange(valid.shape[0]), rows).astype(np.float32)) @ valid)
    expected = evaluate_ranking(model, train, subset)["ndcg"]
    assert sampled(model)["val_ndcg"] == pytest.approx(expected)
    everyone = validation_callback(train, valid, max_users=0)
    assert everyone.users == len(holders)
    assert everyone(model)["val_ndcg"] == pytest.approx(evaluate_ranking(model, train, valid)["ndcg"])
    assert validation_callback(train, valid, max_users=10_000).users == len(holders)


def test_default_bound_is_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    train, valid = matrices()
    monkeypatch.setenv("RECSYS_VALIDATION_USERS", "50")
    get_settings.cache_clear()
    try:
        assert validation_callback(train, valid).users == 50
    finally:
        monkeypatch.delenv("RECSYS_VALIDATION_USERS")
        get_settings.cache_clear()
    with pytest.raises(ValueError, match="max_users"):
        validation_callback(train, valid, max_users=-1)
