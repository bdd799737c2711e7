"""iALS speed: fit time against implicit's AlternatingLeastSquares in the same run, and seconds per
iteration on a 5M-interaction synthetic matrix.

    python benchmarks/ials_benchmark.py                 # both parts
    python benchmarks/ials_benchmark.py --skip-synthetic
    python benchmarks/ials_benchmark.py --skip-comparison --interactions 25000000 --users 160000 --items 60000

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
    ImplicitALS(factors=factors, epochs=1).fit(matrix)  # compile the TensorFlow functions once
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


def synthetic_speed(n_users: int, n_items: int, n_interactions: int, iterations: int) -> None:
    started = time.perf_counter()
    matrix = synthetic(n_users, n_items, n_interactions)
    print(
        f"synthetic {n_users} users x {n_items} items, {matrix.nnz} interactions "
        f"(generated in {time.perf_counter() - started:.0f} s)"
    )
    model = ImplicitALS()
    started = time.perf_counter()
    model.fit(matrix, FitOptions(epochs=iterations))
    total = time.perf_counter() - started
    per_iteration = [entry["seconds"] for entry in model.history]
    print(
        f"  factors {model.config.factors}: {', '.join(f'{s:.1f}' for s in per_iteration)} s per iteration "
        f"(median {statistics.median(per_iteration):.1f} s); fit {total:.0f} s for {iterations} iterations"
    )
    print(
        f"  full default fit ({model.config.epochs} iterations) would take about "
        f"{statistics.median(per_iteration) * model.config.epochs / 60:.1f} min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--factors", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-comparison", action="store_true")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--synthetic-iterations", type=int, default=3)
    args = parser.parse_args()
    memory = psutil.virtual_memory().total / 2**30
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, {memory:.0f} GB, no GPU")
    if not args.skip_comparison:
        compare_with_implicit(movielens_100k(), args.factors, args.iterations, args.repeats)
    if not args.skip_synthetic:
        synthetic_speed(args.users, args.items, args.interactions, args.synthetic_iterations)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory: {peak:.2f} GB")


if __name__ == "__main__":
    main()
