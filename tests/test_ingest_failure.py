"""A load that dies mid-way keeps exactly its committed batches, and a re-run finishes the job;
erasures running beside a load leave no interaction naming a user or item that is gone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from recsys.db.erasure import erase, lock_out_erasures
from recsys.ingest import ingest_interactions, ingest_items
from recsys.ingest import loader as loader_module
from recsys.ingest.loader import run_status

ROWS = 50
BATCH = 10


class DatabaseDown(RuntimeError):
    pass


def fail_on_call(monkeypatch: pytest.MonkeyPatch, failing_call: int) -> None:
    """Let the real batch writer run, but raise from inside its transaction on the n-th batch."""
    real = loader_module.write_batch
    calls = {"n": 0}

    def flaky(connection, run_id, target, checked, cache, policy):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        counts = real(connection, run_id, target, checked, cache, policy)
        if calls["n"] == failing_call:
            raise DatabaseDown("connection lost")  # after the writes: they must roll back
        return counts

    monkeypatch.setattr(loader_module, "write_batch", flaky)


def table_count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def test_failure_on_third_batch_keeps_two_batches_and_rerun_completes(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.csv"
    # Every row has its own user, so users prove the atomicity of the id inserts too.
    path.write_text(
        "user_id,item_id,rating,timestamp\n" + "".join(f"u{n},i{n % 7},1,{n}\n" for n in range(ROWS))
    )
    fail_on_call(monkeypatch, 3)

    with pytest.raises(DatabaseDown):
        ingest_interactions(engine, path, batch_size=BATCH)
    assert table_count(engine, "interactions") == 2 * BATCH
    assert table_count(engine, "users") == 2 * BATCH
    first_run = run_status(engine, 1)
    assert first_run["status"] == "failed"
    assert first_run["error"] == "DatabaseDown: connection lost"
    # The counters were committed with the batches, so they describe exactly what is stored.
    assert (first_run["rows_read"], first_run["rows_loaded"]) == (2 * BATCH, 2 * BATCH)

    monkeypatch.undo()
    report = ingest_interactions(engine, path, batch_size=BATCH)
    assert (report.rows_read, report.rows_loaded, report.rows_duplicate) == (
        ROWS,
        ROWS - 2 * BATCH,
        2 * BATCH,
    )
    assert run_status(engine, report.run_id)["status"] == "completed"
    assert table_count(engine, "interactions") == ROWS
    assert table_count(engine, "users") == ROWS
    assert table_count(engine, "items") == 7


def test_failed_items_batch_leaves_earlier_items(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id,title,genres\n" + "".join(f"i{n},Film {n},Drama\n" for n in range(25)))
    fail_on_call(monkeypatch, 2)
    with pytest.raises(DatabaseDown):
        ingest_items(engine, path, batch_size=BATCH)
    assert table_count(engine, "items") == BATCH
    monkeypatch.undo()
    report = ingest_items(engine, path, batch_size=BATCH)
    assert (report.rows_loaded, report.rows_duplicate) == (25 - BATCH, BATCH)
    assert table_count(engine, "items") == 25


def orphans(engine: Engine) -> int:
    """Interactions naming a user or item that is not stored (the table has no foreign keys)."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT COUNT(*) FROM interactions e LEFT JOIN users u ON u.id = e.user_id "
                    "LEFT JOIN items i ON i.id = e.item_id WHERE u.id IS NULL OR i.id IS NULL"
                )
            ).scalar_one()
        )


def test_a_user_and_item_erased_between_batches_are_created_again_not_left_dangling(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.csv"
    # Every batch names u0 and i0, so the run caches their ids after the first batch.
    path.write_text(
        "user_id,item_id,rating,timestamp\n" + "".join(f"u{n % 2},i{n % 3},1,{n}\n" for n in range(ROWS))
    )
    real = loader_module.write_batch
    calls = {"n": 0}

    def erase_after_first(connection, run_id, target, checked, cache, policy):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # between batches 1 and 2, as another process would
            assert erase(engine, "user", "u0", source="cli").found
            assert erase(engine, "item", "i0", source="cli").found
        return real(connection, run_id, target, checked, cache, policy)

    monkeypatch.setattr(loader_module, "write_batch", erase_after_first)
    report = ingest_interactions(engine, path, batch_size=BATCH)
    assert report.rows_loaded == ROWS
    assert orphans(engine) == 0
    # The erasure removed batch 1's rows of u0 and i0; later batches stored theirs under new rows.
    with engine.connect() as connection:
        users = connection.execute(text("SELECT external_id, id FROM users ORDER BY id")).all()
        stored = int(connection.execute(text("SELECT COUNT(*) FROM interactions")).scalar_one())
    assert [user for user, _ in users] == ["u1", "u0"]
    first_batch_erased = sum(1 for n in range(BATCH) if n % 2 == 0 or n % 3 == 0)
    assert stored == ROWS - first_batch_erased


def test_an_erasure_waits_for_a_running_batch_on_postgresql(engine: Engine, tmp_path: Path) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: a batch and an erasure cannot overlap")
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,rating,timestamp\nu0,i0,1,1\n")
    ingest_interactions(engine, path)
    with engine.begin() as batch:  # what a batch holds until it commits
        lock_out_erasures(batch)
        with pytest.raises(OperationalError, match="lock"):
            erase(engine, "user", "u0", source="cli", timeout=0.5)
    assert erase(engine, "user", "u0", source="cli").found  # once the batch is over
    assert table_count(engine, "interactions") == 0


def test_sqlite_batches_commit_to_the_log_and_are_read_before_a_checkpoint(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bulk load checkpoints only every SQLITE_BULK_WAL_PAGES pages: its committed batches sit in
    # the write-ahead log, where another connection (the service) reads them.
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,rating,timestamp\n" + "".join(f"u{n},i{n % 7},1,{n}\n" for n in range(ROWS))
    )
    real = loader_module.write_batch
    limits: list[int] = []

    def recorded(connection, run_id, target, checked, cache, policy):  # type: ignore[no-untyped-def]
        counts = real(connection, run_id, target, checked, cache, policy)
        limits.append(int(connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()))
        return counts

    monkeypatch.setattr(loader_module, "write_batch", recorded)
    report = ingest_interactions(sqlite_engine, path, batch_size=BATCH)
    assert report.rows_loaded == ROWS
    assert limits == [loader_module.SQLITE_BULK_WAL_PAGES] * (ROWS // BATCH)
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    assert Path(f"{database}-wal").stat().st_size > 0  # not copied into the file yet
    with sqlite3.connect(database) as other:
        assert other.execute("SELECT COUNT(*) FROM interactions").fetchone() == (ROWS,)
