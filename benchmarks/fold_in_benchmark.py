"""CPU time of one history's iALS fold-in (``ImplicitALS.fold_in_one``, what every
``POST /recommendations`` solves), against the ``factors x factors`` Cholesky solve it replaced
for short histories, in the same run.

Item vectors are random (the solve's cost depends on the shapes only): ``--items`` x ``--factors``
float32, as a trained version holds them. For each history length, ``--calls`` calls of each
solve over 50 random histories, BLAS limited to one thread as in a service worker, timed with
``time.process_time`` (CPU time of this process, so other work on the machine matters less than
for wall time); the best of ``--repeats`` rounds, the two solves alternating. The script also
checks that both give the same float32 vectors.

    python benchmarks/fold_in_benchmark.py [--items 1682] [--factors 128] [--calls 2000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import scipy.linalg  # noqa: F401  (SciPy's OpenBLAS loaded before the thread limit, as in the service)
from threadpoolctl import threadpool_limits

threadpool_limits(limits=1, user_api="blas")

import numpy as np  # noqa: E402
from scipy.linalg import lapack  # noqa: E402

from recsys.models.ials import ImplicitALS  # noqa: E402

LENGTHS = (1, 5, 20, 40, 64, 100)


def cholesky_fold_in(model: ImplicitALS, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The former single-history solve: the ``factors x factors`` system by LAPACK's dposv."""
    items = model._require_items()
    _, gram = model._fixed_side(items)
    vectors_of = items[columns].astype(np.float64)
    weights = (values * model.config.alpha).astype(np.float64)
    system = gram + (vectors_of.T * weights) @ vectors_of
    system.flat[:: len(system) + 1] += (
        model.config.regularization * (1.0 + len(values)) ** model.config.frequency_exponent
    )
    _, vector, _ = lapack.dposv(system, (1.0 + weights) @ vectors_of)
    return np.asarray(vector, dtype=np.float32)[None]


def cpu_us(
    solve: Callable[[np.ndarray, np.ndarray], np.ndarray],
    histories: list[tuple[np.ndarray, np.ndarray]],
    calls: int,
) -> float:
    started = time.process_time()
    for call in range(calls):
        solve(*histories[call % len(histories)])
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1682)
    parser.add_argument("--factors", type=int, default=128)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    model = ImplicitALS(factors=args.factors)  # default regularization, alpha and exponent
    model.item_factors = (rng.standard_normal((args.items, args.factors)) * 0.1).astype(np.float32)
    model.fold_in_one(np.array([0]), np.ones(1, np.float32))  # Gram matrix and eigenvectors, once
    print(f"{args.items} items x {args.factors} factors, BLAS 1 thread, CPU us per call", end="")
    print(f" (best of {args.repeats} rounds)")
    print(f"{'history':>7} {'f x f Cholesky':>15} {'fold_in_one':>12} {'ratio':>6} {'same float32':>13}")
    for length in LENGTHS:
        histories = [
            (np.sort(rng.choice(args.items, length, replace=False)), np.ones(length, np.float32))
            for _ in range(50)
        ]
        same = all(
            np.array_equal(model.fold_in_one(*history), cholesky_fold_in(model, *history))
            for history in histories
        )
        before, after = [], []
        for _ in range(args.repeats):
            before.append(cpu_us(lambda c, v: cholesky_fold_in(model, c, v), histories, args.calls))
            after.append(cpu_us(model.fold_in_one, histories, args.calls))
        print(
            f"{length:>7} {min(before):>15.1f} {min(after):>12.1f} {min(before) / min(after):>5.1f}x "
            f"{'50/50' if same else 'NO':>13}"
        )


if __name__ == "__main__":
    main()
