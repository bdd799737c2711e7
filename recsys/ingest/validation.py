"""The one set of input rules, applied to files, frames and API requests alike.

Every door that stores interactions (CSV and Parquet ingestion, in-memory frames, ``POST
/interactions``) hands its rows to :func:`validate_interactions`, so the bounds and the messages
are the same everywhere. The rules, in the order they are checked (a row gets the reason of the
first rule it breaks): field count (by the reader), user id, item id, value, timestamp, kind.

- **ids** (user, item, kind) are trimmed and Unicode NFC-normalised; an id is rejected when it is
  empty, holds a control character (NUL included) or a lone surrogate, or is longer than the
  column allows.
- **values** must be finite numbers (``true`` is not a number) within the range of their kind:
  ``Rules.value_min``..``Rules.value_max`` unless ``Rules.value_bounds`` names the kind. The
  default minimum is 0 because implicit-feedback models (iALS, the default blend) cannot train on
  negative values.
- **timestamps** are epoch seconds or ISO 8601 text (naive times are UTC) within
  ``Rules.timestamp_min``..now + ``Rules.max_future_seconds``.

Checks are vectorised per chunk: good rows become typed columns, bad rows get one reason each.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.ingest.readers import Chunk, printable_text

# The rules themselves live in recsys.ingest.rules (no pandas or pyarrow); imported here by their
# names too, where the ingestion code has always found them.
from recsys.ingest.rules import CONTROL_CHARACTERS as CONTROL_CHARACTERS
from recsys.ingest.rules import DUPLICATE_POLICIES as DUPLICATE_POLICIES
from recsys.ingest.rules import FORBIDDEN_IN_IDS as FORBIDDEN_IN_IDS
from recsys.ingest.rules import ID_PATTERN as ID_PATTERN
from recsys.ingest.rules import DuplicatePolicy as DuplicatePolicy
from recsys.ingest.rules import Rules as Rules
from recsys.ingest.specs import MAX_ID_LENGTH, MAX_KIND_LENGTH, CsvSpec, EntitySpec, ItemSpec


@dataclass
class Checked:
    """A validated chunk: ``good`` rows ready to write, ``rejected`` rows (row_number, raw,
    reason, field); ``good_positions`` are the good rows' positions in ``chunk.frame``."""

    good: pd.DataFrame
    rejected: pd.DataFrame
    chunk: Chunk
    good_positions: np.ndarray

    def reject_good(self, reasons: Mapping[int, str]) -> None:
        """Move good rows (by position in ``good``) to the rejected ones, with their reasons."""
        positions = np.fromiter(reasons, dtype=np.int64, count=len(reasons))
        in_chunk = self.good_positions[positions]
        moved = pd.DataFrame(
            {
                "row_number": self.chunk.row_numbers[in_chunk],
                "raw": self.chunk.raw_text(in_chunk),
                "reason": list(reasons.values()),
                "field": None,
            }
        )
        keep = np.ones(len(self.good), dtype=bool)
        keep[positions] = False
        self.good = self.good.loc[keep].reset_index(drop=True)
        self.good_positions = self.good_positions[keep]
        frames = [frame for frame in (self.rejected, moved) if len(frame)]
        self.rejected = pd.concat(frames, ignore_index=True).sort_values("row_number", kind="stable")
        self.rejected = self.rejected.reset_index(drop=True)


@dataclass(frozen=True)
class _Quoting:
    """A reason quoting each row's own text, built only for the rows that break the rule."""

    before: str
    text: pd.Series
    after: str = ""

    def for_rows(self, mask: np.ndarray) -> np.ndarray:
        return (self.before + _quoted(self.text[mask]) + self.after).to_numpy(dtype=object)


class _Reasons:
    """Collects the first reason (and the field it concerns) per row; later rules never overwrite."""

    def __init__(self, n: int) -> None:
        self.reasons = np.full(n, None, dtype=object)
        self.fields = np.full(n, None, dtype=object)
        self.bad = np.zeros(n, dtype=bool)  # rows that have a reason

    def add(self, mask: pd.Series | np.ndarray, reason: str | _Quoting | np.ndarray, column: str) -> None:
        if isinstance(mask, pd.Series):  # comparisons on missing strings give <NA>: not a violation
            mask = mask.to_numpy(dtype=bool, na_value=False)
        mask = np.asarray(mask, dtype=bool) & ~self.bad
        if not mask.any():
            return
        if isinstance(reason, _Quoting):
            self.reasons[mask] = reason.for_rows(mask)
        else:
            self.reasons[mask] = reason if isinstance(reason, str) else np.asarray(reason, dtype=object)[mask]
        self.fields[mask] = column
        self.bad |= mask


def as_text(column: pd.Series) -> pd.Series:
    """A column as pandas strings with <NA> for missing, whatever its dtype (ids are text in the DB).

    Python strings may hold lone surrogates (from JSON escapes), which Arrow-backed strings cannot;
    such columns keep Python string storage so the id rules can name them.
    """
    if pd.api.types.is_float_dtype(column):
        finite = column.dropna()
        whole = (finite == np.floor(finite)) & (finite.abs() < 2**53)
        if len(finite) and bool(whole.all()):
            column = column.astype("Int64")  # 7.0 -> "7": ids read through a float column
    try:
        text = column.astype("string")
    except UnicodeEncodeError:
        text = column.astype(pd.StringDtype("python"))
    return text.str.strip()


def _quoted(text: pd.Series) -> pd.Series:
    shown = text.fillna("").str.slice(0, 80)
    if _has_forbidden(shown).any():
        shown = shown.map(printable_text)
    return "'" + shown + "'"


def _has_forbidden(text: pd.Series) -> pd.Series:
    """Where ``text`` holds a control character or a lone surrogate.

    Arrow-backed strings cannot hold surrogates, and a pattern naming them would make pandas fall
    back to Python for the whole column, so they get the pattern without."""
    if isinstance(text.dtype, pd.StringDtype) and text.dtype.storage == "pyarrow":
        return text.str.contains(CONTROL_CHARACTERS, regex=True)
    return text.str.contains(FORBIDDEN_IN_IDS, regex=True)


def clean_ids(reasons: _Reasons, column: pd.Series, name: str, what: str, max_length: int) -> pd.Series:
    """Trimmed, NFC-normalised ids; empty, overlong and control-character ids are rejected."""
    text = as_text(column)
    reasons.add(text.isna() | (text == ""), f"missing {what} (column {name!r})", name)
    reasons.add(
        _has_forbidden(text),
        _Quoting(f"{what} ", text, " holds a control character or invalid Unicode"),
        name,
    )
    not_ascii = ~text.str.isascii().fillna(True).to_numpy(dtype=bool)
    if not_ascii.any():  # NFC changes nothing in ASCII, and normalising is a Python loop
        text = text.copy()
        text[not_ascii] = text[not_ascii].str.normalize("NFC")
    reasons.add(text.str.len() > max_length, f"{what} longer than {max_length} characters", name)
    return text


def _numbers(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(numeric values with NaN where unparsable, text of the original values for messages).

    Booleans are not numbers: a bool column goes through its text ("True"), which does not parse.
    """
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.astype("float64")
        return values, values.astype("string")
    if pd.api.types.is_object_dtype(column):
        column = column.map(lambda value: "true" if value is True else "false" if value is False else value)
    text = as_text(column)
    return _parsed_numbers(text), text


#: Plain decimal numbers, which pyarrow and pandas read alike.
_PLAIN_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def _parsed_numbers(text: pd.Series) -> pd.Series:
    """``text`` as float64, NaN where it is not a number.

    A column of plain decimal numbers (the usual case) is parsed by pyarrow in C++; anything
    else (missing values, words, "inf") goes through ``pandas.to_numeric``.
    """
    array = text.array
    if isinstance(array, pd.arrays.ArrowStringArray) and len(array):
        arrow = pa.array(array)  # the Arrow data behind the column, no copy
        if arrow.null_count == 0 and pc.all(pc.match_substring_regex(arrow, _PLAIN_NUMBER)).as_py():
            numbers = pc.cast(arrow, pa.float64()).to_numpy() + 0.0  # -0 is 0, as pandas reads it
            return pd.Series(numbers, index=text.index, dtype="float64")
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _format(bound: float) -> str:
    return f"{bound:g}"


def _check_value(
    reasons: _Reasons, frame: pd.DataFrame, spec: CsvSpec, kinds: pd.Series | str, rules: Rules
) -> np.ndarray:
    if not spec.value_col:
        return np.ones(len(frame), dtype=np.float64)
    column = spec.value_col
    values, text = _numbers(frame[column])
    reasons.add(text.isna() | (text == ""), f"missing value (column {column!r})", column)
    reasons.add(values.isna(), _Quoting("non-numeric value ", text, f" (column {column!r})"), column)
    reasons.add(~np.isfinite(values), _Quoting("non-finite value ", text, f" (column {column!r})"), column)
    lower = np.full(len(frame), rules.value_min)
    upper = np.full(len(frame), rules.value_max)
    for kind, (low, high) in rules.value_bounds.items():
        of_kind = (kinds == kind) if isinstance(kinds, str) else (kinds == kind).fillna(False).to_numpy(bool)
        lower = np.where(of_kind, low, lower)
        upper = np.where(of_kind, high, upper)
    if spec.min_value is not None:  # a source may narrow the range, never widen it
        lower = np.maximum(lower, spec.min_value)
    if spec.max_value is not None:
        upper = np.minimum(upper, spec.max_value)
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    for bound in np.unique(lower[numbers < lower]):
        reasons.add(
            (numbers < lower) & (lower == bound),
            _Quoting("value ", text, f" below the minimum {_format(bound)}"),
            column,
        )
    for bound in np.unique(upper[numbers > upper]):
        reasons.add(
            (numbers > upper) & (upper == bound),
            _Quoting("value ", text, f" above the maximum {_format(bound)}"),
            column,
        )
    return numbers


def epoch_seconds(stamps: pd.Series) -> pd.Series:
    """Whole seconds since the epoch (floored), NaN for NaT, for any datetime unit and year."""
    stamps = pd.to_datetime(stamps, utc=True)
    seconds = stamps.astype("datetime64[s, UTC]").astype("int64").astype("float64")
    return seconds.where(stamps.notna().to_numpy(), np.nan)


def _iso_seconds(text: pd.Series) -> pd.Series:
    # Naive ISO times are taken as UTC; "2024-01-01T10:00:00+02:00" keeps its offset.
    return epoch_seconds(pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce"))


def _utc_text(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{seconds} s"


def _check_timestamp(
    reasons: _Reasons, frame: pd.DataFrame, spec: CsvSpec, rules: Rules, now: float
) -> np.ndarray:
    if not spec.timestamp_col:
        return np.zeros(len(frame), dtype=np.int64)
    column = spec.timestamp_col
    raw = frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        seconds = epoch_seconds(raw)
        text = raw.astype("string")
    else:
        seconds, text = _numbers(raw)
        needs_iso = seconds.isna() & text.notna() & (text != "")
        if needs_iso.any():
            seconds = seconds.copy()
            seconds[needs_iso] = _iso_seconds(text[needs_iso])
    reasons.add(text.isna() | (text == ""), f"missing timestamp (column {column!r})", column)
    reasons.add(
        seconds.isna(),
        _Quoting("unparsable timestamp ", text, f" (column {column!r}; expected epoch seconds or ISO 8601)"),
        column,
    )
    earliest, latest = rules.timestamp_min, rules.timestamp_max(now)
    reasons.add(
        seconds < earliest,
        _Quoting("timestamp ", text, f" before the earliest accepted time {_utc_text(earliest)}"),
        column,
    )
    reasons.add(
        ~(seconds <= latest),  # also catches inf
        _Quoting(
            "timestamp ",
            text,
            f" after the latest accepted time {_utc_text(latest)} (more than "
            f"{rules.max_future_seconds} s in the future; milliseconds?)",
        ),
        column,
    )
    safe = seconds.where((seconds >= earliest) & (seconds <= latest), 0).fillna(0)
    return np.floor(safe.to_numpy(dtype=np.float64)).astype(np.int64)


def _check_kind(reasons: _Reasons, frame: pd.DataFrame, spec: CsvSpec) -> pd.Series | str:
    if not spec.kind_col:
        return spec.kind
    return clean_ids(reasons, frame[spec.kind_col], spec.kind_col, "kind", MAX_KIND_LENGTH)


def _split(chunk: Chunk, reasons: _Reasons, good: pd.DataFrame) -> Checked:
    bad = reasons.bad
    positions = np.flatnonzero(bad)
    rejected = pd.DataFrame(
        {
            "row_number": chunk.row_numbers[positions],
            "raw": chunk.raw_text(positions),
            "reason": reasons.reasons[positions].astype(str),
            "field": reasons.fields[positions],
        }
    )
    if chunk.malformed:
        malformed = pd.DataFrame(chunk.malformed, columns=["row_number", "raw", "reason"]).assign(field=None)
        rejected = pd.concat([malformed, rejected], ignore_index=True).sort_values("row_number")
    return Checked(
        good.loc[~bad].reset_index(drop=True), rejected.reset_index(drop=True), chunk, np.flatnonzero(~bad)
    )


def validate_interactions(
    chunk: Chunk, spec: CsvSpec, rules: Rules | None = None, now: float | None = None
) -> Checked:
    """Typed columns user, item, kind, value, ts for the good rows of an interaction chunk.

    ``now`` (default: the clock) is the reference of the "not too far in the future" rule.
    """
    rules = rules or Rules()
    frame = chunk.frame
    reasons = _Reasons(len(frame))
    users = clean_ids(reasons, frame[spec.user_col], spec.user_col, "user id", MAX_ID_LENGTH)
    items = clean_ids(reasons, frame[spec.item_col], spec.item_col, "item id", MAX_ID_LENGTH)
    kind_reasons = _Reasons(len(frame))  # the kind is needed for the value bounds, reported last
    kinds = _check_kind(kind_reasons, frame, spec)
    values = _check_value(reasons, frame, spec, kinds, rules)
    stamps = _check_timestamp(reasons, frame, spec, rules, time.time() if now is None else now)
    reasons.add(kind_reasons.bad, kind_reasons.reasons, spec.kind_col or "kind")
    good = pd.DataFrame(
        {
            "user": users,
            "item": items,
            "kind": kinds if isinstance(kinds, str) else kinds.astype(object),
            "value": values,
            "ts": stamps,
        }
    )
    return _split(chunk, reasons, good)


def validate_entities(chunk: Chunk, spec: EntitySpec) -> Checked:
    """Columns external_id, title (items only) and attributes (JSON text) for the good rows."""
    frame = chunk.frame
    reasons = _Reasons(len(frame))
    ids = clean_ids(reasons, frame[spec.id_col], spec.id_col, "id", MAX_ID_LENGTH)
    good = pd.DataFrame({"external_id": ids.astype(object)})
    named = set(spec.columns)
    attributes = frame[[column for column in frame.columns if column not in named]].copy()
    if isinstance(spec, ItemSpec):
        if spec.title_col:
            title = as_text(frame[spec.title_col])
            reasons.add(
                title.str.contains("\x00", regex=False), "title holds a NUL character", spec.title_col
            )
            present = (title.fillna("") != "").to_numpy(dtype=bool)
            good["title"] = title.astype(object).where(present, None)
        else:
            good["title"] = None
        if spec.genres_col:
            genres = frame[spec.genres_col]
            if not _holds_lists(genres):
                genres = as_text(genres).fillna("").str.split(spec.genres_sep, regex=False)
                genres = genres.map(lambda names: [name.strip() for name in names if name.strip()])
            attributes["genres"] = genres
    good["attributes"] = _json_lines(attributes)
    return _split(chunk, reasons, good)


def _json_lines(attributes: pd.DataFrame) -> np.ndarray:
    """One JSON object per row, serialised by pandas in C rather than row by row in Python.

    NUL characters are escaped by the JSON writer, so attributes never carry one into the database.
    """
    if attributes.shape[1] == 0:
        return np.full(len(attributes), "{}", dtype=object)
    for column in attributes.columns:
        if pd.api.types.is_string_dtype(attributes[column]) and not _holds_lists(attributes[column]):
            text = attributes[column].astype("string").str.strip()
            attributes[column] = text.where(text != "").astype(object)
    payload = attributes.to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
    rows = payload.rstrip("\n").split("\n")
    return np.asarray(rows, dtype=object)


def _holds_lists(column: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(column) and bool(
        column.map(lambda value: isinstance(value, list)).all()
    )
