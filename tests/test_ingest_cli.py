"""`recsys ingest ...` and `recsys stats` through the CLI: exit codes, summaries, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from recsys.cli import app
from recsys.errors import DataError, SchemaError

runner = CliRunner()
LOG = (
    "user_id,item_id,rating,timestamp\nu1,i1,4,1700000000\nu2,i1,x,1700000000\nu2,i2,5,2024-01-01T00:00:00Z\n"
)


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    return path


def test_csv_summary_and_exit_codes(engine: Engine, settings_env: Path, log_file: Path) -> None:
    url = engine.url.render_as_string(hide_password=False)
    first = runner.invoke(app, ["ingest", "csv", str(log_file), "--database-url", url])
    assert first.exit_code == 0, first.output
    assert "2 loaded, 0 duplicates, 1 rejected of 3 rows" in first.stdout
    assert "rejected line 3: non-numeric value 'x' (column 'rating')" in first.stdout
    assert "elapsed" in first.stdout
    # A reload finds every good row stored already: still a success.
    again = runner.invoke(app, ["ingest", "csv", str(log_file), "--database-url", url])
    assert again.exit_code == 0
    assert "0 loaded, 2 duplicates, 1 rejected" in again.stdout


def test_nothing_loaded_exits_1(sqlite_engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("user_id,item_id,rating,timestamp\n,i1,4,1\nu1,i1,4,never\n")
    result = runner.invoke(app, ["ingest", "csv", str(path), "--database-url", str(sqlite_engine.url)])
    assert result.exit_code == 1
    assert "0 loaded, 0 duplicates, 2 rejected" in result.stdout


def test_strict_exits_1_naming_row_and_reason(
    sqlite_engine: Engine, settings_env: Path, log_file: Path
) -> None:
    url = str(sqlite_engine.url)
    result = runner.invoke(app, ["ingest", "csv", str(log_file), "--strict", "--database-url", url])
    assert result.exit_code == 1
    assert isinstance(result.exception, DataError)
    assert "line 3: non-numeric value 'x' (column 'rating'); nothing was loaded" in str(result.exception)
    with sqlite_engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM interactions")).scalar_one() == 0


def test_csv_options_and_json(sqlite_engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    path = tmp_path / "events.tsv"
    path.write_text("c\tp\tkind\n1\t9\tview\n1\t9\tpurchase\n")
    result = runner.invoke(
        app,
        [
            "ingest", "csv", str(path), "--sep", "\\t", "--user-col", "c", "--item-col", "p",
            "--value-col", "", "--timestamp-col", "", "--kind-col", "kind", "--json",
            "--database-url", str(sqlite_engine.url),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["reports"][0]["rows_loaded"] == 2
    stats = json.loads(
        runner.invoke(app, ["stats", "--json", "--database-url", str(sqlite_engine.url)]).stdout
    )
    assert stats["interactions_by_kind"] == {"purchase": 1, "view": 1}


def test_items_and_users_files_with_attributes(
    sqlite_engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    url = str(sqlite_engine.url)
    items = tmp_path / "items.csv"
    items.write_text("movie,name,tags,year\nm1,Alien,Horror;Sci-Fi,1979\nm2,,,\n")
    result = runner.invoke(
        app,
        ["ingest", "items", str(items), "--id-col", "movie", "--title-col", "name", "--genres-col", "tags",
         "--genres-sep", ";", "--database-url", url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    users = tmp_path / "users.csv"
    users.write_text("user_id,age,country\nu1,31,NL\n")
    assert runner.invoke(app, ["ingest", "users", str(users), "--database-url", url]).exit_code == 0
    with sqlite_engine.connect() as connection:
        rows = connection.execute(text("SELECT external_id, title, attributes FROM items ORDER BY 1")).all()
        user = connection.execute(text("SELECT attributes FROM users")).scalar_one()
    assert [(r[0], r[1], json.loads(r[2])) for r in rows] == [
        ("m1", "Alien", {"year": "1979", "genres": ["Horror", "Sci-Fi"]}),
        ("m2", None, {"year": None, "genres": []}),
    ]
    assert json.loads(user) == {"age": "31", "country": "NL"}


def test_movielens_and_stats(engine: Engine, settings_env: Path, ml100k_dir: Path) -> None:
    url = engine.url.render_as_string(hide_password=False)
    result = runner.invoke(
        app,
        ["ingest", "movielens", "--variant", "ml-100k", "--data-dir", str(ml100k_dir), "--database-url", url],
    )
    assert result.exit_code == 0, result.output
    assert "100,000 loaded" in result.stdout
    stats = runner.invoke(app, ["stats", "--json", "--database-url", url])
    payload = json.loads(stats.stdout)
    assert {key: payload[key] for key in ("users", "items", "interactions", "interactions_by_kind")} == {
        "users": 943,
        "items": 1_682,
        "interactions": 100_000,
        "interactions_by_kind": {"rating": 100_000},
    }
    text_output = runner.invoke(app, ["stats", "--database-url", url]).stdout
    assert "interactions  100,000" in text_output


def test_commands_refuse_a_database_without_schema(
    settings_env: Path, sqlite_url: str, log_file: Path
) -> None:
    result = runner.invoke(app, ["ingest", "csv", str(log_file), "--database-url", sqlite_url])
    assert result.exit_code == 1
    assert isinstance(result.exception, SchemaError)
    assert "run `recsys db upgrade`" in str(result.exception)


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECSYS_DATA_DIR": str(data_dir), "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("RECSYS_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "recsys", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_bad_files_never_print_a_traceback(tmp_path: Path) -> None:
    """Out-of-range dates loaded 0 rows with a traceback, --strict too; a binary header gave a raw
    UnicodeDecodeError. Now: rows rejected alone, or one line on stderr."""
    data = tmp_path / "data"
    assert run_cli("db", "upgrade", data_dir=data).returncode == 0
    dates = tmp_path / "dates.csv"
    dates.write_text(
        "user_id,item_id,rating,timestamp\nu1,i1,4,2024-01-01\nu2,i2,3,9999-12-31\nu3,i3,5,1700000000\n"
    )
    loose = run_cli("ingest", "csv", str(dates), data_dir=data)
    assert loose.returncode == 0 and "2 loaded, 0 duplicates, 1 rejected" in loose.stdout
    strict = run_cli("ingest", "csv", str(dates), "--strict", data_dir=data)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00u,s\n1,2\n")
    refused = run_cli("ingest", "csv", str(binary), data_dir=data)
    for result in (loose, strict, refused):
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert strict.returncode == 1 and strict.stderr.strip().count("\n") == 0
    assert "line 3: timestamp '9999-12-31' after the latest accepted time" in strict.stderr
    assert refused.returncode == 1 and "is not utf-8 text (byte 0xff" in refused.stderr


def test_delete_commands_erase_and_remove_invalid_rows(
    sqlite_engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    url = str(sqlite_engine.url)
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,rating,timestamp\nu1,i1,4,10\nu2,i1,5,10\nu2,i2,5,10\n")
    assert runner.invoke(app, ["ingest", "csv", str(path), "--database-url", url]).exit_code == 0
    with sqlite_engine.begin() as connection:  # stored before the rules existed
        connection.execute(text("UPDATE interactions SET value = -2 WHERE id = 1"))
        connection.execute(text("UPDATE interactions SET ts = 99999999999 WHERE id = 2"))
    dry = runner.invoke(app, ["delete", "invalid", "--dry-run", "--database-url", url])
    assert (
        dry.exit_code == 0 and "2 stored interaction(s) break the input rules; would remove 2" in dry.stdout
    )
    assert "value '-2.0' below the minimum 0" in dry.stdout
    removed = runner.invoke(app, ["delete", "invalid", "--json", "--database-url", url])
    assert json.loads(removed.stdout)["removed"] == 2
    erased = runner.invoke(app, ["delete", "user", "u2", "--database-url", url])
    assert erased.exit_code == 0 and "erased user 'u2' and 1 interaction(s)" in erased.stdout
    assert runner.invoke(app, ["delete", "user", "u2", "--database-url", url]).exit_code == 1
    with sqlite_engine.connect() as connection:
        audit = connection.execute(
            text("SELECT target, external_id, interactions, source FROM deletions")
        ).all()
        assert connection.execute(text("SELECT COUNT(*) FROM interactions")).scalar_one() == 0
    assert [tuple(row) for row in audit] == [("invalid", None, 2, "cli"), ("user", "u2", 1, "cli")]
