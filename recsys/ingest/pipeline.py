"""The ingestion entry points: read in chunks, validate, write each batch in one transaction.

Non-strict runs commit batch by batch (with the run's counters in the same transaction), so after
a crash the database holds exactly the committed batches and a re-run skips them as duplicates.
Strict runs write everything in one transaction and roll it back at the first bad row.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine, make_url
from sqlalchemy.exc import DBAPIError

from recsys.db.engine import source_engine
from recsys.db.schema import ensure_current
from recsys.errors import DatabaseUnavailableError, DataError
from recsys.ingest import loader
from recsys.ingest.readers import Chunk, frame_chunks, part_files, read_chunks, source_size, sql_chunks
from recsys.ingest.specs import AnySpec, CsvSpec, IngestReport, ItemSpec, UserSpec, target_of
from recsys.ingest.validation import (
    Checked,
    DuplicatePolicy,
    Rules,
    validate_entities,
    validate_interactions,
)
from recsys.settings import get_settings

logger = logging.getLogger(__name__)

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
    duplicate_policy: DuplicatePolicy | None = None,
) -> IngestReport:
    """Load an interaction log (CSV, or Parquet by extension) into ``interactions``.

    Users and items named by the log are created when new. Bad rows are rejected into
    ``rejected_rows`` with their line number and reason; ``strict`` instead rejects the whole
    file at the first bad row (raising :class:`DataError`) and loads nothing. The rules are the
    settings' (:class:`~recsys.ingest.validation.Rules`); ``duplicate_policy`` overrides theirs.
    """
    return _ingest_path(engine, Path(path), spec or CsvSpec(), strict, batch_size, progress, duplicate_policy)


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
    duplicate_policy: DuplicatePolicy | None = None,
) -> IngestReport:
    """Load an in-memory frame; the spec's type chooses the table (CsvSpec: interactions,
    ItemSpec: items, UserSpec: users). Row numbers in rejections are 1-based positions."""
    size = batch_size or get_settings().ingest_batch_size
    chunks = frame_chunks(frame, spec.columns, size)
    return _run(engine, chunks, spec, source, strict, len(frame), progress, duplicate_policy)


def ingest_folder(
    engine: Engine,
    folder: str | Path,
    *,
    spec: AnySpec,
    strict: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
    duplicate_policy: DuplicatePolicy | None = None,
) -> list[IngestReport]:
    """Load every part file (CSV or Parquet) of ``folder`` in name order, one run per file; the
    spec's type chooses the table. Each file is its own run (its own source, row numbers and
    rejections), so a re-run of the folder skips what is stored as duplicates; ``strict`` rolls
    back the file with the bad row and stops there, keeping the files before it."""
    parts = part_files(Path(folder))
    return [
        _ingest_path(engine, part, spec, strict, batch_size, progress, duplicate_policy) for part in parts
    ]


def ingest_sql(
    engine: Engine,
    source_url: str,
    query: str,
    *,
    spec: CsvSpec | None = None,
    strict: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
    duplicate_policy: DuplicatePolicy | None = None,
) -> IngestReport:
    """Load the interactions a SQL query returns from another database (``source_url``),
    streamed in batches through the same validation and writer as files. The spec names the
    result's columns; rejections give the row's position in the result and its values."""
    spec = spec or CsvSpec()
    size = batch_size or get_settings().ingest_batch_size
    source = source_engine(source_url)
    name = make_url(source_url).render_as_string(hide_password=True)
    try:
        chunks = sql_chunks(source, query, spec.columns, size, name)  # runs the query: errors first
        return _run(engine, chunks, spec, f"{name} query: {query}", strict, None, progress, duplicate_policy)
    finally:
        source.dispose()


def _ingest_path(
    engine: Engine,
    path: Path,
    spec: AnySpec,
    strict: bool,
    batch_size: int | None,
    progress: bool,
    duplicate_policy: DuplicatePolicy | None = None,
) -> IngestReport:
    size = batch_size or get_settings().ingest_batch_size
    chunks = read_chunks(path, spec, spec.columns, size)  # checks the file and its columns up front
    return _run(engine, chunks, spec, str(path), strict, source_size(path), progress, duplicate_policy)


def _validate(chunk: Chunk, spec: AnySpec, rules: Rules) -> Checked:
    if isinstance(spec, CsvSpec):
        return validate_interactions(chunk, spec, rules)
    return validate_entities(chunk, spec)


def _run(
    engine: Engine,
    chunks: Iterator[Chunk],
    spec: AnySpec,
    source: str,
    strict: bool,
    total: int | None,
    progress: bool,
    duplicate_policy: DuplicatePolicy | None = None,
) -> IngestReport:
    settings = get_settings()
    rules = Rules.from_settings(settings)
    policy = duplicate_policy or rules.duplicate_policy
    target = target_of(spec)
    try:
        ensure_current(engine)
        interrupted = loader.mark_interrupted(engine, settings.lock_stale_seconds)
        if interrupted:
            logger.warning("marked %d ingestion run(s) whose process is gone as interrupted", interrupted)
        run_id = loader.start_run(engine, source, target, policy if target == "interactions" else None)
    except DBAPIError as exc:
        raise _unavailable(engine, source, None, exc) from None
    started = time.perf_counter()
    report = IngestReport(run_id=run_id, source=source, target=target, duplicate_policy=policy)
    cache = loader.IdCache()
    try:
        with _progress_bar(progress, source, total) as advance:
            # Strict: one transaction for the file; otherwise one per batch (opened in the loop).
            strict_scope = engine.begin() if strict else contextlib.nullcontext(None)
            with strict_scope as strict_connection:
                for chunk in chunks:
                    checked = _validate(chunk, spec, rules)
                    if strict and len(checked.rejected):
                        raise _StrictRejection(chunk, checked.rejected)
                    if strict_connection is not None:
                        counts = loader.write_batch(
                            strict_connection, report.run_id, target, checked, cache, policy
                        )
                        if len(checked.rejected):  # the duplicate policy rejected a row
                            raise _StrictRejection(chunk, checked.rejected)
                    else:
                        with engine.begin() as connection:
                            counts = loader.write_batch(
                                connection, report.run_id, target, checked, cache, policy
                            )
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
    except DBAPIError as exc:
        raise _unavailable(engine, source, report.run_id, exc) from None
    except BaseException as exc:
        loader.finish_run(engine, report.run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    loader.finish_run(engine, report.run_id, "completed")
    try:
        loader.refresh_statistics(engine, target, report.rows_loaded)
    except DBAPIError as exc:  # the rows are stored; stale statistics only slow later queries
        logger.warning("ANALYZE after loading %s failed: %s", source, exc.orig or exc)
    report.seconds = time.perf_counter() - started
    return report


def _unavailable(
    engine: Engine, source: str, run_id: int | None, exc: DBAPIError
) -> DatabaseUnavailableError:
    """One clear error for a database that failed mid-run; the run is marked failed if it still can."""
    cause = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    first_line = cause[0] if cause else type(exc).__name__
    if run_id is not None:
        with contextlib.suppress(DBAPIError):  # still down: the next run marks it interrupted
            loader.finish_run(engine, run_id, "failed", error=f"database error: {first_line}")
    where = engine.url.render_as_string(hide_password=True)
    stored = (
        f"the batches committed before are stored (run {run_id}); run the same command again to load "
        "the rest (stored rows count as duplicates)"
        if run_id is not None
        else "nothing was loaded"
    )
    return DatabaseUnavailableError(
        f"the database {where} failed while loading {source}: {first_line}; {stored}"
    )


def _add(report: IngestReport, counts: loader.BatchCounts, checked: Checked, label: str) -> None:
    report.rows_read += counts.read
    report.rows_loaded += counts.loaded
    report.rows_duplicate += counts.duplicate
    report.rows_rejected += counts.rejected
    report.rows_conflicting += counts.conflicting
    room = FIRST_REASONS - len(report.first_reasons)
    for row in checked.rejected.head(max(room, 0)).itertuples():
        report.first_reasons.append(f"{label} {row.row_number}: {row.reason}")


@contextlib.contextmanager
def _progress_bar(enabled: bool, source: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (or nothing); yields a function taking the units done so far."""
    if not enabled:
        yield lambda _done: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        name = Path(source).name if total is not None else source[:60]  # None: rows of a query
        task = bar.add_task(f"ingest {name}", total=total)
        yield lambda done: bar.update(task, completed=done)
