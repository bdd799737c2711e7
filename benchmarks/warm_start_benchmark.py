"""iALS warm start against training from scratch: fit seconds, sweeps and test nDCG@10 of both.

Scenario: a previous version was trained on the interactions of the first 90% of the time span
(by timestamp); new data arrived and the model is retrained on everything. Quality follows
docs/protocol.md, Protocol K (seed 42) on the full data; the test part is used
once, for the printed nDCG@10 (``recsys.evaluation.evaluate_ranking``). Both runs train as
``recsys train`` does: an early-stopped fit on the train part minus a validation carve-out (seed
43) chooses the sweeps, then a refit on the whole train part runs that many; the time covers both.

- previous version: that same procedure on the train part's interactions up to the cut-off;
- cold: from random vectors;
- warm: from the previous version's vectors (ids it never saw flagged unknown, as
  ``align_warm_start`` does), validated like ``recsys train --warm-start``: only on held-out pairs
  newer than the previous version's data, the older ones go back to training.

    python benchmarks/warm_start_benchmark.py                  # ml-100k
    python benchmarks/warm_start_benchmark.py --dataset ml-latest-small --repeats 5

Times are medians over ``--repeats`` runs, cold and warm interleaved.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import recsys  # noqa: F401  # environment for TensorFlow before it is imported
from pipelines.benchmark_movielens import load_dataset
from recsys.data.interactions import Interactions
from recsys.data.splits import protocol_k_split, validation_split
from recsys.evaluation import evaluate_ranking
from recsys.models import FitOptions, WarmStart
from recsys.models.base import refit_epochs
from recsys.models.ials import ImplicitALS
from recsys.training.trainer import ValidationSplit, unseen_validation
from recsys.training.validation import validation_callback

DATA = Path(os.environ.get("RECSYS_TEST_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
#: Share of the time span the previous version was trained on.
OLD_FRACTION = 0.9


@dataclass
class Run:
    seconds: float
    validation_sweeps: int
    chosen_sweeps: int
    ndcg: float


def load(dataset: str) -> Interactions:
    """The ratings as the MovieLens benchmark reads them (same ids, so the same split); Protocol
    K counts every rating as a positive interaction, so values are 1."""
    data = load_dataset(dataset, DATA / dataset, seed=42, quick=False).data
    return Interactions(
        data.users, data.items, data.user_index, data.item_index,
        np.ones(len(data), np.float32), data.timestamps,
    )  # fmt: skip


def fit_like_recsys(split: ValidationSplit, warm: WarmStart | None = None) -> tuple[ImplicitALS, int, int]:
    """``recsys train``'s two fits: early-stopped on the validation carve-out, then a refit on all
    of ``split.data`` for the chosen sweeps. The model, the sweeps run and the sweeps chosen."""
    validate = validation_callback(split.train_csr, split.valid_csr)
    validated = ImplicitALS().fit(split.train_csr, FitOptions(validate=validate, warm_start=warm))
    sweeps = int(refit_epochs(validated) or 0)
    final = ImplicitALS().fit(split.data.to_csr(), FitOptions(epochs=sweeps, warm_start=warm))
    return final, len(validated.history), sweeps


def previous_version(train: Interactions, cutoff: int) -> WarmStart:
    """The vectors a ``recsys train`` run on the old part of the train data would have left, as
    ``align_warm_start`` gives them to the new run (ids it never saw flagged unknown)."""
    old = train.subset(train.timestamps <= cutoff)
    fit_part, valid = validation_split(old, seed=43)
    model, _, _ = fit_like_recsys(ValidationSplit(data=old, train=fit_part, valid=valid))
    assert model.user_factors is not None and model.item_factors is not None
    old_csr = old.to_csr()
    return WarmStart(
        user_factors=model.user_factors,
        item_factors=model.item_factors,
        known_users=np.diff(old_csr.indptr) > 0,
        known_items=np.bincount(old_csr.indices, minlength=old_csr.shape[1]) > 0,
    )


def timed_run(split: ValidationSplit, test_csr: sp.csr_matrix, warm: WarmStart | None) -> Run:
    started = time.perf_counter()
    model, sweeps_run, sweeps_chosen = fit_like_recsys(split, warm)
    seconds = time.perf_counter() - started
    ndcg = evaluate_ranking(model, split.data.to_csr(), test_csr, k=10)["ndcg"]
    return Run(seconds, sweeps_run, sweeps_chosen, ndcg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-latest-small"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.dataset}, Protocol K seed 42, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")  # fmt: skip
    data = load(args.dataset)
    train, test = protocol_k_split(data, seed=42)
    test_csr = test.to_csr()
    cutoff = int(np.quantile(data.timestamps, OLD_FRACTION))
    warm = previous_version(train, cutoff)
    cold_split = ValidationSplit(train, *validation_split(train, seed=43))
    # As recsys train --warm-start: validate only on pairs newer than the previous version's data,
    # the older held-out pairs go back to training (the warm vectors were fitted on them).
    warm_split = unseen_validation(cold_split, cutoff)
    assert warm_split is not None
    print(
        f"previous version: train interactions up to the {OLD_FRACTION:.0%} time quantile; new since: "
        f"{int((~warm.known_users).sum())} users, {int((~warm.known_items).sum())} items, "
        f"{int((train.timestamps > cutoff).sum())} train interactions; warm validation on the "
        f"{len(warm_split.valid)} held-out pairs newer than that (cold: all {len(cold_split.valid)})"
    )
    ImplicitALS(epochs=1).fit(test_csr)  # compile the TensorFlow functions outside the timing
    runs: dict[str, list[Run]] = {"cold": [], "warm": []}
    for _ in range(args.repeats):
        runs["cold"].append(timed_run(cold_split, test_csr, None))
        runs["warm"].append(timed_run(warm_split, test_csr, warm))
    medians = {label: statistics.median(run.seconds for run in done) for label, done in runs.items()}
    print("         fit s (median)  validation sweeps  refit sweeps  test nDCG@10")
    for label, done in runs.items():
        last = done[-1]
        print(f"  {label}  {medians[label]:14.2f}  {last.validation_sweeps:17d}  {last.chosen_sweeps:12d}"
              f"  {last.ndcg:12.4f}")  # fmt: skip
    gap = runs["warm"][-1].ndcg - runs["cold"][-1].ndcg
    print(
        f"  warm / cold time: {medians['warm'] / medians['cold']:.2f}x (target: well under 0.5x); "
        f"nDCG difference {gap:+.4f} (target: within 0.005)"
    )


if __name__ == "__main__":
    main()
