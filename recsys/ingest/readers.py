"""Read CSV, Parquet or in-memory frames in chunks, keeping each row's number for error reports.

A CSV file is read in blocks of about ``batch_size`` records and each block is parsed by pyarrow
in one call. A row's number is the line its record starts on (header = line 1); a quoted field
may span lines, and a block never ends inside a record, so the block size never changes what is
loaded. Nothing in a file stops a run: a record that is not text of the file's encoding, does not
split into the expected fields or never closes its quote is rejected alone, with its line and text.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import Connection, CursorResult, Engine
from sqlalchemy.exc import DBAPIError

from recsys.errors import DataError
from recsys.ingest.rules import printable_text
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

    def raw_text(self, positions: np.ndarray) -> list[str]:
        """The original text of the rows at ``positions`` of ``frame`` (JSON for non-text sources)."""
        if self.raw_lines is not None:
            return [
                line.decode("utf-8", errors="replace").rstrip("\r\n") for line in self.raw_lines[positions]
            ]
        if len(positions) == 0:
            return []
        rows = self.frame.iloc[positions]
        try:
            text = rows.to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
        except (UnicodeError, ValueError, OverflowError):  # lone surrogates, odd objects
            return [printable_text(repr(row)) for row in rows.to_dict("records")]
        return text.rstrip("\n").split("\n")


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def source_size(path: Path) -> int:
    """The progress total for ``read_chunks``: bytes of a CSV file, rows of a Parquet file."""
    if is_parquet(path):
        return int(pq.ParquetFile(path).metadata.num_rows)
    return path.stat().st_size


#: Files of a folder that are not data: markers and checksums written by Spark, Hadoop and others.
_NOT_PARTS = ("_", ".")


def part_files(folder: Path) -> list[Path]:
    """The CSV and Parquet files under ``folder`` (subfolders included, as partitioned data sets
    hold them), in name order of their paths; hidden files and ``_SUCCESS``-style markers are
    skipped. A folder with none is an error."""
    parts = sorted(
        (
            path
            for path in folder.rglob("*")
            if path.is_file()
            and path.suffix.lower() in (".csv", ".tsv", ".txt", *PARQUET_SUFFIXES)
            and not any(part.startswith(_NOT_PARTS) for part in path.relative_to(folder).parts)
        ),
        key=lambda path: path.relative_to(folder).as_posix(),
    )
    if not parts:
        raise DataError(
            f"{folder} holds no part files (.csv, .tsv, .txt, .parquet or .pq; hidden files and names "
            "starting with '_' are skipped)"
        )
    return parts


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


def sql_chunks(
    engine: Engine, query: str, required: list[str], batch_size: int, name: str
) -> Iterator[Chunk]:
    """Chunks of the rows ``query`` returns from ``engine`` (the user's own database), streamed:
    the driver fetches ``batch_size`` rows at a time (a server-side cursor on PostgreSQL), so
    memory holds one chunk whatever the result's size. Row numbers are 1-based positions in the
    result. The query runs (and its columns are checked) before this returns, so a bad query is
    an error before anything is written. ``name`` names the database in messages."""
    where = f"the query on {name}"
    try:
        connection = engine.connect()
    except DBAPIError as exc:
        raise DataError(f"cannot connect for {where}: {_first_line(exc)}") from None
    try:
        result = connection.execution_options(stream_results=True, yield_per=batch_size).exec_driver_sql(
            query
        )
        names = list(result.keys())
        _check_columns(names, required, f"{where} (its result)")
    except DBAPIError as exc:
        connection.close()
        raise DataError(f"{where} failed: {_first_line(exc)}") from None
    except BaseException:
        connection.close()
        raise
    return _sql_batches(connection, result, names, batch_size, where)


def _first_line(exc: DBAPIError) -> str:
    lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _sql_batches(
    connection: Connection, result: CursorResult[Any], names: list[str], batch_size: int, where: str
) -> Iterator[Chunk]:
    start = 0
    with connection:
        try:
            for rows in result.partitions(batch_size):
                frame = pd.DataFrame.from_records(rows, columns=names, coerce_float=False)
                numbers = np.arange(start + 1, start + len(frame) + 1, dtype=np.int64)
                start += len(frame)
                yield Chunk(frame, numbers, None, "row", start)
        except DBAPIError as exc:
            raise DataError(
                f"{where} failed after {start:,} rows: {_first_line(exc)}; the batches written before "
                "are stored, run the same command again to load the rest"
            ) from None


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
            names, line = _header(handle.readline(), path, fmt), 1
        _check_columns(names, required, str(path))
    except BaseException:
        handle.close()
        raise
    return _csv_blocks(handle, fmt, names, line, batch_size)


def _header(header: bytes, path: Path, fmt: FileFormat) -> list[str]:
    """Column names from line 1; a header that is not text of the file's encoding is refused."""
    encoding = "utf-8-sig" if _is_utf8(fmt.encoding) else fmt.encoding
    try:
        text = header.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} line 1 (the header) is not {fmt.encoding} text (byte {header[exc.start]:#04x} at "
            f"position {exc.start}); is this a CSV file? Name its encoding with --encoding"
        ) from None
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text):
        raise DataError(
            f"{path} line 1 (the header) holds control characters ({printable_text(text[:60])!r}); "
            "is this a CSV file?"
        )
    names = next(csv.reader([text], delimiter=fmt.sep), [])
    return [name.strip() for name in names]


def _is_utf8(encoding: str) -> bool:
    return encoding.replace("_", "-").lower() in ("utf-8", "utf8")


def _csv_blocks(
    handle: BinaryIO, fmt: FileFormat, names: list[str], line: int, batch_size: int
) -> Iterator[Chunk]:
    """Blocks of about ``batch_size`` records. A record whose quoted field is still open at the end
    of a block is carried over whole to the next, so block boundaries never split a record."""
    splitter = _RecordSplitter(fmt.sep.encode(fmt.encoding if not _is_utf8(fmt.encoding) else "utf-8"))
    pending: list[bytes] = []
    with handle:
        while True:
            lines = list(islice(handle, batch_size))
            at_end = not lines
            lines = pending + lines
            if not lines:
                return
            first = line + 1
            records, starts, malformed, pending = splitter.split(lines, first, at_end)
            line += len(lines) - len(pending)
            if records or malformed:
                yield _parse_block(records, starts, malformed, fmt, names, handle.tell())


#: A quoted field may span lines, but a record still open after this many lines is taken to be
#: a stray quote: its first line is rejected and reading goes on from the next line.
MAX_RECORD_LINES = 100
_QUOTE = ord('"')


class _RecordSplitter:
    """Groups lines into CSV records: a line break inside a quoted field continues the record.

    Quotes only open a quoted field at the start of a field (as pyarrow reads them), so a quote
    inside an unquoted field (``5" floppy``) is text. Lines without any quote take a fast path.
    """

    def __init__(self, sep: bytes) -> None:
        self.sep = sep

    def split(
        self, lines: list[bytes], first: int, at_end: bool
    ) -> tuple[list[bytes], list[int], list[tuple[int, str, str]], list[bytes]]:
        """(records, their first line numbers, malformed rows, lines carried over)."""
        if b'"' not in b"".join(lines):
            return lines, list(range(first, first + len(lines))), [], []
        records: list[bytes] = []
        starts: list[int] = []
        malformed: list[tuple[int, str, str]] = []
        i = 0
        while i < len(lines):
            end = self._record_end(lines, i)
            if end is None:
                if not at_end and len(lines) - i < MAX_RECORD_LINES:
                    return records, starts, malformed, lines[i:]
                text = lines[i].decode("utf-8", errors="backslashreplace").rstrip("\r\n")
                malformed.append(
                    (first + i, text, f"unclosed quote: no closing quote within {MAX_RECORD_LINES} lines")
                )
                i += 1
                continue
            records.append(b"".join(lines[i:end]))
            starts.append(first + i)
            i = end
        return records, starts, malformed, []

    def _record_end(self, lines: list[bytes], start: int) -> int | None:
        """Index after the last line of the record starting at ``start``; None if it stays open."""
        in_quote = False
        for index in range(start, min(len(lines), start + MAX_RECORD_LINES)):
            in_quote = self._open_after(lines[index], in_quote)
            if not in_quote:
                return index + 1
        return None

    def _open_after(self, line: bytes, in_quote: bool) -> bool:
        """Whether a quoted field is still open at the end of ``line``."""
        position, size = 0, len(line)
        while True:
            if in_quote or (position < size and line[position] == _QUOTE):
                cursor = position if in_quote else position + 1
                while True:
                    found = line.find(b'"', cursor)
                    if found < 0:
                        return True
                    if found + 1 < size and line[found + 1] == _QUOTE:  # "" is an escaped quote
                        cursor = found + 2
                        continue
                    position, in_quote = found + 1, False
                    break
            separator = line.find(self.sep, position)
            if separator < 0:
                return False
            position = separator + 1


def _decoded(
    records: list[bytes], starts: list[int], encoding: str
) -> tuple[list[bytes], list[int], list[tuple[int, str, str]]]:
    """UTF-8 records (for pyarrow) and the records that are not text of ``encoding``."""
    utf8 = _is_utf8(encoding)
    try:
        text = b"".join(records).decode(encoding)
        if utf8:
            return records, starts, []
        return [record.decode(encoding).encode("utf-8") for record in records], starts, []
    except UnicodeDecodeError:
        pass
    good: list[bytes] = []
    good_starts: list[int] = []
    bad: list[tuple[int, str, str]] = []
    for record, start in zip(records, starts, strict=True):  # only for a block with a bad byte
        try:
            text = record.decode(encoding)
        except UnicodeDecodeError as exc:
            raw = record.decode(encoding, errors="backslashreplace").rstrip("\r\n")
            reason = f"not {encoding} text (byte {record[exc.start]:#04x} at position {exc.start})"
            bad.append((start, raw, reason))
            continue
        good.append(record if utf8 else text.encode("utf-8"))
        good_starts.append(start)
    return good, good_starts, bad


def _parse_block(
    records: list[bytes],
    starts: list[int],
    malformed: list[tuple[int, str, str]],
    fmt: FileFormat,
    names: list[str],
    position: int,
) -> Chunk:
    """Decode ``records`` (starting at the given line numbers) and parse them in one pyarrow call."""
    records, starts, undecodable = _decoded(records, starts, fmt.encoding)
    records, starts, broken = _without_bare_returns(records, starts)
    frame, numbers, raw, bad = _parse_utf8(records, starts, fmt.sep, names)
    raw_lines = np.empty(len(raw), dtype=object)
    raw_lines[:] = raw
    rejected = sorted([*malformed, *undecodable, *broken, *bad])
    return Chunk(frame, numbers, raw_lines, "line", position, rejected)


_BARE_RETURN = re.compile(rb"\r(?!\n)")


def _without_bare_returns(
    records: list[bytes], starts: list[int]
) -> tuple[list[bytes], list[int], list[tuple[int, str, str]]]:
    """Records holding a carriage return that does not end a line are rejected: pyarrow would
    read it as a row break, splitting one record (and every row number after it) in two."""
    if not _BARE_RETURN.search(b"".join(records).replace(b"\r\n", b"\n")):
        return records, starts, []
    good, good_starts, bad = [], [], []
    for record, start in zip(records, starts, strict=True):
        if _BARE_RETURN.search(record.rstrip(b"\r\n")):
            text = record.decode("utf-8", errors="replace").rstrip("\r\n")
            bad.append((start, text, "carriage return inside a line (a line break other than \\n or \\r\\n)"))
        else:
            good.append(record)
            good_starts.append(start)
    return good, good_starts, bad


def _parse_utf8(
    records: list[bytes], starts: list[int], sep: str, names: list[str]
) -> tuple[pd.DataFrame, np.ndarray, list[bytes], list[tuple[int, str, str]]]:
    """(frame, row numbers, raw records, malformed rows) of UTF-8 ``records``."""
    if not records:
        return (
            pd.DataFrame({name: pd.Series(dtype="string") for name in names}),
            np.zeros(0, np.int64),
            [],
            [],
        )
    invalid: list[tuple[int, int, str]] = []  # (1-based record within block, fields found, text)

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(b"".join(records)),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False, encoding="utf8"),
            parse_options=pacsv.ParseOptions(
                delimiter=sep, invalid_row_handler=on_invalid_row, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        if len(records) == 1:
            text = records[0].decode("utf-8", errors="replace").rstrip("\r\n")
            return (*_parse_utf8([], [], sep, names)[:3], [(starts[0], text, f"cannot be parsed: {exc}")])
        return _one_by_one(records, starts, sep, names)  # the one pyarrow refuses is rejected alone
    if any(number is None for number, _, _ in invalid):  # pyarrow knows row numbers single-threaded
        raise DataError(f"could not number the malformed rows near line {starts[0]}")

    keep = np.ones(len(records), dtype=bool)
    malformed = []
    for number, found, text in invalid:
        keep[number - 1] = False
        malformed.append(
            (starts[number - 1], text, f"wrong number of fields: expected {len(names)}, found {found}")
        )
    frame = table.to_pandas()
    if len(frame) + len(invalid) != len(records):
        # pyarrow saw another number of rows than there are records: parse them one by one so
        # that no row is ever paired with another row's line number.
        if len(records) > 1:
            return _one_by_one(records, starts, sep, names)
        text = records[0].decode("utf-8", errors="replace").rstrip("\r\n")
        return (*_parse_utf8([], [], sep, names)[:3], [(starts[0], text, "cannot be read as one row")])
    raw = np.empty(len(records), dtype=object)
    raw[:] = records
    kept_raw = raw[keep]
    numbers = np.asarray(starts, dtype=np.int64)[keep]
    # Blank lines parse as one row of empty fields; they are not data, so drop them silently.
    not_blank = ~np.isin(kept_raw, _BLANK_LINES)
    if not not_blank.all():
        frame = frame.loc[not_blank].reset_index(drop=True)
        numbers, kept_raw = numbers[not_blank], kept_raw[not_blank]
    return frame, numbers, list(kept_raw), malformed


def _one_by_one(
    records: list[bytes], starts: list[int], sep: str, names: list[str]
) -> tuple[pd.DataFrame, np.ndarray, list[bytes], list[tuple[int, str, str]]]:
    parts = [
        _parse_utf8([record], [start], sep, names) for record, start in zip(records, starts, strict=True)
    ]
    return (
        pd.concat([part[0] for part in parts], ignore_index=True),
        np.concatenate([part[1] for part in parts]),
        [raw for part in parts for raw in part[2]],
        [row for part in parts for row in part[3]],
    )
