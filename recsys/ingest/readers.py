"""Read CSV, Parquet or in-memory frames in chunks, keeping each row's number for error reports.

A CSV file is read line by line in blocks of ``batch_size`` lines and each block is parsed by
pyarrow in one call, so a row's number is simply its line number (header = line 1). The cost of
that simplicity: a quoted field may not contain a line break (such a row is rejected as having
the wrong number of fields).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys.errors import DataError
from recsys.ingest.specs import FileFormat

PARQUET_SUFFIXES = (".parquet", ".pq")
_BLANK_LINES = [b"", b"\n", b"\r\n", b"\r"]


@dataclass
class Chunk:
    """One block of rows.

    ``frame`` holds the rows that split into the expected fields, ``row_numbers`` their numbers
    (CSV: line in the file; Parquet and frames: 1-based row), ``raw_lines`` their original text
    when the source is text. ``malformed`` lists rows that did not split: (number, raw, reason).
    """

    frame: pd.DataFrame
    row_numbers: np.ndarray
    raw_lines: np.ndarray | None
    row_label: str  # "line" or "row", for messages
    progress: int  # bytes (CSV) or rows (otherwise) consumed so far
    malformed: list[tuple[int, str, str]] = field(default_factory=list)
    encoding: str = "utf-8"

    def raw_text(self, positions: np.ndarray) -> list[str]:
        """The original text of the rows at ``positions`` of ``frame`` (JSON for non-text sources)."""
        if self.raw_lines is not None:
            return [
                line.decode(self.encoding, errors="replace").rstrip("\r\n")
                for line in self.raw_lines[positions]
            ]
        if len(positions) == 0:
            return []
        text = self.frame.iloc[positions].to_json(
            orient="records", lines=True, force_ascii=False, date_format="iso"
        )
        return text.rstrip("\n").split("\n")


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def source_size(path: Path) -> int:
    """The progress total for ``read_chunks``: bytes of a CSV file, rows of a Parquet file."""
    if is_parquet(path):
        return int(pq.ParquetFile(path).metadata.num_rows)
    return path.stat().st_size


def read_chunks(path: Path, fmt: FileFormat, required: list[str], batch_size: int) -> Iterator[Chunk]:
    """Chunks of a CSV or Parquet file (chosen by extension), checking the required columns first."""
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    if is_parquet(path):
        return _parquet_chunks(path, required, batch_size)
    return _csv_chunks(path, fmt, required, batch_size)


def frame_chunks(frame: pd.DataFrame, required: list[str], batch_size: int) -> Iterator[Chunk]:
    """Chunks of an in-memory frame; row numbers are 1-based positions."""
    _check_columns(list(frame.columns), required, "the frame")
    for start in range(0, len(frame), batch_size):
        part = frame.iloc[start : start + batch_size].reset_index(drop=True)
        numbers = np.arange(start + 1, start + len(part) + 1, dtype=np.int64)
        yield Chunk(part, numbers, None, "row", start + len(part))


def _check_columns(available: list[str], required: list[str], where: str) -> None:
    missing = [column for column in required if column not in available]
    if missing:
        raise DataError(
            f"{where} has no column {', '.join(map(repr, missing))}; its columns are {available}. "
            "Name the right columns with the column options (for example --user-col)."
        )
    duplicated = sorted({column for column in available if available.count(column) > 1})
    if duplicated:
        raise DataError(f"{where} repeats the column names {duplicated}; rename them")


def _parquet_chunks(path: Path, required: list[str], batch_size: int) -> Iterator[Chunk]:
    parquet = pq.ParquetFile(path)
    _check_columns(parquet.schema_arrow.names, required, str(path))
    return _parquet_batches(parquet, batch_size)


def _parquet_batches(parquet: pq.ParquetFile, batch_size: int) -> Iterator[Chunk]:
    start = 0
    for batch in parquet.iter_batches(batch_size=batch_size):
        frame = batch.to_pandas()
        numbers = np.arange(start + 1, start + len(frame) + 1, dtype=np.int64)
        start += len(frame)
        yield Chunk(frame, numbers, None, "row", start)


def _csv_chunks(path: Path, fmt: FileFormat, required: list[str], batch_size: int) -> Iterator[Chunk]:
    handle = path.open("rb")
    try:
        if fmt.names:
            names, line = list(fmt.names), 0
        else:
            header = handle.readline()
            encoding = (
                "utf-8-sig" if fmt.encoding.replace("_", "-").lower() in ("utf-8", "utf8") else fmt.encoding
            )
            names = next(csv.reader([header.decode(encoding)], delimiter=fmt.sep), [])
            names = [name.strip() for name in names]
            line = 1
        _check_columns(names, required, str(path))
    except BaseException:
        handle.close()
        raise
    return _csv_blocks(handle, path, fmt, names, line, batch_size)


def _csv_blocks(
    handle: BinaryIO, path: Path, fmt: FileFormat, names: list[str], line: int, batch_size: int
) -> Iterator[Chunk]:
    with handle:
        while lines := list(islice(handle, batch_size)):
            yield _parse_block(lines, line, path, fmt, names, handle.tell())
            line += len(lines)


def _parse_block(
    lines: list[bytes], line: int, path: Path, fmt: FileFormat, names: list[str], position: int
) -> Chunk:
    """Parse ``lines`` (the first is line ``line + 1``) in one pyarrow call."""
    invalid: list[tuple[int, int, str]] = []  # (1-based line within block, fields found, text)

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(b"".join(lines)),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False, encoding=fmt.encoding),
            parse_options=pacsv.ParseOptions(
                delimiter=fmt.sep, invalid_row_handler=on_invalid_row, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataError(f"{path} lines {line + 1}-{line + len(lines)} cannot be parsed: {exc}") from exc
    if any(number is None for number, _, _ in invalid):  # pyarrow knows line numbers single-threaded
        raise DataError(f"{path}: could not number the malformed rows near line {line + 1}")

    raw = np.empty(len(lines), dtype=object)
    raw[:] = lines
    keep = np.ones(len(lines), dtype=bool)
    malformed = []
    for number, found, text in invalid:
        keep[number - 1] = False
        malformed.append(
            (line + number, text, f"wrong number of fields: expected {len(names)}, found {found}")
        )
    frame = table.to_pandas()
    kept_raw = raw[keep]
    # Blank lines parse as one row of empty fields; they are not data, so drop them silently.
    not_blank = ~np.isin(kept_raw, _BLANK_LINES)
    numbers = np.arange(line + 1, line + len(lines) + 1, dtype=np.int64)[keep]
    if not not_blank.all():
        frame = frame.loc[not_blank].reset_index(drop=True)
        numbers, kept_raw = numbers[not_blank], kept_raw[not_blank]
    return Chunk(frame, numbers, kept_raw, "line", position, malformed, fmt.encoding)
