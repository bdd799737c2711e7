"""Bulk writes of validated batches, and the ingestion-run bookkeeping.

A batch of interactions is inserted first, with ``ON CONFLICT DO NOTHING``: on SQLite by
statements of many rows each straight into ``interactions`` (one ``executemany``), on PostgreSQL by
``COPY`` into a temporary staging table and one ``INSERT ... SELECT`` (tried without the conflict
clause first, in a savepoint, and repeated with it only if a stored key made it fail). The
conflict clause is what makes reloading idempotent. When every row was inserted (a first load)
nothing was stored with those keys and the batch is done; otherwise the batch is staged (if it is
not yet) and the stored events it met are read set-wise, to count conflicts and apply the
duplicate policy. Apart from SQLite's rows per statement, the statement count per batch is
constant, whatever the batch size.

``interactions`` has no foreign keys (a check per inserted row, which on PostgreSQL made the
insert 2-3 times slower). No interaction names a user or item that is gone all the same: a
batch reads or creates its ids in its own transaction, forgets ids cached from earlier batches
once an erasure is recorded, and keeps erasures out until it commits (:func:`_current_ids`).
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Connection, CursorResult, Engine, func, insert, select, text, update

from recsys.db.erasure import lock_out_erasures
from recsys.db.models import IngestionRun, Interaction, RejectedRow
from recsys.ingest.rules import printable_text
from recsys.ingest.validation import Checked, DuplicatePolicy

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

    A failed batch ends the run, so ids of a rolled-back batch never outlive it here; an erasure
    recorded since they were read clears them (:func:`_current_ids`).
    """

    users: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    erasures_seen: int = -1  # the newest deletion id when the ids above were read


@dataclass
class BatchCounts:
    read: int
    loaded: int
    duplicate: int
    rejected: int
    conflicting: int = 0


def _is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def stage(connection: Connection, name: str, columns: dict[str, str], frame: pd.DataFrame) -> None:
    """(Re)create the temporary table ``name`` holding ``frame``'s ``columns``.

    PostgreSQL gets the rows by COPY of CSV text written by pyarrow (in C++, far faster than
    ``DataFrame.to_csv``); SQLite by multi-row ``INSERT`` statements (:func:`_insert_rows`).
    """
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    definition = ", ".join(f"{column} {sql_type}" for column, sql_type in columns.items())
    connection.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} ({definition})")
    if frame.empty:
        return
    frame = frame[list(columns)]
    if _is_postgres(connection):
        _copy(connection, name, frame)
        return
    _insert_rows(connection, f"INSERT INTO {name}", ["?"] * len(columns), frame)


def _copy(connection: Connection, table: str, frame: pd.DataFrame) -> None:
    """COPY ``frame``'s rows into ``table`` (PostgreSQL), its columns by name."""
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor, cursor.copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(_csv_bytes(frame))


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error, raised as is or wrapped by SQLAlchemy."""
    return getattr(getattr(error, "orig", None) or error, "sqlstate", None)


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as headerless CSV for COPY: strings quoted (so '' stays an empty string), missing
    values as empty unquoted fields (NULL), numbers in their shortest exact form."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False))
    return sink.getvalue().to_pybytes()


#: Rows per ``INSERT`` statement on SQLite. sqlite3's ``executemany`` of a one-row statement runs
#: the statement once per row, opening the table's and every index's cursor each time; one
#: statement with a ``VALUES`` list of many rows opens them once. In isolation (1M rows of
#: interactions with the event key's index, batches of 100,000) that took the insert from 3.0-7.0 s
#: to 1.7-1.8 s; 500 and 8,000 rows per statement did about the same.
SQLITE_ROWS_PER_STATEMENT = 500


def _insert_rows(
    connection: Connection, head: str, values: list[str], frame: pd.DataFrame, tail: str = ""
) -> int:
    """Insert ``frame``'s rows on SQLite as ``head VALUES (values), (values), ... tail``, many rows per
    statement; returns how many rows the statements inserted.

    ``values`` holds one SQL expression per output column, ``?`` for each of ``frame``'s columns in
    order (others are literals). Rows are bound as Python scalars (sqlite3 cannot bind numpy's),
    laid out row after row; a statement binds at most SQLite's limit of parameters.
    """
    width = len(frame.columns)
    if not len(frame):
        return 0
    driver = connection.connection.driver_connection
    limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[union-attr]
    per_statement = max(1, min(SQLITE_ROWS_PER_STATEMENT, limit // max(width, 1)))
    flat: list[Any] = [None] * (len(frame) * width)
    for offset, column in enumerate(frame.columns):
        flat[offset::width] = _python_values(frame[column])
    row = f"({', '.join(values)})"

    def statement(rows: int) -> str:
        return f"{head} VALUES {', '.join([row] * rows)}{tail}"

    step = per_statement * width
    whole = len(flat) - len(flat) % step
    inserted = 0
    if whole:
        parameters = [tuple(flat[start : start + step]) for start in range(0, whole, step)]
        inserted += int(connection.exec_driver_sql(statement(per_statement), parameters).rowcount)
    if whole < len(flat):
        rest = tuple(flat[whole:])
        inserted += int(connection.exec_driver_sql(statement(len(rest) // width), rest).rowcount)
    return inserted


def _python_values(column: pd.Series) -> list[Any]:
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "iuf":
        return column.tolist()
    return column.astype(object).where(column.notna(), None).tolist()


def _json(expression: str, connection: Connection) -> str:
    # JSON columns are json on PostgreSQL and text on SQLite; staged JSON is text on both.
    return f"CAST({expression} AS JSON)" if _is_postgres(connection) else expression


def resolve_ids(
    connection: Connection, table: str, external_ids: pd.Series, known: dict[str, int]
) -> np.ndarray:
    """Internal ids of ``external_ids`` (in order), inserting unknown ones; ``known`` gains the new ones.

    The column is factorised once (in C), so only its distinct ids are looked up in Python.
    """
    codes, uniques = pd.factorize(external_ids)
    distinct = list(map(str, np.asarray(uniques, dtype=object)))  # not element by element from Arrow
    missing = [external for external in distinct if external not in known]
    if missing:
        staged = f"recsys_stage_{table}_ids"
        stage(
            connection, staged, {"external_id": "TEXT"}, pd.DataFrame({"external_id": missing}, dtype=object)
        )
        connection.exec_driver_sql(
            f"INSERT INTO {table} (external_id, attributes) "
            f"SELECT external_id, {_json(repr('{}'), connection)} FROM {staged} WHERE true "
            "ON CONFLICT (external_id) DO NOTHING"
        )
        rows = connection.exec_driver_sql(
            f"SELECT t.external_id, t.id FROM {table} t JOIN {staged} s ON t.external_id = s.external_id"
        ).all()
        connection.exec_driver_sql(f"DROP TABLE {staged}")
        known.update((str(external), int(internal)) for external, internal in rows)
    lookup = np.fromiter((known[external] for external in distinct), dtype=np.int64, count=len(distinct))
    return lookup[codes]


def _current_ids(connection: Connection, cache: IdCache) -> None:
    """Forget the cached ids if a user or item may have been erased since they were read.

    After this (in the batch's transaction) no erasure runs until the batch ends, so the ids the
    batch reads or creates stay valid until it commits: what foreign keys guaranteed before.
    """
    newest = lock_out_erasures(connection)
    if newest != cache.erasures_seen:
        cache.users.clear()
        cache.items.clear()
        cache.erasures_seen = newest


@dataclass
class Written:
    """What writing a batch of interactions did: rows inserted (a replaced value counts as
    inserted: it gets a new id, so the service's feedback overlay sees it), rows conflicting with
    a stored or earlier event, and the rows of ``good`` the duplicate policy rejected."""

    loaded: int = 0
    conflicting: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # position in good -> reason


KEY = ["user_id", "item_id", "kind", "ts"]


def _stored(column: str, kind: str | None, extra: str = "") -> str:
    """A scalar subquery: ``column`` of the event stored before this batch (id at most the
    parameter ``before``) with the key of the staged row ``s``.

    Written per staged row, the lookup probes the event-key index once per row whatever the
    table's size or statistics; as a join, PostgreSQL may plan it (with stale statistics, say
    before the first ANALYZE) as a scan of the whole table for every batch. A batch of one kind
    stages no kind column and binds the kind as the parameter ``kind`` instead.
    """
    kind_match = "i.kind = s.kind" if kind is None else "i.kind = :kind"
    return (
        f"(SELECT i.{column} FROM interactions i WHERE i.user_id = s.user_id AND i.item_id = s.item_id "
        f"AND {kind_match} AND i.ts = s.ts AND i.id <= :before{extra})"
    )


def write_interactions(
    connection: Connection, good: pd.DataFrame, cache: IdCache, policy: DuplicatePolicy = "update"
) -> Written:
    """Insert the batch's events; an event already stored with the same value is a duplicate.

    An event with the key (user, item, kind, timestamp) of a stored or earlier one but another
    value is a conflict, settled by ``policy``: ``update`` keeps the newest value, ``keep-first``
    the stored or earlier one, ``reject`` rejects the newcomer. Events whose ``event_id`` is
    already stored, or given earlier in the batch, are duplicates (a retried request) when they
    name the same user, item, kind and value, and rejected otherwise.
    """
    if good.empty:
        return Written()
    _current_ids(connection, cache)
    kinds = good["kind"]
    rows = pd.DataFrame(
        {
            "pos": np.arange(len(good), dtype=np.int64),
            "user_id": resolve_ids(connection, "users", good["user"], cache.users),
            "item_id": resolve_ids(connection, "items", good["item"], cache.items),
            "kind": kinds.to_numpy(dtype=object),
            "value": good["value"].to_numpy(dtype=np.float64),
            "ts": good["ts"].to_numpy(dtype=np.int64),
            "event_id": good.get("event_id"),
            "recommendation_id": good.get("recommendation_id"),
        }
    )
    rows, reused = _without_known_events(connection, rows)
    rows = rows.reset_index(drop=True)
    written = Written(rejected=reused)
    if rows.empty:
        return written
    first_kind = str(rows["kind"].iat[0])
    one_kind = bool((rows["kind"] == first_kind).all())
    key_columns = ["user_id", "item_id", "ts"] if one_kind else KEY
    params: dict[str, Any] = {"kind": first_kind} if one_kind else {}
    kind = first_kind if one_kind else None
    first = ~rows.duplicated(key_columns, keep="first")
    any_repeated = not bool(first.all())
    columns = dict(STAGE_COLUMNS)
    if one_kind:
        del columns["kind"]
    for optional in ("event_id", "recommendation_id"):  # file loads have neither: stage less
        if rows[optional].isna().all():
            del columns[optional]
    if any_repeated:
        # Only a batch repeating a key stages each key's first value and whether it repeats.
        repeated = rows.duplicated(key_columns, keep=False)
        values = rows.groupby(key_columns, sort=False)["value"]
        final = rows.loc[first].assign(first_value=rows["value"][first], repeated=repeated[first].astype(int))
        if policy == "update":
            final = final.assign(value=values.transform("last")[first])
        lookup = "s.first_value AS first_value, s.repeated AS repeated"
        lookup_filter = "stored <> first_value OR (repeated = 1 AND stored IS NOT NULL)"
    else:
        final = rows
        for extra in ("first_value", "repeated"):
            del columns[extra]
        lookup = "s.value AS value"
        lookup_filter = "stored <> value"
    params["before"] = _last_id(connection)
    inserted = _insert_new(connection, final, columns, kind)
    stored_rows: Sequence[Any] = []
    if inserted < len(final):
        # Some keys were stored already. Their stored values matter only where they differ from
        # a key's first row or the key repeats; elsewhere the stored event equals its one row (a
        # plain duplicate), so reloads fetch nothing.
        if not _is_postgres(connection):  # SQLite inserted without staging
            stage(connection, "recsys_stage_interactions", columns, final)
        stored_rows = _execute(
            connection,
            f"WITH probe AS MATERIALIZED (SELECT s.pos AS pos, {lookup}, {_stored('value', kind)} AS stored "
            f"FROM recsys_stage_interactions s) SELECT pos, stored FROM probe WHERE {lookup_filter}",
            params,
        ).all()
    stored_by_pos = pd.Series(
        np.array([row[1] for row in stored_rows], dtype=np.float64),
        index=np.array([row[0] for row in stored_rows], dtype=np.int64),
    )
    if any_repeated:
        stored = rows.groupby(key_columns, sort=False)["pos"].transform("first").map(stored_by_pos)
        # What each row meets: the stored value (first row of a key), then the value an update
        # left or the one kept (later rows).
        if policy == "update":
            reference = values.shift().where(~first, stored)
        else:
            reference = values.transform("first").where(stored.isna(), stored).where(~first, stored)
    else:
        stored = rows["pos"].map(stored_by_pos)
        reference = stored
    conflicts = (reference.notna() & (rows["value"] != reference)).to_numpy()
    written.conflicting = int(conflicts.sum())
    if policy == "reject":
        for pos, value, other, is_stored in zip(
            rows["pos"][conflicts],
            rows["value"][conflicts],
            reference[conflicts],
            stored.notna()[conflicts],
            strict=True,
        ):
            where = "stored" if is_stored else "given earlier in the same source"
            written.rejected[int(pos)] = _conflict_reason(value, other, where)
    # Update replaces stored values only where one differs from the batch's final value; the
    # stored values that can differ were all fetched above.
    final_values = final.set_index("pos")["value"]
    differs = bool((stored_by_pos != final_values.reindex(stored_by_pos.index)).any())
    written.loaded = inserted
    if policy == "update" and differs:
        written.loaded += _replace_stored(connection, staged=columns, kind=kind, params=params)
    connection.exec_driver_sql("DROP TABLE IF EXISTS recsys_stage_interactions")
    return written


STAGE_COLUMNS = {
    "pos": "BIGINT",
    **INTERACTION_COLUMNS,
    "first_value": "DOUBLE PRECISION",  # the value of the key's first row in the batch
    "repeated": "INTEGER",  # 1 when the key has more than one row in the batch
    "event_id": "TEXT",
    "recommendation_id": "TEXT",
}

#: SQLite's page cache (KiB) while a bulk load writes a batch: the interaction indexes of a large
#: table stay in memory instead of being read back from the file for every insert. The cache only
#: grows as pages are used.
SQLITE_BULK_CACHE_KIB = 512 * 1024

#: How large SQLite's write-ahead log may grow (in pages of 4 KiB) before a bulk load's commit copies
#: it into the database file (a checkpoint, with an fsync of both files). At SQLite's default of
#: 1000 pages every batch of a large load checkpointed at its commit; a checkpoint every 64 MiB or
#: so does the same copying with a tenth of the fsyncs. Durability is the WAL's either way: a batch
#: is atomic and stored once its commit returns.
SQLITE_BULK_WAL_PAGES = 16_384


def _execute(connection: Connection, sql: str, params: dict[str, Any]) -> CursorResult[Any]:
    return connection.execute(text(sql), params)


def _conflict_reason(value: float, other: float, where: str) -> str:
    return (
        f"value {value:g} differs from the value {other:g} {where} for the same user, item, kind and "
        "timestamp; rejected (duplicate policy 'reject')"
    )


#: What an event id names: a retry may differ only in its timestamp (a retried request without
#: one is stamped "now" again), anything else is another event.
_EVENT_IDENTITY = ["user_id", "item_id", "kind", "value"]


def _without_known_events(connection: Connection, rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, str]]:
    """Drop rows whose event id is repeated in the batch or already stored: retries of one event.
    A row whose event id names another event (another user, item, kind or value) is rejected,
    never dropped in silence: the client reused an id. Returns the rows kept and the rejections
    (position -> reason)."""
    ids = rows["event_id"]
    if ids.isna().all():
        return rows, {}
    wanted = [str(event) for event in pd.unique(ids.dropna())]
    stored_parts = []
    for start in range(0, len(wanted), 1000):
        part = wanted[start : start + 1000]
        query = select(
            Interaction.event_id,
            Interaction.user_id,
            Interaction.item_id,
            Interaction.kind,
            Interaction.value,
        ).where(Interaction.event_id.in_(part))
        stored_parts.append(
            pd.DataFrame(connection.execute(query).all(), columns=["event_id", *_EVENT_IDENTITY])
        )
    stored = pd.concat(stored_parts, ignore_index=True)
    # What each id names: the stored event, else the batch's first row with the id.
    named = pd.concat([stored, rows.loc[ids.notna(), ["event_id", *_EVENT_IDENTITY]]], ignore_index=True)
    named = named.drop_duplicates("event_id", keep="first").set_index("event_id")
    retried = ids.isin(stored["event_id"]) | (ids.notna() & ids.duplicated(keep="first"))
    has_id = ids.notna().to_numpy()
    other = np.zeros(len(rows), dtype=bool)
    if has_id.any():
        reference = named.reindex(ids[has_id].to_numpy())
        mine = rows.loc[has_id, _EVENT_IDENTITY].to_numpy(dtype=object)
        other[has_id] = (reference.to_numpy(dtype=object) != mine).any(axis=1)
    rejected = {
        int(pos): f"event_id {event!r} already names another event (another user, item, kind or value); "
        "send a new event_id for a new event"
        for pos, event in zip(rows["pos"][other], ids[other], strict=True)
    }
    return rows.loc[~(retried.to_numpy() | other)], rejected


def _last_id(connection: Connection) -> int:
    """The highest interaction id stored before this batch: the batch's own rows get higher ones."""
    return int(connection.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM interactions").scalar_one())


#: PostgreSQL's SQLSTATE for a unique violation: a stored key met by the plain insert.
UNIQUE_VIOLATION = "23505"

_EVENT_COLUMNS = "user_id, item_id, kind, value, ts, event_id, recommendation_id"


def _conflict_target(staged: dict[str, str]) -> str:
    # Without event ids the conflict target is the event key alone (the event-id index is not
    # consulted); with them, any unique key.
    return "" if "event_id" in staged else "(user_id, item_id, kind, ts) "


def _insert_new(connection: Connection, final: pd.DataFrame, staged: dict[str, str], kind: str | None) -> int:
    """Insert the batch's events whose keys (and event ids) are not stored; returns how many.

    SQLite: multi-row ``INSERT`` statements straight into ``interactions`` (a staging table would cost as
    much again). PostgreSQL: ``COPY`` into the staging table, then one ``INSERT ... SELECT``,
    without a conflict clause while no key is stored (see below).
    """
    target = _conflict_target(staged)
    # Columns a batch does not give (event and recommendation ids of a file) are left NULL.
    columns = ["user_id", "item_id", "kind", "value", "ts"]
    columns += [column for column in ("event_id", "recommendation_id") if column in staged]
    values = final.assign(kind=final["kind"] if kind is None else kind)[columns]
    if _is_postgres(connection):
        # COPY straight into interactions first: a first load's batch meets no stored key and is
        # done in one statement, without a staging table (COPY into it and INSERT ... SELECT
        # from it cost as much again). COPY is all or nothing: any stored key (or event id) makes
        # it fail as a whole, which the savepoint undoes, and the batch is staged and inserted
        # again skipping stored keys.
        try:
            with connection.begin_nested():
                _copy(connection, "interactions", values)
                return len(values)
        except Exception as error:  # psycopg's own error: COPY runs on the driver's cursor
            if _sqlstate(error) != UNIQUE_VIOLATION:
                raise
        stage(connection, "recsys_stage_interactions", staged, final)
        event = "s.event_id" if "event_id" in staged else "NULL"
        recommendation = "s.recommendation_id" if "recommendation_id" in staged else "NULL"
        kind_value = "s.kind" if kind is None else ":kind"
        result = _execute(
            connection,
            f"INSERT INTO interactions ({_EVENT_COLUMNS}) "
            f"SELECT s.user_id, s.item_id, {kind_value}, s.value, s.ts, {event}, {recommendation} "
            f"FROM recsys_stage_interactions s ON CONFLICT {target}DO NOTHING",
            {"kind": kind} if kind is not None else {},
        )
        return int(result.rowcount)
    # A batch of one kind names it once, as a literal of the statement: one text value less to
    # bind per row.
    placeholders = ["?"] * len(columns)
    if kind is not None:
        placeholders[columns.index("kind")] = _sqlite_literal(kind)
        values = values.drop(columns="kind")
    return _insert_rows(
        connection,
        f"INSERT INTO interactions ({', '.join(columns)})",
        placeholders,
        values,
        f" ON CONFLICT {target}DO NOTHING",
    )


def _sqlite_literal(text: str) -> str:
    """``text`` as a SQLite string literal (quotes doubled; validated kinds hold no NUL)."""
    return "'" + text.replace("'", "''") + "'"


def _replace_stored(
    connection: Connection, staged: dict[str, str], kind: str | None, params: dict[str, Any]
) -> int:
    """Replace the stored events whose value differs from the staged one (policy ``update``):
    each is deleted and inserted again with the new value (keeping its event and recommendation
    ids), so it gets a new, higher id and the service's feedback overlay sees it. Returns how many."""
    event = "s.event_id" if "event_id" in staged else "NULL"
    recommendation = "s.recommendation_id" if "recommendation_id" in staged else "NULL"
    kind_value = "s.kind" if kind is None else ":kind"
    connection.exec_driver_sql("DROP TABLE IF EXISTS recsys_stage_replaced")
    _execute(
        connection,
        "CREATE TEMPORARY TABLE recsys_stage_replaced AS "
        "WITH probe AS MATERIALIZED (SELECT s.pos AS pos, "
        f"{_stored('id', kind, ' AND i.value <> s.value')} AS id FROM recsys_stage_interactions s) "
        "SELECT p.id AS id, p.pos AS pos, "
        "(SELECT i.event_id FROM interactions i WHERE i.id = p.id) AS event_id, "
        "(SELECT i.recommendation_id FROM interactions i WHERE i.id = p.id) AS recommendation_id "
        "FROM probe p WHERE p.id IS NOT NULL",
        params,
    )
    connection.exec_driver_sql("DELETE FROM interactions WHERE id IN (SELECT id FROM recsys_stage_replaced)")
    result = _execute(
        connection,
        f"INSERT INTO interactions ({_EVENT_COLUMNS}) "
        f"SELECT s.user_id, s.item_id, {kind_value}, s.value, s.ts, COALESCE({event}, r.event_id), "
        f"COALESCE({recommendation}, r.recommendation_id) "
        "FROM recsys_stage_interactions s JOIN recsys_stage_replaced r ON r.pos = s.pos "
        f"WHERE true ON CONFLICT {_conflict_target(staged)}DO NOTHING",
        {key: value for key, value in params.items() if key != "before"},
    )
    connection.exec_driver_sql("DROP TABLE recsys_stage_replaced")
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
    # Text columns cannot hold NUL (PostgreSQL) or lone surrogates (UTF-8): store them escaped.
    for column in ("raw", "reason"):
        text = records[column].astype(object)
        unsafe = text.map(_unstorable)
        if unsafe.any():
            records[column] = text.where(~unsafe, text[unsafe].map(lambda value: printable_text(str(value))))
    connection.execute(insert(RejectedRow), cast(list[dict[str, Any]], records.to_dict("records")))


def _unstorable(value: object) -> bool:
    text = str(value)
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def write_batch(
    connection: Connection,
    run_id: int,
    target: str,
    checked: Checked,
    cache: IdCache,
    policy: DuplicatePolicy = "update",
) -> BatchCounts:
    """Everything one batch writes, in the caller's transaction: rows, rejections and run counters.

    Rows the duplicate policy rejects join ``checked.rejected`` (so the caller reports them too).
    """
    conflicting = 0
    if not _is_postgres(connection):
        connection.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_BULK_CACHE_KIB}")
        connection.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {SQLITE_BULK_WAL_PAGES}")
    if target == "interactions":
        written = write_interactions(connection, checked.good, cache, policy)
        loaded, conflicting = written.loaded, written.conflicting
        if written.rejected:
            checked.reject_good(written.rejected)
    else:
        loaded = write_entities(connection, target, checked.good)
    counts = BatchCounts(
        read=len(checked.good) + len(checked.rejected),
        loaded=loaded,
        duplicate=len(checked.good) - loaded,
        rejected=len(checked.rejected),
        conflicting=conflicting,
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
            rows_conflicting=IngestionRun.rows_conflicting + counts.conflicting,
        )
    )
    return counts


def process_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def mark_interrupted(engine: Engine, stale_after: float) -> int:
    """Mark runs still 'running' whose process is gone as 'interrupted'; returns how many.

    A run of this host is interrupted when its process no longer exists; a run of another host
    (or without an owner) when it started more than ``stale_after`` seconds ago.
    """
    with engine.begin() as connection:
        running = connection.execute(
            select(IngestionRun.id, IngestionRun.owner, IngestionRun.started_at).where(
                IngestionRun.status == "running"
            )
        ).all()
        host, now = socket.gethostname(), datetime.now(UTC)
        gone = []
        for run_id, owner, started_at in running:
            owner_host, _, pid = (owner or "").partition(":")
            if owner_host == host and pid.isdigit():
                dead = not psutil.pid_exists(int(pid))
            else:
                started = started_at if started_at.tzinfo else started_at.replace(tzinfo=UTC)
                dead = (now - started).total_seconds() > stale_after
            if dead:
                gone.append(run_id)
        if gone:
            connection.execute(
                update(IngestionRun)
                .where(IngestionRun.id.in_(gone), IngestionRun.status == "running")
                .values(
                    status="interrupted",
                    finished_at=func.now(),
                    error="the process running it stopped before it finished (killed or crashed); "
                    "its committed batches are stored, re-run the source to load the rest",
                )
            )
    return len(gone)


def start_run(engine: Engine, source: str, target: str, policy: DuplicatePolicy | None = None) -> int:
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
                rows_conflicting=0,
                duplicate_policy=policy,
                owner=process_owner(),
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


#: A load storing at least this many rows refreshes PostgreSQL's planner statistics afterwards.
ANALYZE_AFTER_ROWS = 100_000


def refresh_statistics(engine: Engine, target: str, rows_loaded: int) -> None:
    """``ANALYZE`` the loaded table (and users and items) on PostgreSQL after a big load, so later
    queries (training reads, the service) are planned for the table's real size. It samples a
    fixed number of rows, so it takes about the same time at any size. SQLite plans by its
    indexes and needs nothing."""
    if rows_loaded < ANALYZE_AFTER_ROWS or engine.dialect.name != "postgresql":
        return
    tables = "interactions, users, items" if target == "interactions" else target
    with engine.begin() as connection:
        connection.exec_driver_sql(f"ANALYZE {tables}")


def run_status(engine: Engine, run_id: int) -> dict[str, object]:
    """The stored row of one run, as a dict (for tests and the CLI)."""
    with engine.connect() as connection:
        row = (
            connection.execute(text("SELECT * FROM ingestion_runs WHERE id = :id"), {"id": run_id})
            .mappings()
            .one()
        )
        return dict(row)
