"""Matrix build speed: seconds for ``build_interactions`` over N interactions in SQLite and PostgreSQL,
and synthetic-data generation speed (seconds, peak memory, extrapolated to 25M interactions).

Setup: a synthetic log of N interactions (N/50 users, N/250 items, seed 42) is bulk-loaded into a
fresh SQLite file and a fresh PostgreSQL database (dropped afterwards) with the driver's bulk path
(executemany on SQLite, COPY on PostgreSQL); the load is setup, not measured. Each build is run
``--repeats`` times and the median is reported.

``--compare-read`` also times the read alone (the events, then the user and item ids): that of
``build_interactions`` (ADBC on PostgreSQL; SQLite's own DBAPI cursor) next to the read before
ADBC (the DBAPI driver's tuples, a server-side cursor on PostgreSQL), alternating, on the same
database; both must give the same arrays.

    python benchmarks/matrix_benchmark.py                        # 5M interactions
    python benchmarks/matrix_benchmark.py --interactions 1000000 # a quicker run
    python benchmarks/matrix_benchmark.py --postgres-url ""      # SQLite only
    python benchmarks/matrix_benchmark.py --compare-read         # the read, before and now
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from scratch_postgres import scratch_postgres
from sqlalchemy import ClauseElement, Connection, Engine, select, text

from recsys.data import matrix
from recsys.data.matrix import build_interactions
from recsys.data.synthetic import generate_synthetic
from recsys.db import get_engine, is_postgres, upgrade
from recsys.db.models import Item, User

GENERATE_CHILD = """
import resource, sys, time
from recsys.data.synthetic import write_synthetic
n, path = int(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
write_synthetic(path, max(n // 50, 10), max(n // 250, 10), n, seed=42)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def sizes(n: int) -> tuple[int, int]:
    return max(n // 50, 10), max(n // 250, 10)


def load(engine: Engine, frame: pd.DataFrame, n_users: int, n_items: int) -> None:
    """Users u0.. and items i0.. get database ids 1.. in order; the interactions follow."""
    user_id = frame["user_id"].str.removeprefix("u").astype(np.int64).to_numpy() + 1
    item_id = frame["item_id"].str.removeprefix("i").astype(np.int64).to_numpy() + 1
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO users (external_id, attributes) VALUES (:e, '{}')"),
            [{"e": f"u{i}"} for i in range(n_users)],
        )
        connection.execute(
            text("INSERT INTO items (external_id, attributes) VALUES (:e, '{}')"),
            [{"e": f"i{i}"} for i in range(n_items)],
        )
        driver = connection.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        columns = "user_id, item_id, kind, value, ts"
        events = pd.DataFrame(
            {
                "user_id": user_id,
                "item_id": item_id,
                "kind": "rating",
                "value": frame["rating"].to_numpy(np.float64),
                "ts": frame["timestamp"].to_numpy(),
            }
        )
        if is_postgres(engine):
            buffer = io.StringIO()
            events.to_csv(buffer, header=False, index=False)
            with cursor.copy(f"COPY interactions ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write(buffer.getvalue())
        else:
            cursor.executemany(
                f"INSERT INTO interactions ({columns}) VALUES (?, ?, ?, ?, ?)",
                events.itertuples(index=False, name=None),
            )
        cursor.close()


def time_builds(engine: Engine, repeats: int) -> tuple[float, int, tuple[int, int]]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        data = build_interactions(engine)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), len(data), data.shape


def previous_read(
    connection: Connection, queries: list[tuple[ClauseElement, np.dtype]], chunk_size: int
) -> list[matrix.Columns]:
    """The read before ADBC: the DBAPI driver's tuples, ``chunk_size`` at a time, converted by
    ``np.array`` (a named, server-side cursor on PostgreSQL)."""
    result = []
    for query, dtype in queries:
        sql, params = matrix._compile(connection, query, literal=False)
        driver = connection.connection.driver_connection
        assert driver is not None
        postgres = connection.dialect.name == "postgresql"
        cursor = driver.cursor(name="recsys_read") if postgres else driver.cursor()
        try:
            cursor.execute(sql, params)
            blocks = []
            while rows := cursor.fetchmany(chunk_size):
                blocks.append(np.array(rows, dtype=dtype))
        finally:
            cursor.close()
        rows = np.concatenate(blocks) if blocks else np.empty(0, dtype=dtype)
        result.append({name: rows[name] for name in dtype.names or ()})
    return result


def compare_reads(engine: Engine, repeats: int, chunk_size: int = 1_000_000) -> tuple[float, float]:
    """Median seconds of the previous read and of ``build_interactions``' read, run alternately;
    asserts that both give the same arrays."""
    queries = [
        (matrix._event_query(None, None, None), matrix._EVENT_DTYPE),
        (select(User.id, User.external_id).order_by(User.id), matrix._ID_DTYPE),
        (select(Item.id, Item.external_id).order_by(Item.id), matrix._ID_DTYPE),
    ]
    readers = {"previous": previous_read, "arrow": matrix._read}
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    results: dict[str, list[matrix.Columns]] = {}
    for repeat in range(repeats):
        for name in list(readers)[:: 1 if repeat % 2 == 0 else -1]:
            results.pop(name, None)  # one result held at a time besides the other's
            with engine.connect() as connection:
                started = time.perf_counter()
                results[name] = readers[name](connection, queries, chunk_size)
                seconds[name].append(time.perf_counter() - started)
    for before, now in zip(results["previous"], results["arrow"], strict=True):
        assert before.keys() == now.keys()
        for name in before:
            assert before[name].dtype == now[name].dtype and np.array_equal(before[name], now[name]), name
    return statistics.median(seconds["previous"]), statistics.median(seconds["arrow"])


def measure_generation(n: int, folder: Path) -> tuple[float, float, int]:
    """Seconds and peak RSS (MB) of write_synthetic in a fresh process; file size in bytes."""
    path = folder / "synthetic.csv"
    result = subprocess.run(
        [sys.executable, "-c", GENERATE_CHILD, str(n), str(path)], check=True, capture_output=True, text=True
    )
    seconds, max_rss_kb = result.stdout.split()
    return float(seconds), int(max_rss_kb) / 1024, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interactions", type=int, default=5_000_000, help="interactions (default 5M)")
    parser.add_argument("--repeats", type=int, default=3, help="builds per database; the median is reported")
    parser.add_argument(
        "--compare-read", action="store_true", help="also time the read before and now (alternating)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RECSYS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="server for a scratch database (default RECSYS_TEST_POSTGRES_URL or the local server; '' skips)",
    )
    args = parser.parse_args()
    n = args.interactions
    n_users, n_items = sizes(n)
    memory = psutil.virtual_memory().total / 2**30
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB RAM"
    )
    print(f"data: synthetic, {n:,} interactions, {n_users:,} users, {n_items:,} items, seed 42\n")

    with tempfile.TemporaryDirectory() as folder:
        gen_seconds, gen_rss, file_size = measure_generation(n, Path(folder))
        print("synthetic generation (write_synthetic to CSV, fresh process)")
        print(f"  {gen_seconds:.1f} s, {n / gen_seconds:,.0f} rows/s, peak RSS {gen_rss:,.0f} MB", end="")
        print(f", {file_size / 2**20:,.0f} MB file")
        print(f"  extrapolated to 25M interactions: {gen_seconds * 25_000_000 / n / 60:.1f} min\n")

        frame = generate_synthetic(n_users, n_items, n, seed=42)
        with contextlib.ExitStack() as scratch:
            targets = [("SQLite", f"sqlite:///{Path(folder) / 'bench.db'}")]
            if args.postgres_url:
                targets.append(("PostgreSQL", scratch.enter_context(scratch_postgres(args.postgres_url))))
            rows = []
            reads: list[tuple[str, float, float]] = []
            for label, url in targets:
                engine = get_engine(url)
                upgrade(engine)
                started = time.perf_counter()
                load(engine, frame, n_users, n_items)
                load_seconds = time.perf_counter() - started
                seconds, entries, shape = time_builds(engine, args.repeats)
                rss = psutil.Process().memory_info().rss / 2**20
                rows.append((label, entries, shape, load_seconds, seconds, rss))
                if args.compare_read:
                    reads.append((label, *compare_reads(engine, args.repeats)))
                engine.dispose()

    print(f"build_interactions (median of {args.repeats})")
    header = (
        f"{'database':<12}{'entries':>12}{'matrix':>18}{'setup load s':>14}"
        f"{'build s':>10}{'rows/s':>12}{'RSS MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for label, entries, shape, load_seconds, seconds, rss in rows:
        matrix = f"{shape[0]:,}x{shape[1]:,}"
        print(
            f"{label:<12}{entries:>12,}{matrix:>18}{load_seconds:>14.1f}"
            f"{seconds:>10.2f}{n / seconds:>12,.0f}{rss:>9,.0f}"
        )
    if reads:
        print(f"\nthe read: events, then user and item ids (median of {args.repeats}, alternating)")
        header = f"{'database':<12}{'before s':>10}{'now s':>10}{'speed-up':>10}"
        print(header)
        print("-" * len(header))
        for label, before, now in reads:
            print(f"{label:<12}{before:>10.2f}{now:>10.2f}{before / now:>9.1f}x")


if __name__ == "__main__":
    main()
