"""Loading interaction logs, items and users into the database: validated, idempotent, in bulk."""

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
