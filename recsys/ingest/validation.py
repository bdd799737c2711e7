"""Row validation, vectorised per chunk: good rows become typed columns, bad rows get one reason each.

A row gets the reason of the first rule it breaks, checked in this order: field count (by the
reader), user id, item id, value, timestamp, kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.ingest.readers import Chunk
from recsys.ingest.specs import MAX_ID_LENGTH, MAX_KIND_LENGTH, CsvSpec, EntitySpec, ItemSpec

# Epoch seconds beyond this (year 5138) are almost surely milliseconds or garbage.
MAX_ABS_EPOCH_SECONDS = 10**11
EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass
class Checked:
    """A validated chunk: ``good`` rows ready to write, ``rejected`` rows (row_number, raw, reason)."""

    good: pd.DataFrame
    rejected: pd.DataFrame


class _Reasons:
    """Collects the first reason per row; later rules never overwrite an earlier one."""

    def __init__(self, n: int) -> None:
        self.reasons = np.full(n, None, dtype=object)

    def add(self, mask: pd.Series | np.ndarray, reason: str | pd.Series) -> None:
        if isinstance(mask, pd.Series):  # comparisons on missing strings give <NA>: not a violation
            mask = mask.astype("boolean").fillna(False).to_numpy(dtype=bool)
        mask = np.asarray(mask, dtype=bool) & pd.isna(self.reasons)
        if not mask.any():
            return
        self.reasons[mask] = reason if isinstance(reason, str) else np.asarray(reason, dtype=object)[mask]

    @property
    def bad(self) -> np.ndarray:
        return ~pd.isna(self.reasons)


def as_text(column: pd.Series) -> pd.Series:
    """A column as pandas strings with <NA> for missing, whatever its dtype (ids are text in the DB)."""
    if pd.api.types.is_float_dtype(column):
        finite = column.dropna()
        if len(finite) and bool((finite == np.floor(finite)).all()):
            column = column.astype("Int64")  # 7.0 -> "7": ids read through a float column
    text = column.astype("string")
    return text.str.strip()


def _quoted(text: pd.Series) -> pd.Series:
    return "'" + text.fillna("").str.slice(0, 80) + "'"


def _check_id(reasons: _Reasons, frame: pd.DataFrame, column: str, what: str) -> pd.Series:
    text = as_text(frame[column])
    reasons.add(text.isna() | (text == ""), f"missing {what} (column {column!r})")
    reasons.add(text.str.len() > MAX_ID_LENGTH, f"{what} longer than {MAX_ID_LENGTH} characters")
    return text


def _numbers(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(numeric values with NaN where unparsable, text of the original values for messages)."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.astype("float64")
        return values, values.astype("string")
    text = as_text(column)
    return pd.to_numeric(text, errors="coerce").astype("float64"), text


def _check_value(reasons: _Reasons, frame: pd.DataFrame, spec: CsvSpec) -> np.ndarray:
    if not spec.value_col:
        return np.ones(len(frame), dtype=np.float64)
    column = spec.value_col
    values, text = _numbers(frame[column])
    reasons.add(text.isna() | (text == ""), f"missing value (column {column!r})")
    reasons.add(values.isna(), "non-numeric value " + _quoted(text) + f" (column {column!r})")
    reasons.add(~np.isfinite(values), "non-finite value " + _quoted(text) + f" (column {column!r})")
    if spec.min_value is not None:
        reasons.add(
            values < spec.min_value, "value " + _quoted(text) + f" below the minimum {spec.min_value:g}"
        )
    if spec.max_value is not None:
        reasons.add(
            values > spec.max_value, "value " + _quoted(text) + f" above the maximum {spec.max_value:g}"
        )
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _epoch_seconds(stamps: pd.Series) -> pd.Series:
    """Whole seconds since the epoch (floored), NaN for NaT; independent of the datetime unit."""
    return ((stamps - EPOCH) // pd.Timedelta(seconds=1)).astype("float64")


def _check_timestamp(reasons: _Reasons, frame: pd.DataFrame, spec: CsvSpec) -> np.ndarray:
    if not spec.timestamp_col:
        return np.zeros(len(frame), dtype=np.int64)
    column = spec.timestamp_col
    raw = frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        seconds = _epoch_seconds(pd.to_datetime(raw, utc=True))
        text = raw.astype("string")
    else:
        seconds, text = _numbers(raw)
        needs_iso = seconds.isna() & text.notna() & (text != "")
        if needs_iso.any():
            # Naive ISO times are taken as UTC; "2024-01-01T10:00:00+02:00" keeps its offset.
            iso = pd.to_datetime(text[needs_iso], format="ISO8601", utc=True, errors="coerce")
            seconds = seconds.copy()
            seconds[needs_iso] = _epoch_seconds(iso)
    reasons.add(text.isna() | (text == ""), f"missing timestamp (column {column!r})")
    reasons.add(
        seconds.isna(),
        "unparsable timestamp " + _quoted(text) + f" (column {column!r}; expected epoch seconds or ISO 8601)",
    )
    reasons.add(
        ~(seconds.abs() < MAX_ABS_EPOCH_SECONDS),
        "timestamp " + _quoted(text) + " out of range for epoch seconds (milliseconds?)",
    )
    return np.floor(seconds.fillna(0).to_numpy(dtype=np.float64)).astype(np.int64)


def _check_kind(reasons: _Reasons, frame: pd.DataFrame, spec: CsvSpec) -> pd.Series | str:
    if not spec.kind_col:
        return spec.kind
    text = as_text(frame[spec.kind_col])
    reasons.add(text.isna() | (text == ""), f"missing kind (column {spec.kind_col!r})")
    reasons.add(text.str.len() > MAX_KIND_LENGTH, f"kind longer than {MAX_KIND_LENGTH} characters")
    return text


def _split(chunk: Chunk, reasons: _Reasons, good: pd.DataFrame) -> Checked:
    bad = reasons.bad
    positions = np.flatnonzero(bad)
    rejected = pd.DataFrame(
        {
            "row_number": chunk.row_numbers[positions],
            "raw": chunk.raw_text(positions),
            "reason": reasons.reasons[positions].astype(str),
        }
    )
    if chunk.malformed:
        malformed = pd.DataFrame(chunk.malformed, columns=["row_number", "raw", "reason"])
        rejected = pd.concat([malformed, rejected], ignore_index=True).sort_values("row_number")
    return Checked(good.loc[~bad].reset_index(drop=True), rejected.reset_index(drop=True))


def validate_interactions(chunk: Chunk, spec: CsvSpec) -> Checked:
    """Typed columns user, item, kind, value, ts for the good rows of an interaction chunk."""
    frame = chunk.frame
    reasons = _Reasons(len(frame))
    users = _check_id(reasons, frame, spec.user_col, "user id")
    items = _check_id(reasons, frame, spec.item_col, "item id")
    values = _check_value(reasons, frame, spec)
    stamps = _check_timestamp(reasons, frame, spec)
    kinds = _check_kind(reasons, frame, spec)
    good = pd.DataFrame(
        {
            "user": users.astype(object),
            "item": items.astype(object),
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
    ids = _check_id(reasons, frame, spec.id_col, "id")
    good = pd.DataFrame({"external_id": ids.astype(object)})
    named = set(spec.columns)
    attributes = frame[[column for column in frame.columns if column not in named]].copy()
    if isinstance(spec, ItemSpec):
        if spec.title_col:
            title = as_text(frame[spec.title_col])
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
    """One JSON object per row, serialised by pandas in C rather than row by row in Python."""
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
