"""Interaction logs on SQLite and PostgreSQL: rejection reasons, timestamps, formats, idempotency."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, text

from recsys.errors import DataError
from recsys.ingest import CsvSpec, ingest_frame, ingest_interactions, loader
from recsys.ingest.loader import run_status

HEADER = "user_id,item_id,rating,timestamp\n"
# (line, text, expected reason -- or its start when it names the clock -- or None for a good row);
# the header is line 1.
CASES = [
    (2, "u1,i1,4.5,1700000000", None),
    (3, ",i2,3,1700000000", "missing user id (column 'user_id')"),
    (4, "u2,,3,1700000000", "missing item id (column 'item_id')"),
    (5, "u2,i2,abc,1700000000", "non-numeric value 'abc' (column 'rating')"),
    (6, "u2,i3,,1700000000", "missing value (column 'rating')"),
    (7, "u2,i4,inf,1700000000", "non-finite value 'inf' (column 'rating')"),
    (8, "u2,i5,7,1700000000", "value '7' above the maximum 5"),
    (9, "u2,i6,0.2,1700000000", "value '0.2' below the minimum 0.5"),
    (
        10,
        "u3,i1,4,yesterday",
        "unparsable timestamp 'yesterday' (column 'timestamp'; expected epoch seconds or ISO 8601)",
    ),
    (11, "u3,i2,4,", "missing timestamp (column 'timestamp')"),
    (12, "u3,i3,4,1700000000000", "timestamp '1700000000000' after the latest accepted time "),
    (13, "u3,i4,4", "wrong number of fields: expected 4, found 3"),
    (14, "u3,i5,4,1700000000,extra", "wrong number of fields: expected 4, found 5"),
    (15, "u3,i6,2,2023-11-14T22:13:20Z", None),
    (16, "", None),  # a blank line is skipped, not counted
    (17, "u4,i1,1,1700000000", None),
]
GOOD_ROWS = 3
BAD_ROWS = sum(1 for _, _, reason in CASES if reason)
SCALE = CsvSpec(min_value=0.5, max_value=5)


def write(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def events(engine: Engine) -> list[tuple[str, str, str, float, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT u.external_id, i.external_id, e.kind, e.value, e.ts FROM interactions e "
                "JOIN users u ON u.id = e.user_id JOIN items i ON i.id = e.item_id ORDER BY 1, 2, 3, 5"
            )
        ).all()
    return [(r[0], r[1], r[2], float(r[3]), int(r[4])) for r in rows]


def test_every_bad_row_is_rejected_with_its_line_and_reason(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADER + "\n".join(line for _, line, _ in CASES) + "\n")
    report = ingest_interactions(engine, path, spec=SCALE)

    assert (report.rows_read, report.rows_loaded, report.rows_rejected) == (GOOD_ROWS + BAD_ROWS, 3, BAD_ROWS)
    assert report.first_reasons[0] == "line 3: missing user id (column 'user_id')"
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT row_number, raw, reason FROM rejected_rows WHERE run_id = :r ORDER BY row_number"),
            {"r": report.run_id},
        ).all()
    expected = [(n, line, reason) for n, line, reason in CASES if reason]
    assert [(row[0], row[1]) for row in stored] == [(n, line) for n, line, _ in expected]
    for row, (_, _, reason) in zip(stored, expected, strict=True):
        assert row[2] == reason or (reason.endswith(" ") and row[2].startswith(reason)), (row[2], reason)
    assert events(engine) == [
        ("u1", "i1", "rating", 4.5, 1_700_000_000),
        ("u3", "i6", "rating", 2.0, 1_700_000_000),
        ("u4", "i1", "rating", 1.0, 1_700_000_000),
    ]
    # Only ids of good rows exist: rejected rows create no users or items.
    assert (count(engine, "users"), count(engine, "items")) == (3, 2)
    run = run_status(engine, report.run_id)
    assert (run["status"], run["rows_loaded"], run["rows_rejected"]) == ("completed", 3, BAD_ROWS)


def test_default_rules_accept_finite_values_from_0_to_a_million(engine: Engine, tmp_path: Path) -> None:
    body = "a,w,0,10\na,x,-3.5,10\na,y,1e6,10\na,z,nan,10\na,v,1e308,10\na,u,true,10\n"
    report = ingest_interactions(engine, write(tmp_path / "log.csv", HEADER + body), spec=CsvSpec())
    assert (report.rows_loaded, report.rows_rejected) == (2, 4)
    assert report.first_reasons == [
        "line 3: value '-3.5' below the minimum 0",
        "line 5: non-numeric value 'nan' (column 'rating')",
        "line 6: value '1e308' above the maximum 1e+06",
        "line 7: non-numeric value 'true' (column 'rating')",
    ]


def test_epoch_and_iso_timestamps_agree(engine: Engine, tmp_path: Path) -> None:
    body = HEADER + "\n".join(
        [
            "a,epoch,1,1700000000",
            "a,epoch-float,1,1700000000.9",
            "a,iso-z,1,2023-11-14T22:13:20Z",
            "a,iso-naive-is-utc,1,2023-11-14 22:13:20",
            "a,iso-offset,1,2023-11-15T00:13:20+02:00",
            "a,date-only,1,2023-11-14",
            "a,before-1970,1,1969-12-31T23:59:00Z",
            "a,year-9999,1,9999-12-31",
            "a,far-future-epoch,1,99999999999",
        ]
    )
    report = ingest_interactions(engine, write(tmp_path / "t.csv", body))
    # The default window: from 1970 to a day after now, for every spelling of a time.
    assert [reason.split(" after ")[0].split(" before ")[0] for reason in report.first_reasons] == [
        "line 8: timestamp '1969-12-31T23:59:00Z'",
        "line 9: timestamp '9999-12-31'",
        "line 10: timestamp '99999999999'",
    ]
    stamps = {item: ts for _, item, _, _, ts in events(engine)}
    assert stamps == {
        "epoch": 1_700_000_000,
        "epoch-float": 1_700_000_000,
        "iso-z": 1_700_000_000,
        "iso-naive-is-utc": 1_700_000_000,
        "iso-offset": 1_700_000_000,
        "date-only": 1_699_920_000,
    }


def test_loading_twice_adds_nothing_and_counts_duplicates(engine: Engine, tmp_path: Path) -> None:
    # The file itself repeats one event (line 4 = line 2): it is stored once.
    path = write(tmp_path / "log.csv", HEADER + "a,x,1,5\nb,x,2,5\na,x,1,5\na,x,3,6\n")
    first = ingest_interactions(engine, path, batch_size=2)
    assert (first.rows_loaded, first.rows_duplicate) == (3, 1)
    before = events(engine)
    second = ingest_interactions(engine, path, batch_size=3)
    assert (second.rows_read, second.rows_loaded, second.rows_duplicate) == (4, 0, 4)
    assert events(engine) == before
    assert (count(engine, "users"), count(engine, "items"), count(engine, "interactions")) == (2, 1, 3)


def test_kinds_from_a_column_and_implicit_events(engine: Engine, tmp_path: Path) -> None:
    body = "who;what;event;when\na;x;view;2024-01-01T00:00:00\na;x;click;2024-01-01T00:00:00\nb;y;;5\n"
    spec = CsvSpec(
        user_col="who", item_col="what", value_col=None, timestamp_col="when", kind_col="event", sep=";"
    )
    report = ingest_interactions(engine, write(tmp_path / "events.csv", body), spec=spec)
    assert report.first_reasons == ["line 4: missing kind (column 'event')"]
    assert events(engine) == [("a", "x", "click", 1.0, 1_704_067_200), ("a", "x", "view", 1.0, 1_704_067_200)]


def test_a_kind_with_quotes_is_stored_as_given_and_reloads_as_duplicates(
    engine: Engine, tmp_path: Path
) -> None:
    # A batch of one kind names it in the statement (SQLite) or copies it (PostgreSQL): quotes
    # and a backslash in it are data, never SQL.
    kind = "it's \"odd\"'); --\\"
    path = write(tmp_path / "log.csv", HEADER + "a,x,1,5\nb,x,2,5\n")
    first = ingest_interactions(engine, path, spec=CsvSpec(kind=kind))
    assert (first.rows_loaded, first.rows_duplicate) == (2, 0)
    second = ingest_interactions(engine, path, spec=CsvSpec(kind=kind))
    assert (second.rows_loaded, second.rows_duplicate) == (0, 2)
    assert events(engine) == [("a", "x", kind, 1.0, 5), ("b", "x", kind, 2.0, 5)]


def test_headerless_tab_separated_file(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "u.data", "1\t10\t3\t100\n2\t10\t4\t200\n2\t11\tx\t200\n")
    spec = CsvSpec(sep="\t", names=("user_id", "item_id", "rating", "timestamp"))
    report = ingest_interactions(engine, path, spec=spec)
    # Without a header, line 1 is data.
    assert report.first_reasons == ["line 3: non-numeric value 'x' (column 'rating')"]
    assert events(engine) == [("1", "10", "rating", 3.0, 100), ("2", "10", "rating", 4.0, 200)]


def test_parquet_by_extension_with_row_numbers(engine: Engine, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": [1, 2, None, 4],
            "item_id": ["a", "b", "c", "d"],
            "rating": [1.0, 2.0, 3.0, float("inf")],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"], utc=True),
        }
    )
    path = tmp_path / "log.parquet"
    frame.to_parquet(path)
    report = ingest_interactions(engine, path)
    assert report.first_reasons == [
        "row 3: missing user id (column 'user_id')",
        "row 4: non-finite value 'inf' (column 'rating')",
    ]
    # Integer ids read through a nullable float column are stored as "1", not "1.0".
    assert events(engine) == [
        ("1", "a", "rating", 1.0, 1_704_067_200),
        ("2", "b", "rating", 2.0, 1_704_153_600),
    ]


def test_ingest_frame_loads_in_memory_data(engine: Engine) -> None:
    frame = pd.DataFrame(
        {"user_id": [1, 1, 2], "item_id": [7, 8, 7], "rating": [5, 4, 3], "timestamp": [1, 2, 3]}
    )
    report = ingest_frame(engine, frame, spec=CsvSpec(), source="generated", batch_size=2)
    assert (report.source, report.rows_loaded) == ("generated", 3)
    assert events(engine) == [
        ("1", "7", "rating", 5.0, 1),
        ("1", "8", "rating", 4.0, 2),
        ("2", "7", "rating", 3.0, 3),
    ]


def test_strict_rejects_the_whole_file_and_loads_nothing(engine: Engine, tmp_path: Path) -> None:
    # The bad row sits in the third batch: the two batches before it must not survive either.
    lines = [f"u{n},i{n},3,{n}" for n in range(10)]
    lines[6] = "u6,i6,three,6"
    path = write(tmp_path / "log.csv", HEADER + "\n".join(lines) + "\n")
    with pytest.raises(
        DataError, match=r"log.csv line 8: non-numeric value 'three' \(column 'rating'\); nothing"
    ):
        ingest_interactions(engine, path, strict=True, batch_size=3)
    assert (count(engine, "interactions"), count(engine, "users"), count(engine, "items")) == (0, 0, 0)
    with engine.connect() as connection:
        run = connection.execute(text("SELECT id, status, rows_loaded, error FROM ingestion_runs")).one()
        rejected = connection.execute(text("SELECT run_id, row_number, raw FROM rejected_rows")).all()
    assert (run.status, run.rows_loaded) == ("failed", 0)
    assert "line 8" in run.error
    assert [tuple(row) for row in rejected] == [(run.id, 8, "u6,i6,three,6")]


def test_missing_column_names_the_columns_and_the_fix(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item_id,rating,timestamp\na,b,1,2\n")
    with pytest.raises(DataError, match=r"no column 'user_id'; its columns are \['user', .*--user-col"):
        ingest_interactions(engine, path)
    assert count(engine, "ingestion_runs") == 0


def test_sqlite_inserts_many_rows_per_statement_in_file_order(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 rows per statement: a batch of 10 distinct events takes three full statements and one of a
    # single row; the event repeated in the file (a,x,1,5) is stored once.
    monkeypatch.setattr(loader, "SQLITE_ROWS_PER_STATEMENT", 3)
    lines = [f"u{n},i{n % 3},{n % 5 + 1},{n}" for n in range(10)] + ["u0,i0,1,0"]
    path = write(tmp_path / "log.csv", HEADER + "\n".join(lines) + "\n")
    first = ingest_interactions(sqlite_engine, path, batch_size=11)
    assert (first.rows_loaded, first.rows_duplicate) == (10, 1)
    with sqlite_engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT u.external_id, e.value, e.ts FROM interactions e JOIN users u ON u.id = e.user_id "
                "ORDER BY e.id"
            )
        ).all()
    assert [(user, float(value), int(ts)) for user, value, ts in stored] == [
        (f"u{n}", float(n % 5 + 1), n) for n in range(10)
    ]
    second = ingest_interactions(sqlite_engine, path, batch_size=4)
    assert (second.rows_loaded, second.rows_duplicate, second.rows_conflicting) == (0, 11, 0)
    assert count(sqlite_engine, "interactions") == 10
