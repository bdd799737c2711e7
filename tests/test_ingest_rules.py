"""Input that broke ingestion before: each case reproduces a reported failure.

Dates outside pandas' nanosecond range, quoted line breaks (within and across batches), bytes
that are not UTF-8, a binary header, a repeated key with another value, a killed run, and a
database that goes away mid-run. Batch boundaries never change what is stored.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Connection, Engine, event, insert, text
from sqlalchemy.exc import OperationalError

from recsys.db.models import IngestionRun
from recsys.errors import DatabaseUnavailableError, DataError
from recsys.ingest import CsvSpec, ingest_interactions
from recsys.ingest import loader as loader_module
from recsys.ingest.loader import run_status
from tests.test_ingest_csv import HEADER, count, events, write


def rejected_rows(engine: Engine, run_id: int) -> list[tuple[int, str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT row_number, raw, reason FROM rejected_rows WHERE run_id = :r ORDER BY row_number"),
            {"r": run_id},
        ).all()
    return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]


def test_out_of_range_dates_are_rejected_alone(engine: Engine, tmp_path: Path) -> None:
    body = HEADER + "u1,i1,4,2024-01-01\nu2,i2,3,9999-12-31\nu3,i3,5,0001-01-01\nu4,i4,5,1700000000\n"
    report = ingest_interactions(engine, write(tmp_path / "dates.csv", body))
    assert (report.rows_loaded, report.rows_rejected) == (2, 2)
    rejected = rejected_rows(engine, report.run_id)
    assert [(line, raw) for line, raw, _ in rejected] == [
        (3, "u2,i2,3,9999-12-31"),
        (4, "u3,i3,5,0001-01-01"),
    ]
    assert "after the latest accepted time" in rejected[0][2]
    assert "before the earliest accepted time 1970-01-01T00:00:00Z" in rejected[1][2]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 100])
def test_quoted_line_breaks_stay_in_one_record(engine: Engine, tmp_path: Path, batch_size: int) -> None:
    """A quoted field spanning lines is one record, in a batch or across a batch boundary: it is
    judged whole (a line break is a control character, so such an id is rejected) and every
    later row keeps its own line number and text."""
    body = HEADER + 'u1,i1,4,1\n"u\n2",i2,3,2\nu3,i3,x,3\n"u4","i\n\n4",5,4\nu5,"i,5",5,5\n'
    report = ingest_interactions(engine, write(tmp_path / "nl.csv", body), batch_size=batch_size)
    assert (report.rows_read, report.rows_loaded, report.rows_rejected) == (5, 2, 3)
    assert rejected_rows(engine, report.run_id) == [
        (3, '"u\n2",i2,3,2', "user id 'u\\n2' holds a control character or invalid Unicode"),
        (5, "u3,i3,x,3", "non-numeric value 'x' (column 'rating')"),
        (6, '"u4","i\n\n4",5,4', "item id 'i\\n\\n4' holds a control character or invalid Unicode"),
    ]
    assert [(user, item) for user, item, *_ in events(engine)] == [("u1", "i1"), ("u5", "i,5")]


def test_an_unclosed_quote_loses_only_its_line(engine: Engine, tmp_path: Path) -> None:
    body = HEADER + 'u1,i1,4,1\n"u2,i2,3,2\nu3,i3,5,3\n'
    report = ingest_interactions(engine, write(tmp_path / "q.csv", body), batch_size=2)
    assert rejected_rows(engine, report.run_id) == [
        (3, '"u2,i2,3,2', "unclosed quote: no closing quote within 100 lines")
    ]
    assert [user for user, *_ in events(engine)] == ["u1", "u3"]


def test_a_byte_that_is_not_utf8_rejects_its_row_only(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(HEADER.encode() + b"u1,i1,4,1\nu\xff2,i2,3,2\nu3,i3,5,3\n")
    report = ingest_interactions(engine, path)
    assert rejected_rows(engine, report.run_id) == [
        (3, "u\\xff2,i2,3,2", "not utf-8 text (byte 0xff at position 1)")
    ]
    assert [user for user, *_ in events(engine)] == ["u1", "u3"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + "caf\xe9,i1,4,1\n".encode("latin-1"))
    ingest_interactions(engine, latin, spec=CsvSpec(encoding="latin-1"))
    assert "café" in [user for user, *_ in events(engine)]


def test_a_binary_header_is_refused_in_one_line(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00u,s\n1,2\n")
    with pytest.raises(DataError, match=r"line 1 \(the header\) is not utf-8 text \(byte 0xff"):
        ingest_interactions(engine, path)
    path.write_bytes(b"user_id\x00,item_id,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(DataError, match="holds control characters"):
        ingest_interactions(engine, path)


def test_ids_are_normalised_and_control_characters_rejected(engine: Engine, tmp_path: Path) -> None:
    body = (
        HEADER + "cafe\u0301,i1,4,1\n café ,i2,4,1\nu\x00x,i3,4,1\nu\x07,i4,4,1\n" + "x" * 256 + ",i5,4,1\n"
    )
    report = ingest_interactions(engine, write(tmp_path / "ids.csv", body))
    assert (report.rows_loaded, report.rows_rejected) == (2, 3)
    reasons = [reason for _, _, reason in rejected_rows(engine, report.run_id)]
    assert reasons[0] == "user id 'u\\x00x' holds a control character or invalid Unicode"
    assert reasons[2] == "user id longer than 255 characters"
    assert count(engine, "users") == 1  # NFC and trimming made the two spellings one user


BATCH_FILE = HEADER + "".join(
    [
        "a,x,1,5\n",
        '"b\nb",x,2,5\n',
        "a,x,1,5\n",  # identical repeat: a duplicate
        "a,x,3,5\n",  # same key, another value: a conflict
        "bad,x,-1,5\n",
        "c,y,2,9999-12-31\n",
        "c,y,2,6\n",
        '"d",x,4,7\n',
        "a,x,4,5\n",  # another conflict
        "e,z,1,8\n",
    ]
)


@pytest.mark.parametrize("policy", ["update", "keep-first", "reject"])
def test_batch_boundaries_never_change_the_result(engine: Engine, tmp_path: Path, policy: str) -> None:
    path = write(tmp_path / "log.csv", BATCH_FILE)
    tables = []
    for batch_size in (1, 2, 7, None):
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM interactions"))
        report = ingest_interactions(engine, path, batch_size=batch_size, duplicate_policy=policy)  # type: ignore[arg-type]
        tables.append((events(engine), report.rows_read, report.rows_rejected))
    assert all(table == tables[0] for table in tables[1:]), tables
    values = {(user, item): value for user, item, _, value, _ in tables[0][0]}
    assert values[("a", "x")] == {"update": 4.0, "keep-first": 1.0, "reject": 1.0}[policy]


def test_a_postgresql_reload_falls_back_to_skipping_stored_keys(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first load's batch is copied straight into interactions; a batch meeting stored keys has
    that COPY undone and is inserted again skipping them, storing nothing twice and counting as
    before."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the COPY tried first is PostgreSQL's")
    inserts: list[str] = []
    copy = loader_module._copy

    def record_copy(connection: Connection, table: str, frame: pd.DataFrame) -> None:
        if table == "interactions":
            inserts.append("copy")
        copy(connection, table, frame)

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("INSERT INTO interactions"):
            inserts.append("skipping stored" if "ON CONFLICT" in statement else "plain")

    monkeypatch.setattr(loader_module, "_copy", record_copy)
    event.listen(engine, "before_cursor_execute", record)
    try:
        first = ingest_interactions(engine, write(tmp_path / "one.csv", HEADER + "a,x,1,5\nb,x,2,5\n"))
        assert (first.rows_loaded, first.rows_duplicate, first.rows_conflicting) == (2, 0, 0)
        assert inserts == ["copy"]
        inserts.clear()
        # One stored duplicate, one stored key with another value, one new event.
        path = write(tmp_path / "two.csv", HEADER + "a,x,1,5\nb,x,3,5\nc,x,4,5\n")
        second = ingest_interactions(engine, path, duplicate_policy="keep-first")
        assert inserts == ["copy", "skipping stored"]
        counts = (second.rows_read, second.rows_loaded, second.rows_duplicate, second.rows_conflicting)
        assert counts == (3, 1, 2, 1)
        assert run_status(engine, second.run_id)["rows_conflicting"] == 1
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert events(engine) == [
        ("a", "x", "rating", 1.0, 5),
        ("b", "x", "rating", 2.0, 5),
        ("c", "x", "rating", 4.0, 5),
    ]


def test_a_conflict_is_reported_never_dropped_in_silence(engine: Engine, tmp_path: Path) -> None:
    ingest_interactions(engine, write(tmp_path / "one.csv", HEADER + "a,x,1,5\n"))
    path = write(tmp_path / "two.csv", HEADER + "a,x,2,5\na,x,1,5\n")
    kept = ingest_interactions(engine, path, duplicate_policy="keep-first")
    assert (kept.rows_loaded, kept.rows_duplicate, kept.rows_conflicting) == (0, 2, 1)
    assert "1 conflicting" in kept.summary() and "kept the first value" in kept.summary()
    rejected = ingest_interactions(engine, path, duplicate_policy="reject")
    assert rejected.rows_rejected == 1 and "differs from the value 1 stored" in rejected.first_reasons[0]
    updated = ingest_interactions(engine, path, duplicate_policy="update")
    # Update: each row meets the value the row before left (1 -> 2 -> 1); the last row wins.
    assert updated.rows_conflicting == 2 and events(engine)[0][3] == 1.0
    assert run_status(engine, updated.run_id)["rows_conflicting"] == 2
    with pytest.raises(DataError, match="duplicate policy 'reject'"):
        ingest_interactions(
            engine,
            write(tmp_path / "three.csv", HEADER + "a,x,7,5\n"),
            strict=True,
            duplicate_policy="reject",
        )


def test_a_killed_run_is_marked_interrupted_by_the_next(engine: Engine, tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with engine.begin() as connection:
        connection.execute(
            insert(IngestionRun).values(
                source="killed.csv",
                target="interactions",
                status="running",
                rows_read=0,
                rows_loaded=0,
                rows_duplicate=0,
                rows_rejected=0,
                owner=f"{socket.gethostname()}:{gone.pid}",
            )
        )
        connection.execute(
            insert(IngestionRun).values(
                source="alive.csv",
                target="interactions",
                status="running",
                rows_read=0,
                rows_loaded=0,
                rows_duplicate=0,
                rows_rejected=0,
                owner=f"{socket.gethostname()}:{os.getpid()}",
            )
        )
    ingest_interactions(engine, write(tmp_path / "next.csv", HEADER + "a,x,1,5\n"))
    assert run_status(engine, 1)["status"] == "interrupted"
    assert "re-run the source" in str(run_status(engine, 1)["error"])
    assert run_status(engine, 2)["status"] == "running"  # its process is alive


def test_a_database_failure_mid_run_is_one_line(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = loader_module.write_batch
    calls = {"n": 0}

    def crash(connection, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            if connection.dialect.name == "postgresql":  # the server really ends the session
                connection.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
            raise OperationalError(
                "INSERT ...", {}, Exception("server closed the connection unexpectedly\nDETAIL")
            )
        return real(connection, *args, **kwargs)

    monkeypatch.setattr(loader_module, "write_batch", crash)
    path = write(tmp_path / "log.csv", HEADER + "".join(f"u{n},i{n},1,{n + 1}\n" for n in range(4)))
    with pytest.raises(DatabaseUnavailableError) as error:
        ingest_interactions(engine, path, batch_size=2)
    message = str(error.value)
    assert "\n" not in message
    assert "terminating connection" in message or "server closed the connection unexpectedly" in message
    assert "run the same command again" in message and error.value.__cause__ is None
    assert count(engine, "interactions") == 2
    assert run_status(engine, 1)["status"] == "failed"


def test_parquet_booleans_and_huge_values(engine: Engine, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "item_id": ["x", "y", "z"],
            "rating": [True, False, True],
            "timestamp": [1, 2, 3],
        }
    )
    path = tmp_path / "log.parquet"
    frame.to_parquet(path)
    report = ingest_interactions(engine, path)
    assert (
        report.rows_rejected == 3
        and report.first_reasons[0] == "row 1: non-numeric value 'True' (column 'rating')"
    )


def test_a_bare_carriage_return_rejects_its_line_without_shifting_the_others(
    engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "cr.csv"
    path.write_bytes(HEADER.encode() + b"a,b\rc,d,1,2\nu1,i1,4,5\r\nu2,i2,4,6\n")
    report = ingest_interactions(engine, path)
    assert [(line, reason.split(" (")[0]) for line, _, reason in rejected_rows(engine, report.run_id)] == [
        (2, "carriage return inside a line")
    ]
    assert [user for user, *_ in events(engine)] == ["u1", "u2"]
