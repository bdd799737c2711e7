"""Low-rank denoising autoencoder: the shared contract, the closed form against its definition
(full rank and truncated), fold-in as history x encoder, and the memory check before fitting."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError, DataError
from recsys.models import FitOptions, load_model
from recsys.models.lowrank import LowRankAE, check_memory

from .contract import ModelContract, Planted


class TestLowRankAE(ModelContract):
    model_name = "lowrank-ae"
    params: ClassVar[dict[str, Any]] = {"rank": 16, "l2": 5.0}
    # A binary history (as EASE reads it): the planted low ratings count as much as the liked
    # cluster items, which halves what it can recover. Popularity recovers nothing here.
    min_recall: ClassVar[float] = 0.35
    min_margin_over_popularity: ClassVar[float] = 0.35
    invalid_params: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"rank": 0}, "rank"),
        ({"dropout": 1.0}, "dropout"),
        ({"l2": 0}, "l2"),
        ({"max_items": 0}, "max_items"),
    ]

    def test_fit_options_epochs_sets_the_history(self, planted: Planted) -> None:
        # Closed form: no epochs to record.
        assert self.new_model().fit(planted.train, FitOptions(epochs=2)).history == []


def dense_definition(train: sp.csr_matrix, dropout: float, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Full-rank B = (G + Lambda)^-1 G and G (G + Lambda)^-1 G, in float64 from the definition."""
    x = (train.toarray() > 0).astype(np.float64)
    gram = x.T @ x
    a = gram + np.diag(dropout / (1 - dropout) * np.diag(gram) + l2)
    b = np.linalg.solve(a, gram)
    return b, gram @ b


def test_full_rank_scores_are_the_denoising_autoencoders(planted: Planted) -> None:
    b, _ = dense_definition(planted.train, dropout=0.3, l2=10.0)
    model = LowRankAE(rank=planted.n_items, dropout=0.3, l2=10.0).fit(planted.train)
    x = (planted.train.toarray() > 0).astype(np.float64)
    assert model.user_factors is not None and model.item_factors is not None
    scores = model.user_factors @ model.item_factors.T
    np.testing.assert_allclose(scores, x @ b, atol=2e-3)


def test_truncated_scores_project_on_the_top_eigenvectors(planted: Planted) -> None:
    b, target = dense_definition(planted.train, dropout=0.3, l2=10.0)
    rank = 8
    values, vectors = np.linalg.eigh(target)
    top = vectors[:, np.argsort(values)[::-1][:rank]]
    expected = b @ top @ top.T  # the best rank-8 B of the same objective
    model = LowRankAE(rank=rank, dropout=0.3, l2=10.0, power_iterations=8).fit(planted.train)
    assert model.item_factors is not None and model.encoder is not None
    assert model.item_factors.shape == (planted.n_items, rank)
    got = model.encoder @ model.item_factors.T
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_fold_in_is_the_binary_history_times_the_encoder(planted: Planted, tmp_path: Path) -> None:
    model = LowRankAE(rank=12).fit(planted.train)
    assert model.encoder is not None and model.item_factors is not None
    ones = (planted.train[:5].toarray() > 0).astype(np.float32)
    np.testing.assert_allclose(model.fold_in(planted.train[:5]), ones @ model.encoder, atol=1e-5)
    binary = sp.csr_matrix((planted.train.toarray() > 0).astype(np.float32))
    refitted = LowRankAE(rank=12).fit(binary).item_factors
    assert refitted is not None
    np.testing.assert_array_equal(model.item_factors, refitted)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, LowRankAE) and loaded.encoder is not None
    np.testing.assert_array_equal(loaded.encoder, model.encoder)


def test_a_wrong_width_history_is_refused(planted: Planted) -> None:
    model = LowRankAE(rank=4).fit(planted.train)
    with pytest.raises(DataError, match=f"{planted.n_items} columns"):
        model.fold_in(sp.csr_matrix(np.ones((1, planted.n_items + 1), dtype=np.float32)))


def test_catalogues_beyond_the_limit_are_refused_before_fitting() -> None:
    with pytest.raises(ConfigError, match=r"max_items=20000.*train ials"):
        check_memory(20_001, 20_000)
    with pytest.raises(ConfigError, match=r"max_items=10.*--param max_items"):
        LowRankAE(max_items=10).fit(sp.csr_matrix(np.ones((30, 11), dtype=np.float32)))
    with pytest.raises(ConfigError, match="is available; train ials"):
        check_memory(10**6, 10**7)  # 4 TB: more than any machine here has


@pytest.fixture(scope="module")
def planted() -> Planted:
    from .contract import planted_data

    return planted_data()
