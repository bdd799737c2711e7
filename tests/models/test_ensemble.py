"""The iALS + low-rank autoencoder blend: the shared contract, its scores against the weighted sum
of its parts' (a known answer), fold-in as the concatenation of the parts' fold-ins, the saved
model, early stopping on the blend, and serving from one FAISS index through the Retriever."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data.interactions import IdMap
from recsys.errors import ConfigError
from recsys.index.faiss_index import FaissIndex
from recsys.models import FitOptions, load_model
from recsys.models.ensemble import WEIGHT_GRID, IALSLowRank, score_scale
from recsys.models.ials import ImplicitALS
from recsys.models.lowrank import LowRankAE
from recsys.retrieval import RankOptions, Retriever
from recsys.training.validation import validation_callback

from .contract import ModelContract, Planted, planted_data

PARAMS: dict[str, Any] = {"factors": 16, "rank": 16, "l2": 5.0, "epochs": 6}


class TestIALSLowRank(ModelContract):
    model_name = "ials-lowrank"
    # A fixed weight: the contract's early-stopping check compares the kept model with the
    # validation figure of its chosen sweep (test_the_weight_is_chosen_on_validation covers the rest).
    params: ClassVar[dict[str, Any]] = {**PARAMS, "choose_weight": False}
    # Binary histories, as both parts read them (see test_lowrank.py): the low ratings count too.
    min_recall: ClassVar[float] = 0.35
    min_margin_over_popularity: ClassVar[float] = 0.35
    invalid_params: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"weight": 0.0}, "weight"),
        ({"weight": 1.5}, "weight"),
        ({"factors": 0}, "factors"),
        ({"rank": 0}, "rank"),
        ({"l2": 0}, "l2"),
    ]


@pytest.fixture(scope="module")
def planted() -> Planted:
    return planted_data()


def binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    ones = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    ones.data[:] = 1.0
    return ones


@pytest.mark.parametrize("weight", [0.2, 0.5, 0.8])
def test_scores_are_the_weighted_sum_of_the_parts_scaled_scores(planted: Planted, weight: float) -> None:
    blend = IALSLowRank(**PARAMS, weight=weight).fit(planted.train)
    # The parts fitted alone, with the same settings, seed and sweeps, on the binary matrix.
    ials = ImplicitALS(factors=16, epochs=6).fit(binary(planted.train))
    lowrank = LowRankAE(rank=16, l2=5.0).fit(binary(planted.train))
    assert ials.user_factors is not None and lowrank.user_factors is not None
    s_ials = ials.user_factors.astype(np.float64) @ ials._require_items().T
    s_lr = lowrank.user_factors.astype(np.float64) @ lowrank._require_items().T
    # The scale of each part: the root mean square of a user's score standard deviation.
    sigma_ials = np.sqrt(np.mean(s_ials.var(axis=1)))
    sigma_lr = np.sqrt(np.mean(s_lr.var(axis=1)))
    expected = weight * s_ials / sigma_ials + (1 - weight) * s_lr / sigma_lr
    assert blend.user_factors is not None
    served = blend.user_factors @ blend._require_items().T
    np.testing.assert_allclose(served, expected, atol=2e-4 * np.abs(expected).max())
    assert score_scale(ials.user_factors, ials._require_items()) == pytest.approx(sigma_ials, rel=1e-5)


def test_weight_moves_the_ranking_from_one_part_to_the_other(planted: Planted) -> None:
    users = np.arange(planted.n_users)
    ials = ImplicitALS(factors=16, epochs=6).fit(binary(planted.train))
    lowrank = LowRankAE(rank=16, l2=5.0).fit(binary(planted.train))
    near_ials = IALSLowRank(**PARAMS, weight=0.999).fit(planted.train)
    near_lowrank = IALSLowRank(**PARAMS, weight=0.001).fit(planted.train)
    top_ials = ials.recommend(users, planted.train, N=5)[0]
    top_lowrank = lowrank.recommend(users, planted.train, N=5)[0]
    assert (near_ials.recommend(users, planted.train, N=5)[0] == top_ials).mean() > 0.95
    assert (near_lowrank.recommend(users, planted.train, N=5)[0] == top_lowrank).mean() > 0.95


def test_fold_in_is_the_concatenation_of_the_parts_fold_ins(planted: Planted) -> None:
    blend = IALSLowRank(**PARAMS).fit(planted.train)
    rows = planted.train[:30]
    folded = blend.fold_in(rows)
    assert blend.scales is not None
    m_ials, m_lr = blend.scales
    np.testing.assert_allclose(
        folded[:, :16], m_ials * blend.ials.fold_in(binary(rows)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        folded[:, 16:], m_lr * blend.lowrank.fold_in(binary(rows)), rtol=1e-5, atol=1e-6
    )
    # A trained user's autoencoder half is exactly their history x encoder (what the fit served).
    assert blend.user_factors is not None
    np.testing.assert_allclose(folded[:, 16:], blend.user_factors[:30, 16:], rtol=1e-5, atol=1e-6)
    # The iALS half is the exact solve against the fixed items: close to the trained vectors' scores.
    trained = blend.user_factors[:30, :16] @ blend._require_items()[:, :16].T
    refolded = folded[:, :16] @ blend._require_items()[:, :16].T
    assert np.corrcoef(trained.ravel(), refolded.ravel())[0, 1] > 0.95


def test_one_history_folds_in_as_its_row_in_a_block_bit_for_bit(planted: Planted) -> None:
    """The service folds in a posted history with ``fold_in_one``, ``recsys score`` and ``recsys
    evaluate`` fold users in blocks with ``fold_in``: the same float32 vector, or their lists could
    differ at near-ties. The autoencoder half is the same float32 sum in the same order: equal bit
    for bit. The iALS half solves the same float64 system by another factorisation (Woodbury over
    the Gram matrix's eigenvectors up to half the factors, Cholesky above; the block uses LU),
    equal to ~1e-13, so its float32 rounding can differ in the last bit, rarely: at most one ulp
    here, and every row equal (on ml-100k one element differs in some 14,000 short histories)."""
    blend = IALSLowRank(**PARAMS).fit(planted.train)
    rng = np.random.default_rng(3)
    histories = []
    for length in rng.integers(1, 61, 400):
        columns = np.sort(rng.choice(planted.n_items, length, replace=False))
        values = rng.integers(0, 6, length).astype(np.float32)  # zeros are no interaction
        values[0] = max(values[0], 1.0)
        histories.append((columns, values))
    lengths = np.array([len(columns) for columns, _ in histories])
    block = blend.fold_in(
        sp.csr_matrix(
            (
                np.concatenate([values for _, values in histories]),
                np.concatenate([columns for columns, _ in histories]),
                np.concatenate([[0], np.cumsum(lengths)]),
            ),
            shape=(len(histories), planted.n_items),
        )
    )
    one = np.vstack([blend.fold_in_one(columns, values) for columns, values in histories])
    kept = np.array([np.count_nonzero(values) for _, values in histories])
    assert (kept <= 8).sum() > 50 and (kept > 8).sum() > 50  # both iALS solves (16 factors)
    assert all(np.array_equal(one[row, 16:], block[row, 16:]) for row in range(len(histories)))
    np.testing.assert_array_max_ulp(one[:, :16], block[:, :16], maxulp=1)
    assert all(np.array_equal(one[row], block[row]) for row in range(len(histories)))


def test_saved_blend_folds_in_and_ranks_as_the_fitted_one(planted: Planted, tmp_path: Path) -> None:
    blend = IALSLowRank(**PARAMS, weight=0.3).fit(planted.train)
    blend.save(tmp_path / "blend")
    loaded = load_model(tmp_path / "blend")
    assert isinstance(loaded, IALSLowRank) and loaded.scales == pytest.approx(blend.scales)
    assert loaded.config.weight == 0.3
    strangers = np.arange(planted.n_users, planted.n_users + 20)
    rows = planted.train[:20]
    np.testing.assert_allclose(loaded.fold_in(rows), blend.fold_in(rows), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        loaded.recommend(strangers, rows, N=10)[0], blend.recommend(strangers, rows, N=10)[0]
    )


def test_early_stopping_watches_the_blend(planted: Planted) -> None:
    validate = validation_callback(planted.train, planted.test)
    blend = IALSLowRank(**{**PARAMS, "epochs": 8}, min_epochs=1, patience=2, choose_weight=False)
    blend.fit(planted.train, FitOptions(validate=validate))
    chosen = blend.stopping_rule().chosen_epoch(blend.history)
    assert chosen is not None
    # The kept vectors are the blend's at the chosen sweep: its validation figure is the one logged.
    assert validate(blend)["val_ndcg"] == pytest.approx(blend.history[chosen - 1]["val_ndcg"], abs=1e-6)


def test_warm_start_needs_a_blends_vectors(planted: Planted) -> None:
    from recsys.models import WarmStart

    ials = ImplicitALS(factors=16, epochs=2).fit(binary(planted.train))
    assert ials.user_factors is not None
    foreign = WarmStart(
        user_factors=ials.user_factors,
        item_factors=ials._require_items(),
        known_users=np.ones(planted.n_users, bool),
        known_items=np.ones(planted.n_items, bool),
    )
    with pytest.raises(ConfigError, match="ials-lowrank version"):
        IALSLowRank(**PARAMS).fit(planted.train, FitOptions(epochs=1, warm_start=foreign))


def test_served_from_one_faiss_index_through_the_retriever(planted: Planted) -> None:
    blend = IALSLowRank(**PARAMS).fit(planted.train)
    assert blend.user_factors is not None
    index = FaissIndex.flat(blend._require_items())
    assert index.dim == 32  # one index over both parts' columns
    users = IdMap(np.array([f"u{u}" for u in range(planted.n_users)], dtype=object))
    items = IdMap(np.array([f"i{i}" for i in range(planted.n_items)], dtype=object))
    retriever = Retriever.from_matrix(blend, users, items, planted.train, index=index)
    ranked = retriever.recommend_known(np.arange(planted.n_users), RankOptions(k=10))
    # The same lists as the blended scores ranked by hand, seen items excluded.
    scores = blend.user_factors @ blend._require_items().T
    scores[planted.train.nonzero()] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(np.sort(ranked.item_ids, axis=1), np.sort(expected, axis=1))
    np.testing.assert_allclose(
        ranked.scores, np.take_along_axis(scores, ranked.item_ids, axis=1), rtol=1e-4, atol=1e-5
    )


def test_beyond_max_items_the_blend_is_ials_alone_and_says_so(
    planted: Planted, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    validate = validation_callback(planted.train, planted.test)
    with caplog.at_level("WARNING", logger="recsys.models.ensemble"):
        blend = IALSLowRank(**PARAMS, max_items=100).fit(planted.train, FitOptions(validate=validate))
    assert "fitting iALS alone (weight 1.0" in caplog.text and "max_items=100" in caplog.text
    notes = blend.fit_notes()
    assert notes["parts"] == ["ials"] and notes["weight"] == 1.0
    assert "max_items=100" in notes["lowrank_skipped"]
    # The autoencoder is never fitted, no weight is chosen, and the config says weight 1.0.
    assert blend.lowrank.encoder is None and blend.refit_params() == {} and blend.config.weight == 1.0
    # What is served is iALS's ranking: the same sweeps as iALS alone on the binary matrix.
    ials = ImplicitALS(factors=16, epochs=6).fit(binary(planted.train))
    ials_only = IALSLowRank(**PARAMS, max_items=100).fit(planted.train)
    assert ials_only.user_factors is not None and ials.user_factors is not None
    assert ials_only._require_items().shape == (planted.n_items, 16)
    users = np.arange(planted.n_users)
    np.testing.assert_array_equal(
        ials_only.recommend(users, planted.train, N=5)[0], ials.recommend(users, planted.train, N=5)[0]
    )
    # Fold-in is iALS's (scaled), and the saved model loads as iALS alone with the same fold-in.
    assert ials_only.scales is not None and ials_only.scales[1] == 0.0
    rows = planted.train[:20]
    np.testing.assert_allclose(
        ials_only.fold_in(rows), ials_only.scales[0] * ials.fold_in(binary(rows)), rtol=1e-4, atol=1e-5
    )
    ials_only.save(tmp_path / "alone")
    loaded = load_model(tmp_path / "alone")
    assert isinstance(loaded, IALSLowRank) and loaded.config.weight == 1.0
    np.testing.assert_allclose(loaded.fold_in(rows), ials_only.fold_in(rows), rtol=1e-5, atol=1e-6)


def test_weight_one_fits_ials_alone_without_notes(planted: Planted) -> None:
    blend = IALSLowRank(**PARAMS, weight=1.0).fit(planted.train)
    assert blend.lowrank.encoder is None and blend.fit_notes() == {}
    assert blend._require_items().shape[1] == 16


def test_a_version_fitted_as_ials_alone_warm_starts_either_form(planted: Planted) -> None:
    from recsys.models import WarmStart

    alone = IALSLowRank(**PARAMS, max_items=100).fit(planted.train)
    assert alone.user_factors is not None
    warm = WarmStart(
        user_factors=alone.user_factors,
        item_factors=alone._require_items(),
        known_users=np.ones(planted.n_users, bool),
        known_items=np.ones(planted.n_items, bool),
        extra=alone._extra_arrays(),
    )
    for max_items in (100, 20_000):  # the catalogue still too large, and no longer
        blend = IALSLowRank(**PARAMS, max_items=max_items)
        blend.fit(planted.train, FitOptions(epochs=1, warm_start=warm))
        assert blend.ials_alone == (max_items == 100)
        # The iALS part starts from the previous vectors: one sweep keeps its ranking close.
        assert blend.ials.user_factors is not None
        before = alone.user_factors @ alone._require_items().T
        after = blend.ials.user_factors @ blend.ials._require_items().T
        assert np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.9


def test_the_default_model_fits_any_catalogue() -> None:
    from recsys.models import MODEL_CLASSES, get_model_class
    from recsys.settings import Settings

    assert get_model_class(Settings().default_model).fits_any_catalogue
    refusing = {name for name in MODEL_CLASSES if not get_model_class(name).fits_any_catalogue}
    assert refusing == {"ease", "lowrank-ae"}


def test_the_weight_is_chosen_on_validation_and_carried_to_the_refit(planted: Planted) -> None:
    validate = validation_callback(planted.train, planted.test)
    blend = IALSLowRank(**PARAMS).fit(planted.train, FitOptions(validate=validate))
    chosen = blend.refit_params()["weight"]
    assert chosen in WEIGHT_GRID and blend.config.weight == chosen
    served = validate(blend)["val_ndcg"]
    for weight in WEIGHT_GRID:  # no grid weight validates better than the one served
        other = IALSLowRank(**PARAMS, weight=weight, choose_weight=False)
        other.ials, other.lowrank = blend.ials, blend.lowrank
        other._combine()
        assert validate(other)["val_ndcg"] <= served + 1e-9
    # Without validation nothing is chosen: the config's weight is served.
    assert IALSLowRank(**PARAMS, weight=0.3).fit(planted.train).refit_params() == {}


def test_fit_version_refits_with_the_weight_validation_chose(planted: Planted) -> None:
    from recsys.data.interactions import Interactions
    from recsys.training.fitting import fit_version

    coo = planted.train.tocoo()
    data = Interactions.from_arrays(coo.row, coo.col, coo.data)
    fitted = fit_version("ials-lowrank", PARAMS, data)
    chosen = fitted.details["chosen_on_validation"]["weight"]
    assert chosen in WEIGHT_GRID
    assert fitted.model.params["weight"] == chosen


def test_fit_version_records_that_the_blend_fitted_ials_alone(planted: Planted) -> None:
    from recsys.data.interactions import Interactions
    from recsys.training.fitting import fit_version

    coo = planted.train.tocoo()
    data = Interactions.from_arrays(coo.row, coo.col, coo.data)
    fitted = fit_version("ials-lowrank", {**PARAMS, "max_items": 100}, data)
    assert fitted.model.params["weight"] == 1.0
    assert "chosen_on_validation" not in fitted.details
    assert fitted.details["fit_notes"]["parts"] == ["ials"]
    assert "max_items=100" in fitted.details["fit_notes"]["lowrank_skipped"]
