"""Seconds of what `recsys train` does before its model's first epoch, step by step, on a database.

The steps are the trainer's, in its order: the log marks and the count of future-stamped events,
the read (``load_data``: the ADBC read and the combine), the validation carve-out, the seen-items
snapshot, the data fingerprint, and the matrices and features the validation fit and the refit
start from. Each run prints a digest of what the steps produced (fingerprint, split, matrices),
so two checkouts can be compared on the same database: the digests must be equal.

    recsys generate-synthetic --users 32000 --items 12000 --interactions 5000000 --out syn.csv
    RECSYS_DATABASE_URL=sqlite:////tmp/db.sqlite recsys db upgrade
    RECSYS_DATABASE_URL=sqlite:////tmp/db.sqlite recsys ingest csv syn.csv
    python benchmarks/prep_benchmark.py --database-url sqlite:////tmp/db.sqlite
    PYTHONPATH=../other-checkout python benchmarks/prep_benchmark.py --database-url ...  # A/B
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.data.matrix import data_fingerprint
from recsys.db import get_engine
from recsys.models import get_model_class
from recsys.retrieval.snapshot import LogMarks, SeenSnapshot
from recsys.settings import get_settings
from recsys.training.fitting import ValidationSplit, fit_features
from recsys.training.trainer import future_interactions, load_data
from recsys.training.validation import validation_callback


def digest(*parts: Any) -> str:
    """A short sha256 over arrays, sparse matrices and strings."""
    sha = hashlib.sha256()
    for part in parts:
        if sp.issparse(part):
            part = sp.csr_matrix(part)
            for array in (part.indptr, part.indices, part.data):
                sha.update(np.ascontiguousarray(array).tobytes())
        elif isinstance(part, np.ndarray):
            sha.update(np.ascontiguousarray(part).tobytes())
        else:
            sha.update(str(part).encode())
    return sha.hexdigest()[:16]


def run(url: str, model_name: str) -> tuple[dict[str, float], dict[str, str]]:
    """One pass of the steps: seconds per step and the digest of each step's result."""
    engine = get_engine(url)
    recipe = get_model_class(model_name).recipe
    seconds: dict[str, float] = {}
    results: dict[str, str] = {}

    def step(name: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = work()
        seconds[name] = time.perf_counter() - started
        return value

    now = int(time.time())
    marks = step("log marks", lambda: LogMarks.read(engine))
    # One count serves the clamp (None: until now) and the snapshot's check, as in the trainer.
    future = step("future-stamped count", lambda: future_interactions(engine, now))
    data = step("read + combine (load_data)", lambda: load_data(engine, recipe, until=now))
    split = step("validation carve-out", lambda: ValidationSplit.try_carve(data))
    assert split is not None
    seen = step(
        "seen snapshot",
        lambda: future[0] == 0 and SeenSnapshot.from_interactions(data, data.users, data.items, None, marks),
    )
    fingerprint = step("data fingerprint", lambda: data_fingerprint(data))

    def validation_inputs() -> tuple[sp.csr_matrix, Any, dict[str, Any]]:
        learned = recipe.apply(split.train)
        callback = validation_callback(split.train.to_csr(), split.valid.to_csr())
        return learned.to_csr(), callback, fit_features(learned, None)

    def refit_inputs() -> tuple[sp.csr_matrix, dict[str, Any]]:
        learned = recipe.apply(data)
        return learned.to_csr(), fit_features(learned, None)

    learned, callback, features = step("validation fit inputs", validation_inputs)
    refit, refit_features = step("refit inputs", refit_inputs)
    results["fingerprint"] = fingerprint[:16]
    results["split"] = digest(split.train.user_index, split.train.item_index, split.valid.user_index)
    results["matrices"] = digest(
        learned, callback.valid, features["timestamps"], refit, refit_features["timestamps"]
    )
    results["seen"] = digest(seen.seen, seen.fold) if seen else "none"
    return seconds, results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="a database with interactions")
    parser.add_argument("--model", default=None, help="whose recipe (default: RECSYS_DEFAULT_MODEL)")
    parser.add_argument("--repeats", type=int, default=2, help="passes; the median is reported")
    args = parser.parse_args()
    model_name = args.model or get_settings().default_model
    timings: dict[str, list[float]] = defaultdict(list)
    digests: list[dict[str, str]] = []
    for _ in range(args.repeats):
        seconds, results = run(args.database_url, model_name)
        for name, value in seconds.items():
            timings[name].append(value)
        digests.append(results)
    assert all(d == digests[0] for d in digests), digests
    print(f"steps before the first epoch of `recsys train -m {model_name}` (median of {args.repeats})")
    width = max(map(len, timings))
    for name, values in timings.items():
        print(f"  {name:<{width}} {statistics.median(values):8.2f} s")
    total = sum(statistics.median(values) for values in timings.values())
    print(f"  {'total':<{width}} {total:8.2f} s")
    print("digest " + " ".join(f"{key}={value}" for key, value in digests[0].items()))


if __name__ == "__main__":
    main()
