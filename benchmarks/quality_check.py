"""Quality of iALS (Protocol K) and explicit MF (Protocol R) on MovieLens, with fit seconds.

Follows docs/protocol.md with seed 42. ``--validation`` evaluates on the
validation split carved from the train part (seed 43) instead of the test part: that is the
split the default hyper-parameters were tuned on.

    python benchmarks/quality_check.py ials --dataset ml-100k
    python benchmarks/quality_check.py ials --dataset ml-latest-small --param regularization=80
    python benchmarks/quality_check.py ials --validation --grid '{"regularization": [4, 6, 9]}'
    python benchmarks/quality_check.py mf --dataset ml-100k

iALS follows ``recsys train`` and the MovieLens benchmark: early stopping on the validation
carve-out chooses the sweeps, then a refit on the whole train part. ``--grid`` searches on the
validation carve-outs of both datasets and ranks by their mean nDCG@10 (how the defaults were
chosen).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

import recsys  # noqa: F401  # environment for TensorFlow before it is imported
from recsys.data.interactions import Interactions
from recsys.evaluation import evaluate_ranking, evaluate_rating
from recsys.models import FitOptions, create_model
from recsys.models.base import refit_epochs
from recsys.training.validation import validation_callback

DATA = Path(os.environ.get("RECSYS_TEST_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def read_ratings(dataset: str) -> pd.DataFrame:
    if dataset == "ml-100k":
        return pd.read_csv(
            DATA / dataset / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"]
        )
    frame = pd.read_csv(DATA / dataset / "ratings.csv")
    return frame.rename(columns={"userId": "user_id", "movieId": "item_id"})


def load(dataset: str) -> Interactions:
    """The ratings with the ids the MovieLens benchmark gives them, so that splits are identical."""
    try:
        from pipelines.benchmark_movielens import load_dataset
    except ImportError:
        ratings = read_ratings(dataset)
        return Interactions.from_arrays(
            ratings.user_id, ratings.item_id, ratings.rating.astype(np.float32), ratings.timestamp
        )
    return load_dataset(dataset, DATA / dataset, seed=42, quick=False).data


def _per_user_split(data: Interactions, seed: int) -> tuple[Interactions, Interactions]:
    """Protocol K's rule: per user, a seeded shuffle puts floor(0.2 n + 0.5) in test (n >= 5)."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(data)), data.user_index))
    users = data.user_index[order]
    counts = np.bincount(users, minlength=len(data.users))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(order)) - first[users]
    n_test = np.where(counts >= 5, np.floor(0.2 * counts + 0.5), 0).astype(np.int64)
    test = np.zeros(len(data), dtype=bool)
    test[order] = rank < n_test[users]
    return data.subset(~test), data.subset(test)


def protocol_k(data: Interactions, seed: int = 42) -> tuple[Interactions, Interactions]:
    try:
        from recsys.data.splits import protocol_k_split
    except ImportError:
        return _per_user_split(data, seed)
    return protocol_k_split(data, seed=seed)


def validation(train: Interactions) -> tuple[Interactions, Interactions]:
    try:
        from recsys.data.splits import validation_split
    except ImportError:
        return _per_user_split(train, 43)
    return validation_split(train, seed=43)


def protocol_r(
    data: Interactions, n_folds: int = 5, seed: int = 42
) -> list[tuple[Interactions, Interactions]]:
    try:
        from recsys.data.splits import protocol_r_folds
    except ImportError:
        folds = np.array_split(np.random.default_rng(seed).permutation(len(data)), n_folds)
        result = []
        for fold in folds:
            test = np.zeros(len(data), dtype=bool)
            test[fold] = True
            result.append((data.subset(~test), data.subset(test)))
        return result
    return protocol_r_folds(data, n_folds=n_folds, seed=seed)


def parse_params(pairs: list[str]) -> dict[str, object]:
    params: dict[str, object] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def implicit_splits(data: Interactions) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """Protocol K (every rating a positive interaction): the validation fit part, the validation
    carve-out, the whole train part and the test part."""
    implicit = Interactions(
        data.users,
        data.items,
        data.user_index,
        data.item_index,
        np.ones(len(data), np.float32),
        data.timestamps,
    )
    train, test = protocol_k(implicit)
    fit_part, valid = validation(train)
    return fit_part.to_csr(), valid.to_csr(), train.to_csr(), test.to_csr()


def validate_ials(
    fit_part: sp.csr_matrix, valid: sp.csr_matrix, params: dict[str, object]
) -> tuple[float, int]:
    """As ``recsys train``: early stopping on the carve-out; the best validation nDCG@10 and its sweep."""
    options = FitOptions(validate=validation_callback(fit_part, valid))
    model = create_model("ials", **params).fit(fit_part, options)
    return max(entry["val_ndcg"] for entry in model.history), int(refit_epochs(model) or 0)


def check_ials(data: Interactions, params: dict[str, object], on_validation: bool) -> None:
    fit_part, valid, train, test = implicit_splits(data)
    started = time.perf_counter()
    ndcg, sweeps = validate_ials(fit_part, valid, params)
    if on_validation:
        print(f"ials {params} validation ndcg@10={ndcg:.4f} at sweep {sweeps}")
        return
    model = create_model("ials", **params).fit(train, FitOptions(epochs=sweeps))  # the refit
    fit_seconds = time.perf_counter() - started
    metrics = evaluate_ranking(model, train, test, k=10)
    print(
        f"ials {params} sweeps={sweeps} ndcg@10={metrics['ndcg']:.4f} recall@10={metrics['recall']:.4f} "
        f"precision@10={metrics['precision']:.4f} fit_s={fit_seconds:.2f} (validation fit and refit)"
    )


def grid_ials(grid: dict[str, list[object]]) -> None:
    """Every combination of ``grid`` on the validation carve-outs of both datasets, best mean first."""
    splits = {name: implicit_splits(load(name))[:2] for name in ("ml-100k", "ml-latest-small")}
    rows = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        scores = {name: validate_ials(*split, params) for name, split in splits.items()}
        mean = float(np.mean([ndcg for ndcg, _ in scores.values()]))
        shown = " ".join(f"{name}={ndcg:.4f}@{sweeps}" for name, (ndcg, sweeps) in scores.items())
        print(f"  {json.dumps(params)} mean={mean:.4f} {shown}", flush=True)
        rows.append((mean, params))
    best_mean, best = max(rows, key=lambda row: row[0])
    print(f"best on validation: {json.dumps(best)} mean nDCG@10 {best_mean:.4f}")


def check_mf(data: Interactions, params: dict[str, object], on_validation: bool, folds: int) -> None:
    scores, seconds = [], []
    splits = protocol_r(data)
    if on_validation:  # tune on a carve-out of the first fold's train part, never on its test part
        first_train = splits[0][0]
        splits = protocol_r(first_train, seed=43)[:1]
    for train, test in splits[:folds]:
        model = create_model("mf", **params)
        started = time.perf_counter()
        model.fit(train.to_csr())
        seconds.append(time.perf_counter() - started)
        scores.append(evaluate_rating(model, train.to_csr(), test.to_csr(), clip=(0.5, 5.0))["rmse"])
        print(f"  fold rmse={scores[-1]:.4f} fit_s={seconds[-1]:.1f}", flush=True)
    print(
        f"mf {params} rmse={np.mean(scores):.4f} +- {np.std(scores):.4f} "
        f"fit_s={np.median(seconds):.1f} (median over {len(scores)} folds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["ials", "mf"])
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-latest-small"])
    parser.add_argument("--param", action="append", default=[], help="key=value (JSON value)")
    parser.add_argument("--validation", action="store_true", help="evaluate on the validation carve-out")
    parser.add_argument("--folds", type=int, default=5, help="Protocol R folds to run (MF)")
    parser.add_argument(
        "--grid", type=json.loads, help='iALS: JSON {"param": [values]} searched on validation, both datasets'
    )
    args = parser.parse_args()
    print(f"{args.dataset}, seed 42, {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    if args.grid is not None:
        grid_ials(args.grid)
        return
    data = load(args.dataset)
    params = parse_params(args.param)
    if args.model == "ials":
        check_ials(data, params, args.validation)
    else:
        check_mf(data, params, args.validation, args.folds)


if __name__ == "__main__":
    main()
