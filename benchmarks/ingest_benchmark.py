"""Ingestion speed: `recsys ingest csv`'s path next to a bare load measured in the same run.

Each database starts empty (a fresh SQLite file; a fresh PostgreSQL database, dropped afterwards).
For each database the script measures, one after the other on the same synthetic CSV:

- the bare baseline of benchmarks/baselines.py: pandas reads the CSV in chunks and the rows go
  into a plain table without indexes (sqlite3 ``executemany`` on SQLite, psycopg ``COPY`` on
  PostgreSQL). No validation, no id mapping, no duplicate detection;
- recsys's first load (``ingest_interactions``, what ``recsys ingest csv`` runs), into the empty
  schema: every row is inserted;
- recsys's reload of the same file: every row is found stored (the idempotent path).

Next to the totals it prints each load's throughput over its first and last 20% of rows (timed
at batch commits), so a load that slows down as the table grows shows it.

    python benchmarks/ingest_benchmark.py                      # 5M interactions
    python benchmarks/ingest_benchmark.py --rows 200000        # a quick run
    python benchmarks/ingest_benchmark.py --csv events.csv     # a file written before (reused)
    python benchmarks/ingest_benchmark.py --csv big.csv --postgres-url '' --no-reload  # linearity
    python benchmarks/ingest_benchmark.py --postgres-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import baselines
import psutil
from scratch_postgres import scratch_postgres

from recsys.db import get_engine, upgrade
from recsys.ingest import CsvSpec, ingest_interactions, loader
from recsys.settings import get_settings

PART = 0.2  # the share of rows whose throughput is reported at each end of a load


@dataclass
class Load:
    database: str
    label: str
    rows_read: int = 0
    rows_loaded: int = 0
    seconds: float = 0.0
    marks: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, rows done)

    @property
    def rate(self) -> float:
        return self.rows_read / self.seconds

    def part_rates(self) -> tuple[float, float] | None:
        """Rows per second over the first and the last ``PART`` of the rows, between batch commits
        (None for a load timed as a whole)."""
        if not self.marks:
            return None
        marks = [(0.0, 0), *self.marks]
        total = marks[-1][1]
        head = next(mark for mark in marks if mark[1] >= PART * total)
        tail = next(mark for mark in reversed(marks) if mark[1] <= (1 - PART) * total)
        end = marks[-1]
        return head[1] / head[0], (end[1] - tail[1]) / (end[0] - tail[0])


def write_csv(path: Path, rows: int) -> None:
    from recsys.data.synthetic import write_synthetic

    write_synthetic(
        path, n_users=max(rows // 50, 10), n_items=max(rows // 250, 10), n_interactions=rows, seed=42
    )


def bare_load(database: str, path: Path, target: str) -> Load:
    """The shared bare baseline (benchmarks/baselines.py): pandas + sqlite3 executemany, or pandas +
    psycopg COPY, into a plain table without indexes, in chunks of a million rows."""
    seconds = (
        baselines.sqlite_executemany(path, Path(target))
        if database == "sqlite"
        else baselines.postgres_copy(path, target)
    )
    rows = sum(1 for _ in path.open("rb")) - 1
    return Load(database, "bare baseline", rows, rows, seconds)


@contextmanager
def batch_marks(load: Load) -> Iterator[None]:
    """Record (time, rows read so far) after each batch recsys writes (its transaction is still
    open then; the commit follows at once)."""
    original: Callable[..., Any] = loader.write_batch
    started = time.perf_counter()

    def timed(*args: Any, **kwargs: Any) -> loader.BatchCounts:
        counts = original(*args, **kwargs)
        load.rows_read += counts.read
        load.marks.append((time.perf_counter() - started, load.rows_read))
        return counts

    loader.write_batch = timed
    try:
        yield
    finally:
        loader.write_batch = original


def recsys_loads(database: str, url: str, path: Path, batch_size: int | None, reload: bool) -> list[Load]:
    engine = get_engine(url)
    upgrade(engine)
    loads = []
    for label in ("first load", "reload") if reload else ("first load",):
        load = Load(database, f"recsys {label}")
        with batch_marks(load):
            started = time.perf_counter()
            report = ingest_interactions(engine, path, spec=CsvSpec(), batch_size=batch_size)
            load.seconds = time.perf_counter() - started
        load.rows_read, load.rows_loaded = report.rows_read, report.rows_loaded
        loads.append(load)
    engine.dispose()
    return loads


def print_table(loads: list[Load]) -> None:
    head, tail = f"first {PART:.0%}", f"last {PART:.0%}"
    print(
        f"\n{'database':<12}{'load':<20}{'rows read':>12}{'rows loaded':>13}{'seconds':>9}{'rows/s':>11}"
        f"{'x bare':>8}{head + ' rows/s':>17}{tail + ' rows/s':>16}{'last/first':>11}"
    )
    bare = {load.database: load for load in loads if load.label == "bare baseline"}
    for load in loads:
        ratio = load.rate / bare[load.database].rate
        parts = load.part_rates()
        linearity = (
            f"{parts[0]:>17,.0f}{parts[1]:>16,.0f}{parts[1] / parts[0]:>10.2f}x"
            if parts
            else f"{'-':>17}{'-':>16}{'-':>11}"
        )
        print(
            f"{load.database:<12}{load.label:<20}{load.rows_read:>12,}{load.rows_loaded:>13,}"
            f"{load.seconds:>9.1f}{load.rate:>11,.0f}{ratio:>7.2f}x{linearity}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000, help="interactions in the synthetic file")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per batch (default: settings)")
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="load this CSV (columns user_id, item_id, rating, timestamp, as generate-synthetic writes) "
        "instead of writing a synthetic one of --rows rows",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RECSYS_TEST_POSTGRES_URL", ""),
        help="server for a scratch database (default RECSYS_TEST_POSTGRES_URL; empty skips PostgreSQL)",
    )
    parser.add_argument(
        "--no-reload", action="store_true", help="measure first loads only (for long linearity runs)"
    )
    args = parser.parse_args()
    batch_size = args.batch_size or get_settings().ingest_batch_size

    print(
        f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} logical cores, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM; python {platform.python_version()}; "
        f"batch size {batch_size:,}"
    )
    loads: list[Load] = []
    with tempfile.TemporaryDirectory(prefix="recsys-ingest-bench-") as folder:
        if args.csv:
            path = args.csv
            print(f"CSV: {path}, {path.stat().st_size / 2**20:.0f} MiB")
        else:
            path = Path(folder) / "interactions.csv"
            started = time.perf_counter()
            write_csv(path, args.rows)
            print(
                f"synthetic CSV: {args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB, "
                f"written in {time.perf_counter() - started:.1f} s"
            )
        loads.append(bare_load("sqlite", path, str(Path(folder) / "bare.db")))
        loads += recsys_loads(
            "sqlite", f"sqlite:///{Path(folder) / 'bench.db'}", path, batch_size, not args.no_reload
        )
        if args.postgres_url:
            with scratch_postgres(args.postgres_url) as url:
                loads.append(bare_load("postgresql", path, url))
                loads += recsys_loads("postgresql", url, path, batch_size, not args.no_reload)
        else:
            print("PostgreSQL skipped: pass --postgres-url or set RECSYS_TEST_POSTGRES_URL")
    print_table(loads)


if __name__ == "__main__":
    main()
