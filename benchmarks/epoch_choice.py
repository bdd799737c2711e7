"""How the epoch choice behaves on real validation curves: iALS with ratings as confidence (as
``recsys train`` passes them) on ml-100k, one validation carve-out per seed.

For each validation seed the full curve (15 sweeps) is fitted once; raw early stopping (the best
single value, patience 3) and the default stopping rule (smoothed, minimum, patience on the
smoothed curve) are replayed on it, and a refit on the whole Protocol K train part for the epochs
each one chose is measured on the test part (nDCG@10)::

    RECSYS_MOVIELENS_DIR=/path/to/movielens python benchmarks/epoch_choice.py --seeds 1 2 3 43
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

import recsys  # noqa: F401  # environment for TensorFlow before it is imported
from recsys.data.interactions import Interactions
from recsys.data.splits import protocol_k_split, validation_split
from recsys.evaluation import evaluate_ranking
from recsys.models import FitOptions, create_model
from recsys.runtime.epochs import StoppingRule
from recsys.training.validation import validation_callback

#: Folder holding MovieLens's ``ml-100k`` folder (or pass ``--data`` to that folder itself).
MOVIELENS_DIR = os.environ.get("RECSYS_MOVIELENS_DIR")


def replay(rule: StoppingRule, history: list[dict[str, Any]]) -> int:
    """The epoch ``rule`` would have kept had it stopped the fit that produced ``history``."""
    ran = next(n for n in range(1, len(history) + 1) if n == len(history) or rule.should_stop(history[:n]))
    chosen = rule.chosen_epoch(history[:ran])
    assert chosen is not None
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 43])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(MOVIELENS_DIR) / "ml-100k" if MOVIELENS_DIR else None,
        required=MOVIELENS_DIR is None,
        help="the ml-100k folder (default: $RECSYS_MOVIELENS_DIR/ml-100k)",
    )
    args = parser.parse_args()
    ratings = np.loadtxt(args.data / "u.data", dtype=np.int64)
    data = Interactions.from_arrays(ratings[:, 0], ratings[:, 1], values=ratings[:, 2].astype(np.float32))
    train, test = protocol_k_split(data, seed=42)
    rules = {
        "raw best, patience 3": StoppingRule(window=1, patience=3),
        "default rule": create_model("ials").stopping_rule(),
    }
    print(f"ml-100k, ratings as confidence; rules: {rules}")
    for seed in args.seeds:
        started = time.perf_counter()
        fit_part, valid = validation_split(train, seed=seed)
        validate = validation_callback(fit_part.to_csr(), valid.to_csr())
        curve = create_model("ials", min_epochs=15).fit(fit_part.to_csr(), FitOptions(validate=validate))
        values = " ".join(f"{entry['val_ndcg']:.4f}" for entry in curve.history)
        print(f"validation seed {seed}: validation nDCG@10 per sweep {values}")
        for name, rule in rules.items():
            epochs = replay(rule, curve.history)
            refit = create_model("ials").fit(train.to_csr(), FitOptions(epochs=epochs))
            ndcg = evaluate_ranking(refit, train.to_csr(), test.to_csr())["ndcg"]
            print(f"  {name:<22} keeps {epochs:>2} sweeps -> test nDCG@10 {ndcg:.4f}")
        print(f"  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
