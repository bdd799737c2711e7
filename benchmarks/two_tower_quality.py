"""Two-tower quality on MovieLens, Protocol K (docs/protocol.md), seed 42.

    python benchmarks/two_tower_quality.py --dataset ml-100k
    python benchmarks/two_tower_quality.py --dataset ml-latest-small --no-features
    python benchmarks/two_tower_quality.py --dataset ml-100k --tune --param temperature=0.05

Default: fit with the default parameters on the train part, report nDCG@10 / Recall@10 on the
test part and the fit seconds. ``--tune`` instead carves a validation split out of the train part
(same rule, seed 43), early-stops on it and reports validation figures: the test part is never
used for choosing parameters.

The MovieLens folders (``ml-100k/``, ``ml-latest-small/``, as extracted from GroupLens's zips) are
read from ``$RECSYS_BENCHMARK_DATA`` (default: the current folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

import recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from recsys.data.interactions import Interactions
from recsys.data.splits import protocol_k_split, validation_split
from recsys.evaluation import evaluate_ranking
from recsys.models import FitOptions, create_model
from recsys.training.validation import validation_callback

DATA_DIR = Path(os.environ.get("RECSYS_BENCHMARK_DATA", "."))


def load(dataset: str) -> tuple[Interactions, dict[str, list]]:
    """Ratings as positives, plus item genres and titles aligned to the item indices."""
    folder = DATA_DIR / dataset
    if dataset == "ml-100k":
        ratings = pd.read_csv(folder / "u.data", sep="\t", names=["user", "item", "rating", "ts"])
        genre_names = pd.read_csv(folder / "u.genre", sep="|", names=["name", "id"])["name"].tolist()
        movies = pd.read_csv(
            folder / "u.item",
            sep="|",
            encoding="latin-1",
            header=None,
            names=["item", "title", "date", "video", "url", *genre_names],
        )
        flags = movies[genre_names].to_numpy(dtype=bool)
        movies["genres"] = [[genre_names[j] for j in np.flatnonzero(row)] for row in flags]
    else:
        ratings = pd.read_csv(folder / "ratings.csv").rename(
            columns={"userId": "user", "movieId": "item", "timestamp": "ts"}
        )
        movies = pd.read_csv(folder / "movies.csv").rename(columns={"movieId": "item"})
        movies["genres"] = [[] if g == "(no genres listed)" else g.split("|") for g in movies["genres"]]
    data = Interactions.from_arrays(ratings["user"], ratings["item"], ratings["rating"], ratings["ts"])
    by_id = movies.set_index(movies["item"].astype(str))
    aligned = by_id.reindex(data.items.to_list())
    features = {
        "item_genres": [g if isinstance(g, list) else [] for g in aligned["genres"]],
        "item_titles": aligned["title"].fillna("").astype(str).tolist(),
    }
    return data, features


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-latest-small"])
    parser.add_argument("--param", action="append", default=[], help="key=value model parameter")
    parser.add_argument("--no-features", action="store_true", help="ids only: no genres or titles")
    parser.add_argument("--tune", action="store_true", help="report validation figures (seed 43)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = value
    data, features = load(args.dataset)
    train, test = protocol_k_split(data, seed=42)
    validation = None
    if args.tune:
        train, test = validation_split(train, seed=43)
        validation = test.to_csr()
    model = create_model("two-tower", **params)
    options = FitOptions(
        validate=None if validation is None else validation_callback(train.to_csr(), validation),
        features=None if args.no_features else features,
        progress=args.progress,
    )
    started = time.perf_counter()
    model.fit(train.to_csr(), options)
    fit_seconds = time.perf_counter() - started
    metrics = evaluate_ranking(model, train.to_csr(), test.to_csr(), k=10)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only")
    print(f"protocol K, {args.dataset}, seed 42{' (validation seed 43)' if args.tune else ''}")
    print(f"params: {model.params}")
    print(f"features: {'none' if args.no_features else 'genres + titles'}")
    for entry in model.history:
        print(
            "  " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items())
        )
    part = "validation" if args.tune else "test"
    print(
        f"{part} nDCG@10 {metrics['ndcg']:.4f}  Recall@10 {metrics['recall']:.4f}  "
        f"fit {fit_seconds:.1f} s  epochs {len(model.history)}"
    )


if __name__ == "__main__":
    main()
