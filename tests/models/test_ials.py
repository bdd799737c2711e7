"""Implicit ALS: the shared contract, the solve against numpy, checkpoints, warm start, MovieLens."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data.interactions import Interactions
from recsys.data.splits import protocol_k_split, validation_split
from recsys.errors import ConfigError, DataError
from recsys.evaluation import evaluate_ranking
from recsys.models import FitOptions, WarmStart, create_model
from recsys.models.base import refit_epochs
from recsys.models.ials import ImplicitALS
from recsys.training.validation import validation_callback

from .contract import ModelContract, Planted, planted_data

FAST: dict[str, Any] = {
    "factors": 16,
    "regularization": 5.0,
    "frequency_exponent": 0.5,
    "alpha": 4.0,
    "epochs": 8,
}


class TestImplicitALS(ModelContract):
    model_name = "ials"
    params: ClassVar[dict[str, Any]] = FAST
    invalid_params: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"factors": 0}, "factors"),
        ({"regularization": -1}, "regularization"),
        ({"solver": "lu"}, "solver"),
    ]


def numpy_user_solve(
    matrix: sp.csr_matrix, items: np.ndarray, alpha: float, reg: float, exponent: float
) -> np.ndarray:
    """Hu, Koren and Volinsky's closed form, one dense system per user (the reference)."""
    dense = matrix.toarray()
    solved = np.zeros((dense.shape[0], items.shape[1]))
    for user, row in enumerate(dense):
        confidence = 1.0 + alpha * row
        preference = (row > 0).astype(float)
        lam = reg * (1.0 + (row > 0).sum()) ** exponent
        system = items.T @ (confidence[:, None] * items) + lam * np.eye(items.shape[1])
        solved[user] = np.linalg.solve(system, items.T @ (confidence * preference))
    return solved


@pytest.fixture(scope="module")
def tiny() -> sp.csr_matrix:
    matrix = sp.random(25, 18, density=0.3, random_state=3, format="csr", dtype=np.float32)
    matrix.data = np.ceil(matrix.data * 4)  # counts 1..4
    matrix = sp.csr_matrix(sp.diags(np.r_[0.0, np.ones(24)]) @ matrix)  # user 0 has no interaction
    matrix.eliminate_zeros()
    return matrix


@pytest.mark.parametrize(
    ("solver", "exponent"), [("cholesky", 0.0), ("cg", 0.0), ("cholesky", 1.0), ("cg", 0.5)]
)
def test_solve_equals_the_numpy_least_squares_solution(
    tiny: sp.csr_matrix, solver: str, exponent: float
) -> None:
    # Conjugate gradients is exact after as many steps as unknowns; a few more absorb float32 rounding.
    model = ImplicitALS(
        factors=5,
        regularization=0.7,
        alpha=2.0,
        frequency_exponent=exponent,
        solver=solver,
        cg_steps=10,
        epochs=1,
    ).fit(tiny)
    items = model.item_factors
    assert items is not None
    confidence = model._confidence_matrix(tiny)
    solved = model._solve(model._side(confidence, solver), items, np.zeros((25, 5), np.float32), solver)
    expected = numpy_user_solve(tiny, items.astype(np.float64), 2.0, 0.7, exponent)
    np.testing.assert_allclose(solved, expected, atol=2e-4, rtol=2e-3)
    np.testing.assert_allclose(model.fold_in(tiny), expected, atol=2e-4, rtol=2e-3)
    np.testing.assert_array_equal(solved[0], 0.0)  # nothing observed: the zero vector


@pytest.mark.parametrize(("alpha", "exponent"), [(2.0, 0.0), (4.0, 0.4), (0.0, 1.0)])
def test_one_history_folds_in_as_its_row_in_a_block(
    tiny: sp.csr_matrix, alpha: float, exponent: float
) -> None:
    """The service's single-history solve gives the vector of the blocked solve, row by row,
    explicit zeros (no interaction) included."""
    model = ImplicitALS(factors=6, regularization=0.7, alpha=alpha, frequency_exponent=exponent, epochs=2)
    model.fit(tiny)
    with_zeros = tiny.copy()
    with_zeros.data[::3] = 0.0  # stored, but no interaction
    for matrix in (tiny, with_zeros):
        blocked = model.fold_in(matrix)
        for user in range(matrix.shape[0]):
            start, stop = matrix.indptr[user], matrix.indptr[user + 1]
            one = model.fold_in_one(matrix.indices[start:stop], matrix.data[start:stop])
            assert one.shape == (1, 6) and one.dtype == np.float32
            np.testing.assert_allclose(one[0], blocked[user], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(model.fold_in_one(np.zeros(0, np.int32), np.zeros(0, np.float32)), 0.0)
    with pytest.raises(DataError, match="non-negative"):
        model.fold_in_one(np.array([1, 2]), np.array([1.0, -1.0], np.float32))


def test_short_and_long_histories_fold_in_as_the_numpy_solve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Histories of at most half the factors are solved through an n x n system (the Woodbury
    identity over the Gram matrix's eigenvectors), longer ones through the factors x factors
    system: both give the float64 least-squares vector, rounded to float32, of the dense
    reference and of the blocked fold-in."""
    rng = np.random.default_rng(5)
    model = ImplicitALS(factors=32, regularization=3.0, alpha=2.0, frequency_exponent=0.4)
    model.item_factors = (rng.standard_normal((300, 32)) * 0.3).astype(np.float32)
    short_solves = []
    solve = model._short_history_solve

    def counted(*args: Any) -> np.ndarray | None:
        short_solves.append(len(args[1]))
        return solve(*args)

    monkeypatch.setattr(model, "_short_history_solve", counted)
    lengths = (1, 2, 7, 16, 17, 40)
    for length in lengths:
        columns = np.sort(rng.choice(300, length, replace=False))
        values = rng.integers(1, 6, length).astype(np.float32)
        row = sp.csr_matrix((values, columns, [0, length]), shape=(1, 300))
        one = model.fold_in_one(columns, values)[0]
        expected = numpy_user_solve(row, model.item_factors.astype(np.float64), 2.0, 3.0, 0.4)[0]
        np.testing.assert_allclose(one, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(one, model.fold_in(row)[0], rtol=1e-6, atol=1e-7)
    assert short_solves == [length for length in lengths if length <= 16]


def test_prepared_fold_in_computes_nothing_on_the_first_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_fold_in (the service calls it when it loads a version) computes the Gram matrix and
    its eigendecomposition, so the first single-history fold-in does not; the same vectors."""
    rng = np.random.default_rng(8)
    items = (rng.standard_normal((200, 32)) * 0.3).astype(np.float32)
    lazy, prepared = ImplicitALS(factors=32), ImplicitALS(factors=32)
    lazy.item_factors = prepared.item_factors = items
    histories = [np.array([3, 50, 77]), np.sort(rng.choice(200, 40, replace=False))]  # both solves
    expected = [lazy.fold_in_one(columns, np.ones(len(columns), np.float32)) for columns in histories]
    prepared.prepare_fold_in()
    caches = (prepared._fixed_cache, prepared._eigen_cache)
    assert caches[0][0] is items and caches[1][0] is items

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("an eigendecomposition computed on a fold-in")

    monkeypatch.setattr(np.linalg, "eigh", refused)
    for columns, vector in zip(histories, expected, strict=True):
        ones = np.ones(len(columns), np.float32)
        np.testing.assert_array_equal(prepared.fold_in_one(columns, ones), vector)
    assert prepared._fixed_cache is caches[0] and prepared._eigen_cache is caches[1]
    ImplicitALS(factors=32).prepare_fold_in()  # no item vectors: nothing to prepare, no error


@pytest.mark.parametrize("kernel", ["numba", "tensorflow"])
def test_cpu_and_gpu_cg_kernels_agree(
    tiny: sp.csr_matrix, kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The numba kernel (CPU) and the TensorFlow one (GPU) solve the same rows to the same vectors;
    here both run on the CPU."""
    model = ImplicitALS(factors=6, regularization=0.7, alpha=3.0, cg_steps=3, epochs=1).fit(tiny)
    items = model.item_factors
    assert items is not None
    confidence = model._confidence_matrix(tiny)
    start = np.random.default_rng(0).standard_normal((25, 6)).astype(np.float32)
    reference = model._solve(model._side(confidence, "cg"), items, start, "cg")  # the CPU kernel here
    monkeypatch.setattr("recsys.models.ials._cg_kernel", lambda: kernel)
    side = model._side(confidence, "cg")
    assert (side.blocks is None) == (kernel == "numba")
    np.testing.assert_allclose(model._solve(side, items, start, "cg"), reference, atol=1e-5, rtol=1e-4)
    fitted = ImplicitALS(factors=6, epochs=3).fit(tiny)
    monkeypatch.setattr("recsys.models.ials._cg_kernel", lambda: "numba")
    other = ImplicitALS(factors=6, epochs=3).fit(tiny)
    np.testing.assert_allclose(fitted.item_factors, other.item_factors, atol=1e-5)  # type: ignore[arg-type]
    np.testing.assert_allclose(fitted.history[-1]["loss"], other.history[-1]["loss"], rtol=1e-5)


@pytest.mark.parametrize("kernel", ["numba", "tensorflow"])
def test_blocks_bound_memory_without_changing_the_result(
    tiny: sp.csr_matrix, kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("recsys.models.ials._cg_kernel", lambda: kernel)
    whole = ImplicitALS(factors=4, epochs=2).fit(tiny)
    monkeypatch.setattr("recsys.models.ials.BLOCK_FLOATS", 16)  # a handful of rows per block
    monkeypatch.setattr("recsys.models.ials.CG_BLOCK_FLOATS", 16)
    monkeypatch.setattr("recsys.models.ials_cpu.BLOCK_ROWS", 3)
    blocked = ImplicitALS(factors=4, epochs=2).fit(tiny)
    np.testing.assert_allclose(blocked.item_factors, whole.item_factors, atol=1e-5)  # type: ignore[arg-type]
    np.testing.assert_allclose(blocked.fold_in(tiny), whole.fold_in(tiny), atol=1e-5)


def test_loss_decreases_over_sweeps(tiny: sp.csr_matrix) -> None:
    model = ImplicitALS(factors=4, regularization=0.5, epochs=6).fit(tiny)
    losses = [entry["loss"] for entry in model.history]
    assert losses[-1] < losses[0]
    assert all(later <= earlier + 1e-6 for earlier, later in itertools.pairwise(losses))


def test_negative_values_are_refused(tiny: sp.csr_matrix) -> None:
    bad = tiny.copy()
    bad.data[0] = -1
    with pytest.raises(DataError, match="non-negative"):
        ImplicitALS(factors=2).fit(bad)


def test_warm_start_keeps_old_vectors_and_adds_fresh_ones() -> None:
    data: Planted = planted_data()
    old = ImplicitALS(**FAST).fit(data.train)
    assert old.user_factors is not None and old.item_factors is not None
    # The new data has one more item (column) that the old model never saw.
    grown = sp.hstack([data.train, sp.csr_matrix(np.eye(data.n_users, 1, k=-3, dtype=np.float32))]).tocsr()
    known_items = np.r_[np.ones(data.n_items, bool), False]
    warm = WarmStart(
        user_factors=old.user_factors,
        item_factors=np.vstack([old.item_factors, np.zeros((1, 16), np.float32)]),
        known_users=np.ones(data.n_users, bool),
        known_items=known_items,
    )
    model = ImplicitALS(**FAST).fit(grown, FitOptions(epochs=1, warm_start=warm))
    assert model.item_factors is not None
    drift = np.linalg.norm(model.item_factors[:-1] - old.item_factors) / np.linalg.norm(old.item_factors)
    assert drift < 0.1  # one sweep from the old optimum stays near it
    assert np.linalg.norm(model.item_factors[-1]) > 0  # the new item was learned
    cold = ImplicitALS(**FAST).fit(grown, FitOptions(epochs=1))
    grown_test = sp.hstack([data.test, sp.csr_matrix((data.n_users, 1))]).tocsr()
    warm_ndcg = evaluate_ranking(model, grown, grown_test)["ndcg"]
    assert warm_ndcg >= evaluate_ranking(cold, grown, grown_test)["ndcg"]
    with pytest.raises(ConfigError, match="warm-start"):
        ImplicitALS(**{**FAST, "factors": 8}).fit(grown, FitOptions(warm_start=warm))


def test_warm_start_from_converged_vectors_needs_few_sweeps_and_keeps_quality() -> None:
    data = planted_data()
    params = {**FAST, "epochs": 20, "patience": 3}
    cold = ImplicitALS(**params).fit(
        data.train, FitOptions(validate=validation_callback(data.train, data.test))
    )
    assert cold.user_factors is not None and cold.item_factors is not None
    warm = WarmStart(
        user_factors=cold.user_factors,
        item_factors=cold.item_factors,
        known_users=np.ones(data.n_users, bool),
        known_items=np.ones(data.n_items, bool),
    )
    model = ImplicitALS(**params).fit(
        data.train, FitOptions(validate=validation_callback(data.train, data.test), warm_start=warm)
    )
    assert len(model.history) <= ImplicitALS.Config().warm_start_epochs < len(cold.history)
    cold_ndcg = evaluate_ranking(cold, data.train, data.test)["ndcg"]
    assert evaluate_ranking(model, data.train, data.test)["ndcg"] >= cold_ndcg - 0.01
    # Explicit epochs (the refit on all data) still run exactly that many sweeps.
    assert len(ImplicitALS(**params).fit(data.train, FitOptions(epochs=5, warm_start=warm)).history) == 5


def test_warm_start_solves_new_users_and_items_before_the_sweeps() -> None:
    data = planted_data()
    old = ImplicitALS(**FAST).fit(data.train)
    assert old.user_factors is not None and old.item_factors is not None
    known_users = np.arange(data.n_users) % 10 != 0  # every tenth user is new
    known_items = np.arange(data.n_items) % 10 != 0  # and every tenth item
    warm = WarmStart(
        user_factors=np.where(known_users[:, None], old.user_factors, 0.0).astype(np.float32),
        item_factors=np.where(known_items[:, None], old.item_factors, 0.0).astype(np.float32),
        known_users=known_users,
        known_items=known_items,
    )
    started = ImplicitALS(**FAST).fit(data.train, FitOptions(epochs=0, warm_start=warm))
    assert started.user_factors is not None and started.item_factors is not None
    np.testing.assert_array_equal(started.user_factors[known_users], old.user_factors[known_users])
    # New users: the exact solve against the items as they start (new items near zero, random).
    initial_items = ImplicitALS(**FAST)._initial_factors(data.n_users, data.n_items, warm)[1]
    new_users = np.flatnonzero(~known_users)
    with_initial_items = ImplicitALS(**FAST)
    with_initial_items.item_factors = initial_items
    np.testing.assert_allclose(
        started.user_factors[new_users], with_initial_items.fold_in(data.train[new_users]), atol=1e-4
    )
    # New items: the exact solve against every user, new ones included.
    new_items = np.flatnonzero(~known_items)
    as_users = ImplicitALS(**FAST)
    as_users.item_factors = started.user_factors
    item_rows = sp.csr_matrix(data.train.T)[new_items]
    np.testing.assert_allclose(started.item_factors[new_items], as_users.fold_in(item_rows), atol=1e-4)
    assert np.linalg.norm(started.item_factors[new_items], axis=1).min() > 0.1


@pytest.mark.slow
def test_default_parameters_reach_the_protocol_k_target_on_ml100k(ml100k_dir: Path) -> None:
    ratings = np.loadtxt(ml100k_dir / "u.data", dtype=np.int64)
    data = Interactions.from_arrays(ratings[:, 0], ratings[:, 1])
    train, test = protocol_k_split(data, seed=42)
    model = create_model("ials").fit(train.to_csr())
    assert evaluate_ranking(model, train.to_csr(), test.to_csr())["ndcg"] >= 0.43


def test_fold_in_does_not_import_tensorflow(tiny: sp.csr_matrix, tmp_path: Path) -> None:
    # The service folds users in after each feedback event; it must stay free of TensorFlow.
    ImplicitALS(factors=4, epochs=1).fit(tiny).save(tmp_path / "model")
    script = (
        "import sys, numpy as np, scipy.sparse as sp\n"
        "from pathlib import Path\n"
        "from recsys.models import load_model\n"
        f"model = load_model(Path({str(tmp_path / 'model')!r}))\n"
        "rows = sp.csr_matrix(np.eye(2, model.item_factors.shape[0], dtype=np.float32))\n"
        "assert model.fold_in(rows).shape == (2, 4)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.slow
@pytest.mark.parametrize("validation_seed", [1, 2, 3])
def test_early_stopping_with_ratings_as_confidence_keeps_enough_sweeps_on_ml100k(
    ml100k_dir: Path, validation_seed: int
) -> None:
    """Ratings as confidence (as `recsys train` passes them) flatten the validation curve after
    two sweeps; raw early stopping once kept 2 where 5 or more are needed (0.92x of 5 on test)."""
    ratings = np.loadtxt(ml100k_dir / "u.data", dtype=np.int64)
    data = Interactions.from_arrays(ratings[:, 0], ratings[:, 1], values=ratings[:, 2].astype(np.float32))
    train, _ = protocol_k_split(data, seed=42)
    fit_part, valid = validation_split(train, seed=validation_seed)
    validate = validation_callback(fit_part.to_csr(), valid.to_csr())
    model = create_model("ials").fit(fit_part.to_csr(), FitOptions(validate=validate))
    chosen = refit_epochs(model)
    assert chosen is not None and chosen >= 5
    assert len(model.history) >= chosen + model.stopping_rule().patience or len(model.history) == 15
    assert validate(model)["val_ndcg"] == pytest.approx(model.history[chosen - 1]["val_ndcg"], abs=1e-6)
