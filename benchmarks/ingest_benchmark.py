"""Ingestion speed: rows per second loading a synthetic interaction CSV into SQLite and PostgreSQL.

Each database starts empty (a fresh SQLite file; a fresh PostgreSQL database, dropped afterwards).
The first load inserts every row; the reload finds every row stored and measures the idempotent path.

    python benchmarks/ingest_benchmark.py                      # 5M interactions
    python benchmarks/ingest_benchmark.py --rows 200000        # a quick run
    python benchmarks/ingest_benchmark.py --postgres-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import psutil
from scratch_postgres import scratch_postgres

from recsys.db import get_engine, upgrade
from recsys.ingest import CsvSpec, ingest_interactions


def write_csv(path: Path, rows: int) -> None:
    from recsys.data.synthetic import write_synthetic

    write_synthetic(
        path, n_users=max(rows // 50, 10), n_items=max(rows // 250, 10), n_interactions=rows, seed=42
    )


def measure(url: str, path: Path, batch_size: int | None) -> list[tuple[str, int, int, float]]:
    engine = get_engine(url)
    upgrade(engine)
    results = []
    for label in ("first load", "reload"):
        started = time.perf_counter()
        report = ingest_interactions(engine, path, spec=CsvSpec(), batch_size=batch_size)
        results.append((label, report.rows_read, report.rows_loaded, time.perf_counter() - started))
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000, help="interactions in the synthetic file")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per batch (default: settings)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RECSYS_TEST_POSTGRES_URL", ""),
        help="server for a scratch database (default RECSYS_TEST_POSTGRES_URL; empty skips PostgreSQL)",
    )
    args = parser.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} logical cores, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM; python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="recsys-ingest-bench-") as folder:
        path = Path(folder) / "interactions.csv"
        started = time.perf_counter()
        write_csv(path, args.rows)
        print(
            f"synthetic CSV: {args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB, "
            f"written in {time.perf_counter() - started:.1f} s"
        )
        table: list[tuple[str, str, int, int, float]] = []
        for label, row_count, loaded, seconds in measure(
            f"sqlite:///{Path(folder) / 'bench.db'}", path, args.batch_size
        ):
            table.append(("sqlite", label, row_count, loaded, seconds))
        if args.postgres_url:
            with scratch_postgres(args.postgres_url) as url:
                for label, row_count, loaded, seconds in measure(url, path, args.batch_size):
                    table.append(("postgresql", label, row_count, loaded, seconds))
        else:
            print("PostgreSQL skipped: pass --postgres-url or set RECSYS_TEST_POSTGRES_URL")

    print(f"\n{'database':<12}{'run':<12}{'rows read':>12}{'rows loaded':>13}{'seconds':>10}{'rows/s':>12}")
    for database, label, row_count, loaded, seconds in table:
        rate = row_count / seconds
        print(f"{database:<12}{label:<12}{row_count:>12,}{loaded:>13,}{seconds:>10.1f}{rate:>12,.0f}")


if __name__ == "__main__":
    main()
