"""iALS speed against implicit's AlternatingLeastSquares in the same run: fit time on ml-100k, and
seconds per iteration on a synthetic matrix (5M interactions by default, MovieLens-25M's shape),
followed by the per-epoch cost of validation during training next to the solve.

    python benchmarks/ials_benchmark.py                 # both parts
    python benchmarks/ials_benchmark.py --skip-synthetic
    python benchmarks/ials_benchmark.py --skip-comparison --interactions 25000000

Times are noisy on a shared machine: each system is fitted ``--repeats`` times, interleaved, and
the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp

import recsys  # noqa: F401  # environment for TensorFlow before it is imported
from recsys.models import FitOptions
from recsys.models.ials import ImplicitALS

DATA = Path(os.environ.get("RECSYS_TEST_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def movielens_100k() -> sp.csr_matrix:
    """Protocol K's view of ml-100k: every rating is a positive interaction."""
    ratings = pd.read_csv(DATA / "ml-100k" / "u.data", sep="\t", names=["user", "item", "rating", "ts"])
    users, items = pd.factorize(ratings.user)[0], pd.factorize(ratings.item)[0]
    return sp.csr_matrix((np.ones(len(ratings), np.float32), (users, items)))


def synthetic(n_users: int, n_items: int, n_interactions: int) -> sp.csr_matrix:
    try:
        from recsys.data.synthetic import generate_synthetic
    except ImportError:  # before the data layer existed: uniform pairs are enough for timing
        rng = np.random.default_rng(42)
        pairs = np.unique(
            rng.integers(0, n_users, n_interactions, dtype=np.int64) * n_items
            + rng.integers(0, n_items, n_interactions)
        )
        return sp.csr_matrix(
            (np.ones(len(pairs), np.float32), (pairs // n_items, pairs % n_items)), shape=(n_users, n_items)
        )
    frame = generate_synthetic(n_users, n_items, n_interactions, seed=42)
    users, items = pd.factorize(frame.user_id)[0], pd.factorize(frame.item_id)[0]
    return sp.csr_matrix((np.ones(len(frame), np.float32), (users, items)), shape=(n_users, n_items))


def compare_with_implicit(matrix: sp.csr_matrix, factors: int, iterations: int, repeats: int) -> None:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    ours, theirs = [], []
    ImplicitALS(factors=factors, epochs=1).fit(matrix)  # compile (or load) the kernels once
    for _ in range(repeats):
        # implicit's own advice: its threads, not BLAS's, run in parallel.
        with threadpool_limits(1, "blas"):
            reference = AlternatingLeastSquares(
                factors=factors, regularization=50.0, alpha=5.0, iterations=iterations, random_state=42
            )
            started = time.perf_counter()
            reference.fit(matrix, show_progress=False)
            theirs.append(time.perf_counter() - started)
        started = time.perf_counter()
        ImplicitALS(factors=factors, epochs=iterations).fit(matrix)
        ours.append(time.perf_counter() - started)
    mine, reference_median = statistics.median(ours), statistics.median(theirs)
    print(f"ml-100k ({matrix.nnz} interactions), factors {factors}, {iterations} iterations, {repeats} runs")
    for label, median, runs in (
        ("recsys ImplicitALS    ", mine, ours),
        ("implicit ALS (CPU, CG)", reference_median, theirs),
    ):
        print(f"  {label}  median fit {median:.2f} s  (runs {', '.join(f'{t:.2f}' for t in runs)})")
    print(f"  ratio recsys / implicit: {mine / reference_median:.2f}x (target: within 5x)")


def synthetic_speed(
    n_users: int,
    n_items: int,
    n_interactions: int,
    factors: int,
    iterations: int,
    repeats: int,
    full_validation: bool = False,
) -> None:
    """Seconds per iteration of recsys's iALS and implicit's ALS on the same synthetic matrix, at the
    same factors, interleaved in this run; then one validated fit, as ``recsys train`` runs it."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    matrix = synthetic(n_users, n_items, n_interactions)
    print(
        f"synthetic {n_users} users x {n_items} items, {matrix.nnz} interactions "
        f"(generated in {time.perf_counter() - started:.0f} s), factors {factors}, {iterations} iterations"
    )
    ImplicitALS(factors=factors, epochs=1).fit(matrix[:1000])  # compile (or load) the kernels once
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(repeats):
        with threadpool_limits(1, "blas"):
            ticks: list[float] = []
            reference = AlternatingLeastSquares(factors=factors, iterations=iterations, random_state=42)
            # implicit's callback receives the seconds of each iteration
            reference.fit(
                matrix,
                show_progress=False,
                callback=lambda _i, seconds, _loss, ticks=ticks: ticks.append(seconds),
            )
            theirs += ticks
        model = ImplicitALS(factors=factors, epochs=iterations).fit(matrix)
        ours += [entry["seconds"] for entry in model.history]  # the solve and the loss of each sweep
        print(f"  recsys   per iteration: {', '.join(f'{s:.2f}' for s in ours[-iterations:])} s")
        print(f"  implicit per iteration: {', '.join(f'{s:.2f}' for s in theirs[-iterations:])} s")
    mine, reference_median = statistics.median(ours), statistics.median(theirs)
    print(f"  recsys ImplicitALS      median {mine:.2f} s per iteration (solve + loss)")
    print(f"  implicit ALS (CPU, CG)  median {reference_median:.2f} s per iteration")
    print(f"  ratio recsys / implicit: {mine / reference_median:.2f}x (target: within 2x)")
    validation_cost(matrix, factors, full_validation)


def validation_cost(matrix: sp.csr_matrix, factors: int, full: bool, epochs: int = 3) -> None:
    """Per-epoch solve and validation seconds of a fit validated as ``recsys train`` validates
    (a seeded sample of ``RECSYS_VALIDATION_USERS`` users); with ``full``, one validation of every
    user too (minutes at 5M)."""
    from recsys.settings import get_settings
    from recsys.training.validation import validation_callback

    coo = matrix.tocoo()
    held = np.random.default_rng(43).random(coo.nnz) < 0.1
    train, valid = (
        sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=matrix.shape)
        for keep in (~held, held)
    )
    validate = validation_callback(train, valid)
    model = ImplicitALS(factors=factors).fit(train, FitOptions(epochs=epochs, validate=validate))
    print(
        f"validation during training: {validate.users} sampled users "
        f"(RECSYS_VALIDATION_USERS={get_settings().validation_users}) of "
        f"{int(np.count_nonzero(np.diff(valid.indptr)))} with held-out pairs"
    )
    for entry in model.history:
        solve = entry["seconds"] - entry["validation_seconds"]
        print(
            f"  epoch {entry['epoch']}: solve {solve:.2f} s, validation {entry['validation_seconds']:.2f} s "
            f"({entry['validation_seconds'] / solve:.2f}x the solve; target at most 0.3x), "
            f"val_ndcg {entry['val_ndcg']:.4f}"
        )
    if full:  # what every epoch cost before validation was sampled
        everyone = validation_callback(train, valid, max_users=0)
        started = time.perf_counter()
        everyone(model)
        print(f"  every validation user ({everyone.users}) once: {time.perf_counter() - started:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--factors", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-comparison", action="store_true")
    parser.add_argument("--users", type=int, default=162_000)
    parser.add_argument("--items", type=int, default=62_000)
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--synthetic-iterations", type=int, default=3)
    parser.add_argument("--synthetic-repeats", type=int, default=2)
    parser.add_argument(
        "--full-validation", action="store_true", help="also time one validation of every user (slow)"
    )
    args = parser.parse_args()
    memory = psutil.virtual_memory().total / 2**30
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, {memory:.0f} GB, no GPU")
    if not args.skip_comparison:
        compare_with_implicit(movielens_100k(), args.factors, args.iterations, args.repeats)
    if not args.skip_synthetic:
        synthetic_speed(
            args.users,
            args.items,
            args.interactions,
            args.factors,
            args.synthetic_iterations,
            args.synthetic_repeats,
            args.full_validation,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory: {peak:.2f} GB")


if __name__ == "__main__":
    main()
