"""Two-tower seconds per epoch on a synthetic set (5M interactions by default, MovieLens-25M's
users and items), next to iALS's seconds per epoch on the same matrix in the same run.

    python benchmarks/two_tower_epoch_benchmark.py
    python benchmarks/two_tower_epoch_benchmark.py --interactions 1000000 --epochs 2

The data is :func:`recsys.data.synthetic.generate_synthetic`'s log (what ``recsys
generate-synthetic`` writes) with its item catalogue's titles and genres as the two-tower
model's item features, every interaction a positive. Both models run with their defaults apart
from the epoch count, without validation. Times are noisy on a shared machine: compare the ratio,
and read the load average printed beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

import recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from recsys.data.synthetic import generate_synthetic, synthetic_items
from recsys.models import FitOptions, create_model


def synthetic(n_users: int, n_items: int, n_interactions: int) -> tuple[sp.csr_matrix, dict[str, list]]:
    """The binary user x item matrix and the item features aligned to its columns."""
    frame = generate_synthetic(n_users, n_items, n_interactions, seed=42)
    users = pd.factorize(frame.user_id)[0]
    item_ids = [f"i{item}" for item in range(n_items)]  # every catalogue item is a column
    items = pd.Index(item_ids).get_indexer(frame.item_id)
    matrix = sp.csr_matrix(
        (np.ones(len(frame), np.float32), (users, items)), shape=(int(users.max()) + 1, n_items)
    )
    catalogue = synthetic_items(n_items, seed=42)
    features = {
        "item_titles": catalogue["title"].tolist(),
        "item_genres": [genres.split("|") for genres in catalogue["genres"]],
    }
    return matrix, features


def epoch_seconds(model_name: str, matrix: sp.csr_matrix, epochs: int, **options: object) -> list[float]:
    """Seconds of each epoch (the first includes building the model or compiling kernels)."""
    model = create_model(model_name, epochs=epochs).fit(matrix, FitOptions(**options))  # type: ignore[arg-type]
    return [float(entry["seconds"]) for entry in model.history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=162_000)
    parser.add_argument("--items", type=int, default=62_000)
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per model")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only")
    started = time.perf_counter()
    matrix, features = synthetic(args.users, args.items, args.interactions)
    print(
        f"synthetic {matrix.shape[0]} users x {matrix.shape[1]} items, {matrix.nnz} interactions "
        f"(generated in {time.perf_counter() - started:.0f} s); load average "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    create_model("ials", epochs=1).fit(matrix[:1000])  # compile (or load) iALS's kernels once
    ials = epoch_seconds("ials", matrix, args.epochs)
    tower = epoch_seconds("two-tower", matrix, args.epochs, features=features)
    # The first two-tower epoch traces the graph: the median of the later ones is the steady pace.
    steady_tower = statistics.median(tower[1:] or tower)
    steady_ials = statistics.median(ials)
    for label, seconds in (("two-tower", tower), ("ials     ", ials)):
        print(f"  {label} seconds per epoch: {', '.join(f'{s:.2f}' for s in seconds)}")
    print(
        f"two-tower: {steady_tower:.2f} s per epoch (median after the first), "
        f"{matrix.nnz / steady_tower:,.0f} interactions/s"
    )
    print(
        f"ials:      {steady_ials:.2f} s per epoch (median), {matrix.nnz / steady_ials:,.0f} interactions/s"
    )
    print(f"ratio two-tower / ials per epoch: {steady_tower / steady_ials:.2f}x")
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
