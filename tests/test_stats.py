"""`database_stats`: counts per kind, value ranges, density and the newest event."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine

from recsys.ingest import CsvSpec, database_stats, ingest_frame


def test_empty_database(engine: Engine) -> None:
    assert database_stats(engine) == {
        "users": 0,
        "items": 0,
        "interactions": 0,
        "interactions_by_kind": {},
        "value_range_by_kind": {},
        "distinct_pairs": 0,
        "density": 0.0,
        "newest_timestamp": None,
        "newest_time": None,
    }


def test_counts_ranges_density_and_newest(engine: Engine) -> None:
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "c"],
            "item_id": ["x", "x", "y", "x", "z"],
            "rating": [1.0, 2.0, 5.0, 3.5, 1.0],
            "timestamp": [10, 20, 30, 40, 1_700_000_000],
            "kind": ["rating", "rating", "rating", "rating", "view"],
        }
    )
    ingest_frame(engine, events, spec=CsvSpec(kind_col="kind"), source="test")
    stats = database_stats(engine)
    assert stats["users"] == 3
    assert stats["items"] == 3
    assert stats["interactions"] == 5
    assert stats["interactions_by_kind"] == {"rating": 4, "view": 1}
    assert stats["value_range_by_kind"] == {
        "rating": {"min": 1.0, "max": 5.0},
        "view": {"min": 1.0, "max": 1.0},
    }
    # (a,x) appears twice: 4 distinct pairs over 3 x 3 cells.
    assert stats["distinct_pairs"] == 4
    assert stats["density"] == 4 / 9
    assert stats["newest_timestamp"] == 1_700_000_000
    assert stats["newest_time"] == "2023-11-14T22:13:20+00:00"
