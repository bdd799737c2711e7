"""Bare baselines the benchmarks measure recsys against, in the same run on the same data.

Each does one stage's work the plainest fast way a practitioner would write it, without recsys's
guarantees (validation, id maps, idempotency, exclusions), so a ratio shows what those cost:

- loading a CSV into SQLite: pandas + sqlite3 ``executemany`` into a plain table
- loading a CSV into PostgreSQL: pandas + psycopg ``COPY`` into a plain table
- fitting iALS: implicit's ``AlternatingLeastSquares`` (CPU, conjugate gradient)
- scoring every user: blocked numpy GEMM + ``argpartition``
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

CHUNK_ROWS = 1_000_000
PLAIN_COLUMNS = "user_id TEXT, item_id TEXT, value DOUBLE PRECISION, ts BIGINT"


def _chunks(csv_path: Path) -> pd.io.parsers.TextFileReader:
    return pd.read_csv(
        csv_path,
        usecols=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": str, "item_id": str},
        chunksize=CHUNK_ROWS,
    )


def sqlite_executemany(csv_path: Path, db_path: Path) -> float:
    """Seconds to load ``csv_path`` into a plain SQLite table with executemany."""
    started = time.perf_counter()
    connection = sqlite3.connect(db_path)
    try:
        connection.execute(f"CREATE TABLE events ({PLAIN_COLUMNS})")
        for chunk in _chunks(csv_path):
            rows = zip(
                chunk["user_id"].tolist(),
                chunk["item_id"].tolist(),
                chunk["rating"].tolist(),
                chunk["timestamp"].tolist(),
                strict=True,
            )
            connection.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
            connection.commit()
    finally:
        connection.close()
    return time.perf_counter() - started


def postgres_copy(csv_path: Path, url: str) -> float:
    """Seconds to load ``csv_path`` into a plain PostgreSQL table with COPY (psycopg)."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(url) as connection:
        connection.execute(f"CREATE TABLE events ({PLAIN_COLUMNS})")
        with connection.cursor() as cursor:
            for chunk in _chunks(csv_path):
                payload = chunk.to_csv(index=False, header=False)
                with cursor.copy("COPY events FROM STDIN (FORMAT csv)") as copy:
                    copy.write(payload)
        connection.commit()
    return time.perf_counter() - started


def implicit_als(matrix: sp.csr_matrix, factors: int, iterations: int, regularization: float) -> float:
    """Seconds implicit's CPU ALS takes to fit ``matrix`` (users x items)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit's own advice: its threads, not BLAS's, run in parallel.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors, iterations=iterations, regularization=regularization, random_state=42
        )
        started = time.perf_counter()
        model.fit(matrix.astype(np.float32), show_progress=False)
    return time.perf_counter() - started


def numpy_top_k(user_vectors: np.ndarray, item_vectors: np.ndarray, k: int, block: int = 4096) -> float:
    """Seconds to rank every user's top ``k`` items by inner product, ``block`` users at a time."""
    started = time.perf_counter()
    for start in range(0, len(user_vectors), block):
        scores = user_vectors[start : start + block] @ item_vectors.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        np.take_along_axis(top, order, axis=1)
    return time.perf_counter() - started
