"""iALS with its half-steps sharded across the two nodes of a Ray cluster learns what the local fit
learns: the same loss per sweep, the same vectors and metrics up to float rounding, through the
one fitting function (validation, early stopping, refit)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recsys.data.interactions import IdMap, Interactions
from recsys.evaluation import evaluate_ranking
from recsys.models.base import FitOptions
from recsys.models.ials import ImplicitALS
from recsys.models.ials_distributed import row_ranges
from recsys.models.popularity import Popularity
from recsys.runtime.cluster import RayEngine
from recsys.training.fitting import fit_version
from tests.models.contract import planted_data

PARAMS = {"factors": 16, "regularization": 5.0, "frequency_exponent": 0.5, "alpha": 4.0, "epochs": 6}
#: Relative difference allowed between local and distributed losses: both solve the same rows with
#: the same kernel in other blocks (and the Gram matrix comes from numpy, not TensorFlow), so only
#: float32 rounding differs. Measured: below 1e-6.
LOSS_RTOL = 1e-4
#: Largest allowed difference of a vector entry (entries are of order 0.1-1).
VECTOR_ATOL = 1e-3


def planted_log() -> Interactions:
    """The planted training matrix as an interaction log (what fit_version takes)."""
    matrix = planted_data().train.tocoo()
    return Interactions(
        user_index=matrix.row.astype(np.int32),
        item_index=matrix.col.astype(np.int32),
        values=matrix.data.astype(np.float32),
        timestamps=np.arange(matrix.nnz, dtype=np.int64),
        users=IdMap(np.array([f"u{u}" for u in range(matrix.shape[0])], dtype=object)),
        items=IdMap(np.array([f"i{i}" for i in range(matrix.shape[1])], dtype=object)),
    )


def test_row_ranges_cover_the_rows_in_balanced_contiguous_parts() -> None:
    counts = np.array([5, 1, 1, 1, 1, 1, 0, 10, 0])
    ranges = row_ranges(counts, 3)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(counts)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert [int(counts[start:stop].sum()) for start, stop in ranges] == [6, 4, 10]
    assert row_ranges(np.zeros(0, int), 2) == [(0, 0), (0, 0)]  # more workers than rows: empty shares


def test_sharded_sweeps_equal_the_local_ones(ray_address: str) -> None:
    # The default solver; the exact (Cholesky) one runs through the same sharding and also
    # matched when tried, but each fit starts two TensorFlow workers, and CI time counts.
    solver = "cg"
    data = planted_data()
    local = ImplicitALS(**PARAMS, solver=solver).fit(data.train, FitOptions(epochs=4))
    sharded = ImplicitALS(**PARAMS, solver=solver).fit(
        data.train, FitOptions(epochs=4, engine=RayEngine(address=ray_address, workers=2))
    )
    local_losses = [entry["loss"] for entry in local.history]
    sharded_losses = [entry["loss"] for entry in sharded.history]
    np.testing.assert_allclose(sharded_losses, local_losses, rtol=LOSS_RTOL)
    assert local_losses[-1] < local_losses[0]  # the comparison is of a fit that learns
    assert sharded.user_factors is not None and local.user_factors is not None
    np.testing.assert_allclose(sharded.user_factors, local.user_factors, atol=VECTOR_ATOL)
    np.testing.assert_allclose(sharded.item_factors, local.item_factors, atol=VECTOR_ATOL)
    local_recall = evaluate_ranking(local, data.train, data.test)["recall"]
    assert evaluate_ranking(sharded, data.train, data.test)["recall"] == pytest.approx(local_recall, abs=0.01)
    popular = Popularity().fit(Popularity.recipe.apply_matrix(data.train))
    assert local_recall > evaluate_ranking(popular, data.train, data.test)["recall"] + 0.1


def test_fit_version_on_ray_validates_and_refits_like_the_local_one(ray_address: str) -> None:
    log = planted_log()
    local = fit_version("ials", PARAMS, log)
    distributed = fit_version("ials", PARAMS, log, engine=RayEngine(address=ray_address, workers=2))
    assert distributed.details["engine"] == "ray" and local.details["engine"] == "local"
    assert distributed.epochs == local.epochs  # early stopping chose the same sweep
    for key in ("ndcg@10", "recall@10", "baseline_ndcg@10"):
        assert distributed.metrics[key] == pytest.approx(local.metrics[key], abs=0.005), key
    np.testing.assert_allclose(
        [entry["loss"] for entry in distributed.validation_history],
        [entry["loss"] for entry in local.validation_history],
        rtol=LOSS_RTOL,
    )


def test_the_ray_engine_is_refused_for_models_that_train_through_tf_config() -> None:
    from recsys.errors import ConfigError

    log = planted_log()
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        fit_version("mf", {}, log, engine=RayEngine(address="127.0.0.1:1"))
