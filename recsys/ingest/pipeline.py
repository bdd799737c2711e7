"""The ingestion entry points: read in chunks, validate, write each batch in one transaction.

Non-strict runs commit batch by batch (with the run's counters in the same transaction), so after
a crash the database holds exactly the committed batches and a re-run skips them as duplicates.
Strict runs write everything in one transaction and roll it back at the first bad row.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine

from recsys.db.schema import ensure_current
from recsys.errors import DataError
from recsys.ingest import loader
from recsys.ingest.readers import Chunk, frame_chunks, read_chunks, source_size
from recsys.ingest.specs import AnySpec, CsvSpec, IngestReport, ItemSpec, UserSpec, target_of
from recsys.ingest.validation import Checked, validate_entities, validate_interactions
from recsys.settings import get_settings

FIRST_REASONS = 10


class _StrictRejection(Exception):
    def __init__(self, chunk: Chunk, rejected: pd.DataFrame) -> None:
        super().__init__()
        self.label = chunk.row_label
        self.rejected = rejected.iloc[:1]


def ingest_interactions(
    engine: Engine,
    path: str | Path,
    *,
    spec: CsvSpec | None = None,
    strict: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
) -> IngestReport:
    """Load an interaction log (CSV, or Parquet by extension) into ``interactions``.

    Users and items named by the log are created when new. Bad rows are rejected into
    ``rejected_rows`` with their line number and reason; ``strict`` instead rejects the whole
    file at the first bad row (raising :class:`DataError`) and loads nothing.
    """
    return _ingest_path(engine, Path(path), spec or CsvSpec(), strict, batch_size, progress)


def ingest_items(
    engine: Engine,
    path: str | Path,
    *,
    spec: ItemSpec | None = None,
    strict: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
) -> IngestReport:
    """Upsert items (title, genres, other columns as attributes) by external id from a file."""
    return _ingest_path(engine, Path(path), spec or ItemSpec(), strict, batch_size, progress)


def ingest_users(
    engine: Engine,
    path: str | Path,
    *,
    spec: UserSpec | None = None,
    strict: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
) -> IngestReport:
    """Upsert users (other columns as attributes) by external id from a file."""
    return _ingest_path(engine, Path(path), spec or UserSpec(), strict, batch_size, progress)


def ingest_frame(
    engine: Engine,
    frame: pd.DataFrame,
    *,
    spec: AnySpec,
    source: str,
    strict: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
) -> IngestReport:
    """Load an in-memory frame; the spec's type chooses the table (CsvSpec: interactions,
    ItemSpec: items, UserSpec: users). Row numbers in rejections are 1-based positions."""
    size = batch_size or get_settings().ingest_batch_size
    return _run(engine, frame_chunks(frame, spec.columns, size), spec, source, strict, len(frame), progress)


def _ingest_path(
    engine: Engine, path: Path, spec: AnySpec, strict: bool, batch_size: int | None, progress: bool
) -> IngestReport:
    size = batch_size or get_settings().ingest_batch_size
    chunks = read_chunks(path, spec, spec.columns, size)  # checks the file and its columns up front
    return _run(engine, chunks, spec, str(path), strict, source_size(path), progress)


def _validate(chunk: Chunk, spec: AnySpec) -> Checked:
    if isinstance(spec, CsvSpec):
        return validate_interactions(chunk, spec)
    return validate_entities(chunk, spec)


def _run(
    engine: Engine,
    chunks: Iterator[Chunk],
    spec: AnySpec,
    source: str,
    strict: bool,
    total: int,
    progress: bool,
) -> IngestReport:
    ensure_current(engine)
    target = target_of(spec)
    started = time.perf_counter()
    report = IngestReport(run_id=loader.start_run(engine, source, target), source=source, target=target)
    cache = loader.IdCache()
    try:
        with _progress_bar(progress, source, total) as advance:
            # Strict: one transaction for the file; otherwise one per batch (opened in the loop).
            strict_scope = engine.begin() if strict else contextlib.nullcontext(None)
            with strict_scope as strict_connection:
                for chunk in chunks:
                    checked = _validate(chunk, spec)
                    if strict and len(checked.rejected):
                        raise _StrictRejection(chunk, checked.rejected)
                    if strict_connection is not None:
                        counts = loader.write_batch(strict_connection, report.run_id, target, checked, cache)
                    else:
                        with engine.begin() as connection:
                            counts = loader.write_batch(connection, report.run_id, target, checked, cache)
                    _add(report, counts, checked, chunk.row_label)
                    advance(chunk.progress)
    except _StrictRejection as rejection:
        row = rejection.rejected.iloc[0]
        message = (
            f"{source} {rejection.label} {row['row_number']}: {row['reason']}; "
            "nothing was loaded (strict mode rejects the whole file at the first bad row)"
        )
        loader.finish_run(engine, report.run_id, "failed", error=message, rejected=rejection.rejected)
        raise DataError(message) from None
    except BaseException as exc:
        loader.finish_run(engine, report.run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    loader.finish_run(engine, report.run_id, "completed")
    report.seconds = time.perf_counter() - started
    return report


def _add(report: IngestReport, counts: loader.BatchCounts, checked: Checked, label: str) -> None:
    report.rows_read += counts.read
    report.rows_loaded += counts.loaded
    report.rows_duplicate += counts.duplicate
    report.rows_rejected += counts.rejected
    room = FIRST_REASONS - len(report.first_reasons)
    for row in checked.rejected.head(max(room, 0)).itertuples():
        report.first_reasons.append(f"{label} {row.row_number}: {row.reason}")


@contextlib.contextmanager
def _progress_bar(enabled: bool, source: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (or nothing); yields a function taking the units done so far."""
    if not enabled:
        yield lambda _done: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(f"ingest {Path(source).name}", total=total)
        yield lambda done: bar.update(task, completed=done)
