"""Batch scoring speed: our blocked scoring vs a bare numpy matmul + argpartition of the same size.

    python benchmarks/scoring_benchmark.py [--users 100000] [--items 50000] [--dim 64] [--k 10]

Both compute every user's top k over random vectors in the same run. Ours (the retriever that
``recsys score`` and the service use) also excludes 20 seen items per user, sorts each list and
folds nothing in (all users are trained). Target: ours within 1.5x of the bare time. The ml-100k
sized case (943 x 1682) is timed too (target < 0.1 s), and so is folding in all its users at once
with iALS (128 factors), the one blocked solve that scoring after new feedback runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import IdMap
from recsys.models.base import FitOptions, Recommender
from recsys.models.ials import ImplicitALS
from recsys.retrieval import Retriever
from recsys.scoring import score_all_users


class RandomVectors(Recommender):
    name = "random-vectors"

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> RandomVectors:
        return self

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        raise NotImplementedError("every user of the benchmark is trained")


def make(n_users: int, n_items: int, dim: int, seen_per_user: int) -> tuple[RandomVectors, sp.csr_matrix]:
    rng = np.random.default_rng(0)
    model = RandomVectors()
    model.user_factors = rng.normal(size=(n_users, dim)).astype(np.float32)
    model.item_factors = rng.normal(size=(n_items, dim)).astype(np.float32)
    cols = rng.integers(0, n_items, size=n_users * seen_per_user)
    rows = np.repeat(np.arange(n_users), seen_per_user)
    seen = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n_users, n_items))
    return model, seen


def bare_numpy(users: np.ndarray, items: np.ndarray, k: int, block: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(users), block):
        scores = users[start : start + block] @ items.T
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return time.perf_counter() - started


def id_map(n: int) -> IdMap:
    return IdMap(np.arange(n).astype(str).astype(object))


def ours(model: Recommender, seen: sp.csr_matrix, k: int, block: int, fold: bool = False) -> float:
    """Build the retriever (folding every user in when ``fold``) and score every user."""
    started = time.perf_counter()
    folded = np.full(seen.shape[0], fold)
    retriever = Retriever.from_matrix(model, id_map(seen.shape[0]), id_map(seen.shape[1]), seen, fold=folded)
    for _ in score_all_users(retriever, k, block_size=block):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--block", type=int, default=4096)
    args = parser.parse_args()

    small_model, small_seen = make(943, 1682, 64, 100)
    ours(small_model, small_seen, 10, 4096)  # warm-up (FAISS and BLAS initialisation)
    small = min(ours(small_model, small_seen, 10, 4096) for _ in range(3))
    print(f"ml-100k size (943 users x 1682 items x 64, 100 seen/user): {small * 1000:.1f} ms (target < 100)")
    ials = ImplicitALS(factors=128)
    rng = np.random.default_rng(1)
    ials.item_factors = (rng.normal(size=(1682, 128)) * 0.1).astype(np.float32)
    ials.user_factors = rng.normal(size=(943, 128)).astype(np.float32)
    folded = min(ours(ials, small_seen, 10, 4096, fold=True) for _ in range(3))
    print(f"ml-100k size, all 943 users folded in (iALS, 128 factors): {folded * 1000:.1f} ms")

    model, seen = make(args.users, args.items, args.dim, 20)
    assert model.user_factors is not None and model.item_factors is not None
    bare = bare_numpy(model.user_factors, model.item_factors, args.k, args.block)
    mine = ours(model, seen, args.k, args.block)
    size = f"{args.users} users x {args.items} items x {args.dim}, k={args.k}"
    print(f"{size}: bare numpy matmul+argpartition {bare:.2f}s, recsys scoring {mine:.2f}s")
    print(f"ratio {mine / bare:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
