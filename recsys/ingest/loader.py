"""Bulk writes of validated batches, and the ingestion-run bookkeeping.

Every write goes through a temporary staging table: rows reach it by COPY on PostgreSQL and by
one executemany on SQLite, then one ``INSERT ... SELECT ... ON CONFLICT`` moves them into the
real table. The conflict clause is what makes reloading idempotent; doing it set-wise keeps the
statement count per batch constant, whatever the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, func, insert, text, update

from recsys.db.models import IngestionRun, RejectedRow
from recsys.ingest.validation import Checked

INTERACTION_COLUMNS = {
    "user_id": "INTEGER",
    "item_id": "INTEGER",
    "kind": "TEXT",
    "value": "DOUBLE PRECISION",
    "ts": "BIGINT",
}
ENTITY_COLUMNS = {"external_id": "TEXT", "title": "TEXT", "attributes": "TEXT"}


@dataclass
class IdCache:
    """External -> internal ids already resolved in this run, so each id is looked up once.

    A failed batch ends the run, so ids of a rolled-back batch never outlive it here.
    """

    users: pd.Series = field(default_factory=lambda: pd.Series(dtype="int64"))
    items: pd.Series = field(default_factory=lambda: pd.Series(dtype="int64"))


@dataclass
class BatchCounts:
    read: int
    loaded: int
    duplicate: int
    rejected: int


def _is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def stage(connection: Connection, name: str, columns: dict[str, str], frame: pd.DataFrame) -> None:
    """(Re)create the temporary table ``name`` holding ``frame``'s ``columns``."""
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    definition = ", ".join(f"{column} {sql_type}" for column, sql_type in columns.items())
    connection.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} ({definition})")
    if frame.empty:
        return
    frame = frame[list(columns)]
    if _is_postgres(connection):
        payload = frame.to_csv(index=False, header=False)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(payload)
        return
    placeholders = ", ".join("?" for _ in columns)
    connection.exec_driver_sql(f"INSERT INTO {name} VALUES ({placeholders})", _tuples(frame))


def _tuples(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Rows as tuples of Python scalars (sqlite3 cannot bind numpy scalars), built column-wise."""
    return list(zip(*(frame[column].tolist() for column in frame.columns), strict=True))


def _json(expression: str, connection: Connection) -> str:
    # JSON columns are json on PostgreSQL and text on SQLite; staged JSON is text on both.
    return f"CAST({expression} AS JSON)" if _is_postgres(connection) else expression


def resolve_ids(connection: Connection, table: str, external_ids: pd.Series, known: pd.Series) -> pd.Series:
    """Internal ids for ``external_ids``, inserting unknown ones; returns ``known`` plus the new ones."""
    wanted = pd.Index(pd.unique(external_ids.to_numpy(dtype=object)))
    missing = wanted[~wanted.isin(known.index)]
    if len(missing) == 0:
        return known
    staged = f"recsys_stage_{table}_ids"
    stage(connection, staged, {"external_id": "TEXT"}, pd.DataFrame({"external_id": missing.to_numpy()}))
    connection.exec_driver_sql(
        f"INSERT INTO {table} (external_id, attributes) "
        f"SELECT external_id, {_json(repr('{}'), connection)} FROM {staged} WHERE true "
        "ON CONFLICT (external_id) DO NOTHING"
    )
    rows = connection.exec_driver_sql(
        f"SELECT t.external_id, t.id FROM {table} t JOIN {staged} s ON t.external_id = s.external_id"
    ).all()
    connection.exec_driver_sql(f"DROP TABLE {staged}")
    found = pd.Series([row[1] for row in rows], index=[row[0] for row in rows], dtype="int64")
    return pd.concat([known, found]) if len(known) else found


def write_interactions(connection: Connection, good: pd.DataFrame, cache: IdCache) -> int:
    """Insert the batch's events, skipping ones already stored; returns how many were new."""
    if good.empty:
        return 0
    cache.users = resolve_ids(connection, "users", good["user"], cache.users)
    cache.items = resolve_ids(connection, "items", good["item"], cache.items)
    rows = pd.DataFrame(
        {
            "user_id": good["user"].map(cache.users).to_numpy(dtype=np.int64),
            "item_id": good["item"].map(cache.items).to_numpy(dtype=np.int64),
            "kind": good["kind"],
            "value": good["value"],
            "ts": good["ts"],
        }
    )
    stage(connection, "recsys_stage_interactions", INTERACTION_COLUMNS, rows)
    # One set-wise statement on both databases; on SQLite a direct executemany into the table
    # measured no faster than this, so both share the staging path.
    result = connection.exec_driver_sql(
        "INSERT INTO interactions (user_id, item_id, kind, value, ts) "
        "SELECT user_id, item_id, kind, value, ts FROM recsys_stage_interactions WHERE true "
        "ON CONFLICT (user_id, item_id, kind, ts) DO NOTHING"
    )
    connection.exec_driver_sql("DROP TABLE recsys_stage_interactions")
    return int(result.rowcount)


def write_entities(connection: Connection, table: str, good: pd.DataFrame) -> int:
    """Upsert users or items by external id; returns how many rows were inserted or changed.

    An id seen twice in one batch keeps its last row (a file's later rows win, as across batches).
    """
    if good.empty:
        return 0
    rows = good.drop_duplicates("external_id", keep="last")
    if table == "users":
        rows = rows.assign(title=None)
    stage(connection, "recsys_stage_entities", ENTITY_COLUMNS, rows)
    distinct = "IS DISTINCT FROM" if _is_postgres(connection) else "IS NOT"
    set_title = "title = excluded.title, " if table == "items" else ""
    changed_title = f"{table}.title {distinct} excluded.title OR " if table == "items" else ""
    result = connection.exec_driver_sql(
        f"INSERT INTO {table} (external_id, {'title, ' if table == 'items' else ''}attributes) "
        f"SELECT external_id, {'title, ' if table == 'items' else ''}{_json('attributes', connection)} "
        "FROM recsys_stage_entities WHERE true "
        f"ON CONFLICT (external_id) DO UPDATE SET {set_title}attributes = excluded.attributes "
        # Only rows that change count as loaded, so a reload reports duplicates, not updates.
        f"WHERE {changed_title}CAST({table}.attributes AS TEXT) <> CAST(excluded.attributes AS TEXT)"
    )
    connection.exec_driver_sql("DROP TABLE recsys_stage_entities")
    return int(result.rowcount)


def write_rejected(connection: Connection, run_id: int, rejected: pd.DataFrame) -> None:
    if rejected.empty:
        return
    records = rejected.assign(run_id=run_id)[["run_id", "row_number", "raw", "reason"]]
    connection.execute(insert(RejectedRow), cast(list[dict[str, Any]], records.to_dict("records")))


def write_batch(
    connection: Connection, run_id: int, target: str, checked: Checked, cache: IdCache
) -> BatchCounts:
    """Everything one batch writes, in the caller's transaction: rows, rejections and run counters."""
    if target == "interactions":
        loaded = write_interactions(connection, checked.good, cache)
    else:
        loaded = write_entities(connection, target, checked.good)
    counts = BatchCounts(
        read=len(checked.good) + len(checked.rejected),
        loaded=loaded,
        duplicate=len(checked.good) - loaded,
        rejected=len(checked.rejected),
    )
    write_rejected(connection, run_id, checked.rejected)
    connection.execute(
        update(IngestionRun)
        .where(IngestionRun.id == run_id)
        .values(
            rows_read=IngestionRun.rows_read + counts.read,
            rows_loaded=IngestionRun.rows_loaded + counts.loaded,
            rows_duplicate=IngestionRun.rows_duplicate + counts.duplicate,
            rows_rejected=IngestionRun.rows_rejected + counts.rejected,
        )
    )
    return counts


def start_run(engine: Engine, source: str, target: str) -> int:
    with engine.begin() as connection:
        result = connection.execute(
            insert(IngestionRun)
            .values(
                source=source,
                target=target,
                status="running",
                rows_read=0,
                rows_loaded=0,
                rows_duplicate=0,
                rows_rejected=0,
            )
            .returning(IngestionRun.id)
        )
        return int(result.scalar_one())


def finish_run(
    engine: Engine, run_id: int, status: str, error: str | None = None, rejected: pd.DataFrame | None = None
) -> None:
    """Close a run as completed or failed, recording the error (and a strict run's offending row)."""
    with engine.begin() as connection:
        extra = 0
        if rejected is not None:
            write_rejected(connection, run_id, rejected)
            extra = len(rejected)
        connection.execute(
            update(IngestionRun)
            .where(IngestionRun.id == run_id)
            .values(
                status=status,
                error=error,
                finished_at=func.now(),
                rows_read=IngestionRun.rows_read + extra,
                rows_rejected=IngestionRun.rows_rejected + extra,
            )
        )


def run_status(engine: Engine, run_id: int) -> dict[str, object]:
    """The stored row of one run, as a dict (for tests and the CLI)."""
    with engine.connect() as connection:
        row = (
            connection.execute(text("SELECT * FROM ingestion_runs WHERE id = :id"), {"id": run_id})
            .mappings()
            .one()
        )
        return dict(row)
