"""Loading interaction logs, items and users into the database: validated, idempotent, in bulk.

The names below load on first use (a module ``__getattr__``): the pipeline imports pandas,
pyarrow and rich, which a service worker that only validates single events does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.ingest.movielens import MOVIELENS_VARIANTS, fetch_movielens, ingest_movielens
    from recsys.ingest.pipeline import (
        ingest_folder,
        ingest_frame,
        ingest_interactions,
        ingest_items,
        ingest_sql,
        ingest_users,
    )
    from recsys.ingest.specs import CsvSpec, IngestReport, ItemSpec, UserSpec
    from recsys.ingest.stats import database_stats

#: Public name -> the module that defines it.
_HOMES = {
    "MOVIELENS_VARIANTS": "movielens",
    "fetch_movielens": "movielens",
    "ingest_movielens": "movielens",
    "ingest_folder": "pipeline",
    "ingest_frame": "pipeline",
    "ingest_interactions": "pipeline",
    "ingest_items": "pipeline",
    "ingest_sql": "pipeline",
    "ingest_users": "pipeline",
    "CsvSpec": "specs",
    "IngestReport": "specs",
    "ItemSpec": "specs",
    "UserSpec": "specs",
    "database_stats": "stats",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"recsys.ingest.{home}"), name)


__all__ = [
    "MOVIELENS_VARIANTS",
    "CsvSpec",
    "IngestReport",
    "ItemSpec",
    "UserSpec",
    "database_stats",
    "fetch_movielens",
    "ingest_folder",
    "ingest_frame",
    "ingest_interactions",
    "ingest_items",
    "ingest_movielens",
    "ingest_sql",
    "ingest_users",
]
