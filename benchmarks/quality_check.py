"""Choose a model's defaults: a grid on the validation carve-outs of both MovieLens datasets.

Each dataset is loaded the way the benchmark loads it (the ingestion code into a temporary
database, ratings with their values); the Protocol K train part (seed 42) is carved by the
validation rule (seed 43) exactly as ``recsys train`` carves it, and every grid point goes through
the first half of the one fitting path (:func:`recsys.training.fitting.validate`, as the tuner's
trials do): the model's recipe, early stopping, metrics next to popularity. The test part is never
seen. Figures on the test part come from the benchmark itself (``python -m
pipelines.benchmark_movielens``), which trains through the whole path.

    python benchmarks/quality_check.py ials --data-dir DIR --grid '{"regularization": [4, 6, 9]}'
    python benchmarks/quality_check.py ease --data-dir DIR --grid '{"l2": [100, 250, 500]}'
    python benchmarks/quality_check.py ials --data-dir DIR --values raw binary threshold=4

``DIR`` holds the extracted ``ml-100k`` and ``ml-latest-small`` folders. Rows are ranked by the
mean over the datasets of validation nDCG@10 (RMSE for models that predict ratings). ``--values``
compares value rules of the recipe (how ratings become what the model learns from) for every
grid point: how each model's default recipe was chosen.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np

import recsys  # noqa: F401  # environment for TensorFlow before it is imported
from pipelines.benchmark_movielens import load_dataset
from recsys.data.recipe import Recipe
from recsys.data.splits import protocol_k_split
from recsys.models import MODEL_CLASSES, get_model_class
from recsys.training.fitting import ValidationSplit, parse_config, validate
from recsys.training.tuning import objective_of

DATASETS = ("ml-100k", "ml-latest-small")


def carve_outs(data_dir: Path, scratch: Path) -> dict[str, tuple[ValidationSplit, object]]:
    """Per dataset: the validation carve-out of the Protocol K train part, and its catalogue."""
    splits = {}
    for name in DATASETS:
        folder = scratch / name
        folder.mkdir()
        dataset, _ = load_dataset(name, data_dir / name, 42, False, None, folder)
        train, _ = protocol_k_split(dataset.data, seed=42)
        splits[name] = (ValidationSplit.carve(train), dataset.catalog)
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(MODEL_CLASSES))
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="folder with ml-100k/ and ml-latest-small/"
    )
    parser.add_argument("--grid", type=json.loads, default={}, help='JSON {"param": [values]}')
    parser.add_argument(
        "--values", nargs="+", default=None, help="value rules to compare: raw, binary, threshold=T"
    )
    args = parser.parse_args()
    model_class = get_model_class(args.model)
    metric, direction = objective_of(model_class)
    with tempfile.TemporaryDirectory() as scratch:
        splits = carve_outs(args.data_dir, Path(scratch))
        recipes = (
            [value_rule(model_class.recipe, rule) for rule in args.values]
            if args.values
            else [model_class.recipe]
        )
        rows = []
        for recipe, values in itertools.product(recipes, itertools.product(*args.grid.values())):
            params = dict(zip(args.grid, values, strict=True))
            config = parse_config(args.model, params)
            scores = {}
            for name, (split, catalog) in splits.items():
                validated = validate(
                    args.model,
                    config,
                    split,
                    recipe,
                    catalog=catalog if model_class.uses_catalog else None,  # type: ignore[arg-type]
                )
                scores[name] = (validated.metrics[metric], validated.epochs)
            mean = float(np.mean([value for value, _ in scores.values()]))
            shown = " ".join(f"{name}={value:.4f}@{epochs}" for name, (value, epochs) in scores.items())
            label = f"values={recipe.values}" + (
                f">={recipe.threshold:g}" if recipe.threshold is not None else ""
            )
            print(f"  {label} {json.dumps(params)} mean {metric}={mean:.4f} {shown}", flush=True)
            rows.append((mean, label, params))
    pick = max if direction == "maximize" else min
    best_mean, label, best = pick(rows, key=lambda row: row[0])
    print(f"best on validation: {label} {json.dumps(best)} mean {metric} {best_mean:.4f}")


def value_rule(recipe: Recipe, rule: str) -> Recipe:
    """``recipe`` with the value rule ``raw``, ``binary`` or ``threshold=T``."""
    name, _, threshold = rule.partition("=")
    changes = {"values": name, "threshold": float(threshold) if threshold else None}
    return Recipe.model_validate({**recipe.model_dump(), **changes})


if __name__ == "__main__":
    main()
