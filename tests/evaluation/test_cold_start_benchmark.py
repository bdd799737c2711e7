"""The cold-start benchmark's core on a small synthetic log whose genres are its planted factors:
the held-out share, the table's structure, figures in [0, 1], the same figures for the same seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.data.interactions import Interactions
from recsys.data.synthetic import generate_synthetic, synthetic_items

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cold_start_benchmark.py"
#: A fit of a few seconds.
SMALL = {"dim": 16, "hidden": 32, "batch_size": 256, "learning_rate": 0.01, "epochs": 4}


def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cold_start_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def log() -> tuple[Interactions, pd.DataFrame]:
    ratings = generate_synthetic(300, 200, 9_000, seed=3, rank=4)
    columns = ("user_id", "item_id", "rating", "timestamp")
    data = Interactions.from_arrays(*(ratings[column] for column in columns))
    items = synthetic_items(200, seed=3, rank=4).set_index("item_id").loc[data.items.to_list()]
    catalog = pd.DataFrame(
        {
            "external_id": data.items.to_list(),
            "title": items["title"].to_list(),
            "genres": [genres.split("|") for genres in items["genres"]],
        }
    )
    return data, catalog


@pytest.fixture(scope="module")
def result(log: tuple[Interactions, pd.DataFrame]) -> dict[str, Any]:
    data, catalog = log
    return benchmark().run_cold_start(data, catalog, seed=5, params=SMALL)


def test_the_table_has_every_ranker_with_figures_in_the_unit_interval(result: dict[str, Any]) -> None:
    module = benchmark()
    assert list(result["rows"]) == list(module.RANKERS)
    for row in result["rows"].values():
        assert set(row) == {"cold", "all"}
        for metrics in row.values():
            assert set(metrics) == {"ndcg", "recall", "hr"}
            assert all(0.0 <= value <= 1.0 for value in metrics.values())
    split = result["split"]
    assert split["held_out_items"] == 20 and split["items"] == 200
    assert split["evaluated_users"] > 0 and result["fit_seconds"] > 0
    # Ranking only the 20 held-out items is easier than ranking all 200.
    for row in result["rows"].values():
        assert row["cold"]["recall"] >= row["all"]["recall"]
    # The genres are the planted factors: the user's genre profile beats a random order.
    genre, random = result["rows"]["genre popularity (user)"]["cold"], result["rows"]["random"]["cold"]
    assert genre["ndcg"] > random["ndcg"]


def test_the_same_seed_gives_the_same_figures(
    log: tuple[Interactions, pd.DataFrame], result: dict[str, Any]
) -> None:
    data, catalog = log
    again = benchmark().run_cold_start(data, catalog, seed=5, params=SMALL)
    assert again["rows"] == result["rows"] and again["split"] == result["split"]


def test_held_out_items_are_a_seeded_tenth_of_the_items_with_interactions(
    log: tuple[Interactions, pd.DataFrame],
) -> None:
    data, _ = log
    module = benchmark()
    first, second = module.hold_out_items(data, 0.1, 5), module.hold_out_items(data, 0.1, 5)
    np.testing.assert_array_equal(first, second)
    assert len(first) == 20 and len(np.unique(first)) == 20
    assert not np.array_equal(first, module.hold_out_items(data, 0.1, 6))
