"""Sources beyond one file: a folder of part files and a SQL query on the user's own database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, create_engine, text
from typer.testing import CliRunner

from recsys.cli import app
from recsys.errors import ConfigError, DataError
from recsys.ingest import CsvSpec, ingest_folder, ingest_sql

runner = CliRunner()


def stored(engine: Engine) -> list[tuple[str, str, float, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT u.external_id, i.external_id, x.value, x.ts FROM interactions x "
                "JOIN users u ON u.id = x.user_id JOIN items i ON i.id = x.item_id ORDER BY 1, 2, 4"
            )
        ).all()
    return [(str(user), str(item), float(value), int(ts)) for user, item, value, ts in rows]


def rejected(engine: Engine, run_id: int) -> list[tuple[int, str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT row_number, raw, reason FROM rejected_rows WHERE run_id = :run ORDER BY row_number"),
            {"run": run_id},
        ).all()
    return [(int(number), str(raw), str(reason)) for number, raw, reason in rows]


@pytest.fixture
def parts(tmp_path: Path) -> Path:
    """Two part files named so that name order differs from creation order, one of them
    Parquet, plus the marker and hidden files data lakes leave next to them."""
    folder = tmp_path / "events"
    (folder / "day=2").mkdir(parents=True)
    (folder / "day=2" / "part-0000.csv").write_text(
        "user_id,item_id,rating,timestamp\nu3,i1,2,300\nu4,i2,lots,400\nu1,i1,4,100\n"
    )
    pd.DataFrame(
        {"user_id": ["u1", "u2"], "item_id": ["i1", "i2"], "rating": [4.0, 5.0], "timestamp": [100, 200]}
    ).to_parquet(folder / "day=1.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-0000.csv.crc").write_text("not data")
    return folder


def test_a_folder_loads_its_part_files_in_name_order_one_run_each(engine: Engine, parts: Path) -> None:
    reports = ingest_folder(engine, parts, spec=CsvSpec())
    assert [Path(report.source).relative_to(parts).as_posix() for report in reports] == [
        "day=1.parquet",
        "day=2/part-0000.csv",
    ]
    assert [(r.rows_read, r.rows_loaded, r.rows_duplicate, r.rows_rejected) for r in reports] == [
        (2, 2, 0, 0),
        (3, 1, 1, 1),  # u1,i1,100 came with the first part: a duplicate
    ]
    # The bad row is named by its own file's line, in its file's run.
    assert rejected(engine, reports[1].run_id) == [
        (3, "u4,i2,lots,400", "non-numeric value 'lots' (column 'rating')")
    ]
    assert stored(engine) == [("u1", "i1", 4.0, 100), ("u2", "i2", 5.0, 200), ("u3", "i1", 2.0, 300)]

    again = ingest_folder(engine, parts, spec=CsvSpec())
    assert [(r.rows_loaded, r.rows_duplicate, r.rows_rejected) for r in again] == [(0, 2, 0), (0, 2, 1)]
    assert len(stored(engine)) == 3


def test_the_cli_loads_a_folder_and_names_each_part(
    sqlite_engine: Engine, settings_env: Path, parts: Path
) -> None:
    url = str(sqlite_engine.url)
    result = runner.invoke(app, ["ingest", "csv", str(parts), "--json", "--database-url", url])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)["reports"]
    assert [(Path(r["source"]).name, r["rows_loaded"], r["rows_rejected"]) for r in reports] == [
        ("day=1.parquet", 2, 0),
        ("part-0000.csv", 1, 1),
    ]


def test_a_folder_without_part_files_is_a_clear_error(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "_SUCCESS").write_text("")
    with pytest.raises(DataError, match="holds no part files"):
        ingest_folder(engine, tmp_path, spec=CsvSpec())


EVENTS = [
    ("alice", "book", 1.0, 1_700_000_000),
    ("bob", "book", 3.0, 1_700_000_100),
    ("alice", "pen", -2.0, 1_700_000_200),  # below the minimum value 0: rejected
    ("carol", "lamp", 5.0, 1_700_000_300),
    ("bob", "lamp", 2.0, 1_700_000_400),
]
SPEC = CsvSpec(user_col="shopper", item_col="product", value_col="amount", timestamp_col="at")
QUERY = "SELECT shopper, product, amount, at FROM shop_events ORDER BY seq"


@pytest.fixture
def source_url(database_url: str, tmp_path: Path) -> str:
    """The user's own database: a SQLite file next to a SQLite recsys database, the recsys
    database itself on PostgreSQL (a server-side cursor streams the result there)."""
    url = f"sqlite:///{tmp_path / 'shop.db'}" if database_url.startswith("sqlite") else database_url
    source = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with source.begin() as connection:
        connection.execute(
            text("CREATE TABLE shop_events (seq INTEGER, shopper TEXT, product TEXT, amount REAL, at BIGINT)")
        )
        connection.execute(
            text("INSERT INTO shop_events VALUES (:seq, :shopper, :product, :amount, :at)"),
            [
                {"seq": seq, "shopper": user, "product": item, "amount": value, "at": ts}
                for seq, (user, item, value, ts) in enumerate(EVENTS)
            ],
        )
    source.dispose()
    return url


def test_a_query_streams_through_validation_in_batches(engine: Engine, source_url: str) -> None:
    report = ingest_sql(engine, source_url, QUERY, spec=SPEC, batch_size=2)
    assert (report.rows_read, report.rows_loaded, report.rows_rejected) == (5, 4, 1)
    assert "query: SELECT shopper" in report.source
    [(number, raw, reason)] = rejected(engine, report.run_id)
    assert number == 3  # the row's position in the result
    assert json.loads(raw) == {"shopper": "alice", "product": "pen", "amount": -2.0, "at": 1_700_000_200}
    assert reason == "value '-2.0' below the minimum 0"
    expected = sorted((u, i, v, t) for u, i, v, t in EVENTS if v >= 0)
    assert stored(engine) == expected

    again = ingest_sql(engine, source_url, QUERY, spec=SPEC, batch_size=3)
    assert (again.rows_loaded, again.rows_duplicate, again.rows_rejected) == (0, 4, 1)


def test_a_bad_query_is_a_clear_error_before_any_run(engine: Engine, source_url: str) -> None:
    with pytest.raises(DataError, match=r"the query on .* failed: .*nope"):
        ingest_sql(engine, source_url, "SELECT shopper FROM nope", spec=SPEC)
    with pytest.raises(
        DataError, match=r"has no column 'product', 'amount', 'at'; its columns are \['shopper'\]"
    ):
        ingest_sql(engine, source_url, "SELECT shopper FROM shop_events", spec=SPEC)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM ingestion_runs")).scalar_one() == 0


def test_a_missing_sqlite_source_is_not_created(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names no existing SQLite file"):
        ingest_sql(engine, f"sqlite:///{tmp_path / 'absent.db'}", QUERY, spec=SPEC)
    assert not (tmp_path / "absent.db").exists()


def test_the_source_is_only_read(sqlite_engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "mine.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (user_id TEXT, item_id TEXT, rating REAL, timestamp INTEGER)")
    with pytest.raises(DataError, match="readonly"):
        ingest_sql(sqlite_engine, f"sqlite:///{path}", "DELETE FROM t RETURNING *")


def test_recsys_ingest_sql_reports_a_bad_query_without_a_traceback(
    sqlite_engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    source = tmp_path / "shop.db"
    with sqlite3.connect(source) as connection:
        connection.execute("CREATE TABLE shop_events (shopper TEXT)")
    result = subprocess.run(
        [
            sys.executable, "-m", "recsys", "ingest", "sql", "--source-url", f"sqlite:///{source}",
            "--query", "SELECT * FROM no_such_table", "--database-url", str(sqlite_engine.url),
        ],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: the query on sqlite:///" in result.stderr
    assert "no such table: no_such_table" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_big_load_refreshes_postgresql_statistics(
    engine: Engine, parts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys.ingest import loader

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite plans by its indexes; only PostgreSQL is analysed")
    monkeypatch.setattr(loader, "ANALYZE_AFTER_ROWS", 2)  # "big" for a two-row part
    ingest_folder(engine, parts, spec=CsvSpec())
    with engine.connect() as connection:
        analysed = connection.execute(
            text(
                "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL "
                "AND relname IN ('interactions', 'users', 'items') ORDER BY relname"
            )
        ).all()
    assert [row[0] for row in analysed] == ["interactions", "items", "users"]
