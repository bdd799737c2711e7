"""Cold-start items: the two-tower model's feature-only item vectors against popularity within genre.

    python benchmarks/cold_start_benchmark.py --dataset ml-100k --data-dir DIR/ml-100k --seed 42
    python benchmarks/cold_start_benchmark.py --dataset ml-latest-small --data-dir DIR/ml-latest-small

The data is loaded as a user loads it: the MovieLens files go through the ingestion code into a
temporary SQLite database and are read back as ``recsys train`` reads them (the MovieLens
benchmark's loader). A seeded 10% of the items that have interactions are held out entirely: all
their interactions leave the training data, the items stay in the catalogue with their titles and
genres. The two-tower model is trained on the rest by ``recsys train``'s fitting function with a
user's defaults (:func:`recsys.training.fitting.fit_version`; the split seed as the model's seed),
so the held-out items get vectors from their features alone.

Evaluated users: those with at least one training interaction and one interaction with a held-out
item; their held-out interactions are the test positives. Two rankings, both top 10:

- cold: only the held-out items are candidates (the question a new-arrivals shelf asks);
- all: the whole catalogue, the user's training items excluded (do new items surface at all).

The two-tower lists come from the retrieval object the service answers with
(:class:`recsys.retrieval.Retriever`), the cold ranking by excluding every other item. Baselines
in the same run, on the same users:

- genre popularity (user): an item's score for a user is the sum over the item's genres of the
  share of the user's training items that carry that genre (the user's genre profile dotted with
  the item's genres); ties go to the item with more training interactions (none for held-out
  items), then to a seeded random order;
- genre popularity (global): the same with the genre shares of all training interactions (one
  ranking for everyone);
- random: a seeded random order.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

import recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from pipelines.benchmark_movielens import load_dataset
from recsys.data.interactions import Interactions
from recsys.evaluation import ranking_metrics, recommend_top_k
from recsys.retrieval import RankOptions
from recsys.training.fitting import fit_version

if TYPE_CHECKING:
    import pandas as pd

#: Share of the items with interactions that are held out entirely.
HELD_OUT_SHARE = 0.1
K = 10
MODEL = "two-tower"
#: Rankers in the order they are printed.
RANKERS = (MODEL, "genre popularity (user)", "genre popularity (global)", "random")
#: Users ranked per block by the baselines (bounds their dense users x items score blocks).
BLOCK_USERS = 1024


def hold_out_items(data: Interactions, share: float, seed: int) -> np.ndarray:
    """A seeded ``share`` of the items with at least one interaction (sorted item indices)."""
    if not 0 < share < 1:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    rated = np.flatnonzero(np.bincount(data.item_index, minlength=data.shape[1]) > 0)
    count = max(1, round(share * len(rated)))
    return np.sort(np.random.default_rng(seed).choice(rated, size=count, replace=False))


def genre_matrix(catalog: pd.DataFrame) -> sp.csr_matrix:
    """Items x genres, one where the item carries the genre (rows in the catalogue's order)."""
    names = sorted({genre for genres in catalog["genres"] for genre in genres})
    column = {name: position for position, name in enumerate(names)}
    lengths = [len(genres) for genres in catalog["genres"]]
    rows = np.repeat(np.arange(len(catalog)), lengths)
    cols = np.fromiter((column[g] for genres in catalog["genres"] for g in genres), np.int64, sum(lengths))
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(catalog), len(names)))


def genre_popularity_top_k(
    train: sp.csr_matrix,
    genres: sp.csr_matrix,
    users: np.ndarray,
    candidates: np.ndarray,
    k: int,
    seed: int,
    per_user: bool,
) -> np.ndarray:
    """Top ``k`` of ``candidates`` (item indices) for ``users`` by genre popularity (the rule in
    the module docstring); each user's training items are left out."""
    binary = sp.csr_matrix((np.ones(train.nnz, np.float32), train.indices, train.indptr), shape=train.shape)
    popularity = np.asarray(binary.sum(axis=0)).ravel()[candidates]
    candidate_genres = genres[candidates].T.tocsr()  # genres x candidates
    if per_user:
        counts = binary[users] @ genres  # users x genres: the user's items per genre
        lengths = np.maximum(np.asarray(binary[users].sum(axis=1)), 1.0)
        profiles = sp.csr_matrix(counts.multiply(1.0 / lengths))
    else:
        shares = np.asarray(binary.sum(axis=0)) @ genres / max(binary.nnz, 1)
        profiles = sp.csr_matrix(np.repeat(shares, len(users), axis=0))
    random = np.random.default_rng(seed)
    top = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), BLOCK_USERS):
        block = slice(start, start + BLOCK_USERS)
        scores = (profiles[block] @ candidate_genres).toarray().astype(np.float64)
        seen = binary[users[block]][:, candidates]
        scores[seen.nonzero()] = -np.inf
        tie_break = random.random(scores.shape)
        order = np.lexsort((tie_break, -np.broadcast_to(popularity, scores.shape), -scores), axis=-1)
        top[block] = _padded(candidates[order[:, :k]], np.take_along_axis(scores, order[:, :k], axis=1))
    return top


def random_top_k(
    train: sp.csr_matrix, users: np.ndarray, candidates: np.ndarray, k: int, seed: int
) -> np.ndarray:
    """``k`` of ``candidates`` in a seeded random order per user, training items left out."""
    random = np.random.default_rng(seed)
    top = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), BLOCK_USERS):
        block = slice(start, start + BLOCK_USERS)
        keys = random.random((len(users[block]), len(candidates)))
        seen = train[users[block]][:, candidates]
        keys[seen.nonzero()] = -np.inf
        order = np.argsort(-keys, axis=1)[:, :k]
        top[block] = _padded(candidates[order], np.take_along_axis(keys, order, axis=1))
    return top


def _padded(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``-1`` where the score says the item was left out (fewer candidates than ``k``)."""
    return np.where(np.isneginf(scores), -1, ids)


def run_cold_start(
    data: Interactions,
    catalog: pd.DataFrame,
    *,
    seed: int = 42,
    k: int = K,
    share: float = HELD_OUT_SHARE,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Hold out items, train the two-tower model on the rest, rank held-out items for the users
    who interacted with them. ``params`` replaces the user's defaults (tests make the fit small).

    Returns the split's sizes, the fit seconds and per ranker ``{"cold": metrics, "all": metrics}``
    (``ndcg``, ``recall`` and ``hr`` at ``k``)."""
    if len(catalog) != data.shape[1]:
        raise ValueError(f"the catalogue has {len(catalog)} rows, the data {data.shape[1]} items")
    cold = hold_out_items(data, share, seed)
    is_cold = np.zeros(data.shape[1], dtype=bool)
    is_cold[cold] = True
    held_out = is_cold[data.item_index]
    train = data.subset(~held_out)
    train_csr, test_csr = train.to_csr(), data.subset(held_out).to_csr()
    has_train, has_test = np.diff(train_csr.indptr) > 0, np.diff(test_csr.indptr) > 0
    users = np.flatnonzero(has_train & has_test)
    test = test_csr[users]

    started = time.perf_counter()
    fitted = fit_version(MODEL, {"seed": seed, **(params or {})}, train, catalog=catalog)
    fit_seconds = time.perf_counter() - started

    everything = np.arange(data.shape[1])
    genres = genre_matrix(catalog)
    only_cold = RankOptions(k=k, exclude_items=np.flatnonzero(~is_cold))
    lists: dict[str, dict[str, np.ndarray]] = {
        MODEL: {
            "cold": recommend_top_k(fitted.model, train_csr, users, k, options=only_cold),
            "all": recommend_top_k(fitted.model, train_csr, users, k),
        }
    }
    for name, per_user in (("genre popularity (user)", True), ("genre popularity (global)", False)):
        lists[name] = {
            part: genre_popularity_top_k(train_csr, genres, users, candidates, k, seed, per_user)
            for part, candidates in (("cold", cold), ("all", everything))
        }
    lists["random"] = {
        part: random_top_k(train_csr, users, candidates, k, seed)
        for part, candidates in (("cold", cold), ("all", everything))
    }
    rows = {}
    for name in RANKERS:
        rows[name] = {}
        for part, top in lists[name].items():
            metrics = ranking_metrics(top, test)
            rows[name][part] = {key: metrics[key] for key in ("ndcg", "recall", "hr")}
    return {
        "seed": seed,
        "k": k,
        "held_out_share": share,
        "split": {
            "items": int(data.shape[1]),
            "held_out_items": len(cold),
            "train_interactions": len(train),
            "held_out_interactions": int(held_out.sum()),
            "evaluated_users": len(users),
        },
        "fit_seconds": fit_seconds,
        "epochs": fitted.epochs,
        "rows": rows,
    }


def print_result(result: dict[str, Any], dataset: str) -> None:
    split, k = result["split"], result["k"]
    print(
        f"{dataset}, seed {result['seed']}: {split['held_out_items']} of {split['items']} items held out "
        f"({split['held_out_interactions']} interactions; {split['train_interactions']} train), "
        f"{split['evaluated_users']} users evaluated"
    )
    print(f"{MODEL} fit (validation fit + refit, {result['epochs']} epochs): {result['fit_seconds']:.1f} s")
    header = f"{'ranker':28} {'cold nDCG@' + str(k):>14} {'cold Recall@' + str(k):>15}"
    header += f" {'all nDCG@' + str(k):>13} {'all Recall@' + str(k):>14}"
    print(header)
    for name, row in result["rows"].items():
        cold, every = row["cold"], row["all"]
        print(f"{name:28} {cold['ndcg']:14.4f} {cold['recall']:15.4f}", end="")
        print(f" {every['ndcg']:13.4f} {every['recall']:14.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-latest-small"])
    parser.add_argument("--data-dir", type=Path, default=None, help="the extracted MovieLens folder")
    parser.add_argument("--seed", type=int, default=42, help="items held out and the model's seed")
    args = parser.parse_args()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory(prefix="recsys-cold-start-") as scratch:
        dataset, _ = load_dataset(args.dataset, args.data_dir, args.seed, False, None, Path(scratch))
    assert dataset.catalog is not None  # MovieLens has a catalogue
    result = run_cold_start(dataset.data, dataset.catalog, seed=args.seed)
    print_result(result, args.dataset)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
