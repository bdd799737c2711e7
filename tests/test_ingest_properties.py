"""Property tests: arbitrary input never ends in a traceback and never costs a good row.

Deterministic (derandomize) and small (max_examples) so they fit the CI budget; no database:
the reader and the validation module are what decide which rows are good.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.errors import DataError
from recsys.ingest.readers import frame_chunks, read_chunks
from recsys.ingest.specs import CsvSpec
from recsys.ingest.validation import FORBIDDEN_IN_IDS, Rules, validate_interactions

NOW = 1_764_000_000
RULES = Rules()
SPEC = CsvSpec()
FAST = settings(
    max_examples=60, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None
)

good_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)
good_rows = st.tuples(good_ids, good_ids, st.integers(0, 50), st.integers(0, NOW)).map(
    lambda row: (f"{row[0]},{row[1]},{row[2] / 10:g},{row[3]}".encode(), row)
)
# Anything but a line break or a quote: bytes that are not UTF-8, NUL, separators, carriage returns.
garbage_rows = st.binary(min_size=0, max_size=30).map(  # \r included: pyarrow ends rows on it
    lambda raw: (raw.replace(b"\n", b"").replace(b'"', b""), None)
)


def read_all(path: Path, batch_size: int) -> tuple[list[tuple[int, str, str, float, int]], int]:
    good, rejected = [], 0
    for chunk in read_chunks(path, SPEC, SPEC.columns, batch_size):
        assert len(chunk.row_numbers) == len(chunk.frame)  # every row keeps its own line number
        checked = validate_interactions(chunk, SPEC, RULES, now=NOW)
        numbers = chunk.row_numbers[checked.good_positions]
        for number, row in zip(numbers.tolist(), checked.good.itertuples(), strict=True):
            good.append((number, row.user, row.item, row.value, row.ts))
        rejected += len(checked.rejected)
    return good, rejected


@FAST
@given(rows=st.lists(st.one_of(good_rows, garbage_rows), max_size=25), batch_size=st.integers(1, 7))
def test_no_good_row_is_lost_among_garbage(tmp_path_factory, rows, batch_size) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("csv") / "log.csv"
    path.write_bytes(b"user_id,item_id,rating,timestamp\n" + b"".join(raw + b"\n" for raw, _ in rows))
    good, rejected = read_all(path, batch_size)
    expected = [
        (line, user, item, float(f"{value / 10:g}"), ts)
        for line, (_, parsed) in enumerate(rows, start=2)
        if parsed is not None
        for user, item, value, ts in [parsed]
    ]
    found = [row for row in good if row[0] in {line for line, *_ in expected}]
    assert found == expected
    blank = sum(1 for raw, _ in rows if raw.strip(b"\r") == b"")
    assert len(good) + rejected >= len(rows) - blank  # every non-blank line is accounted for
    assert len(good) + rejected <= len(rows)


@FAST
@given(content=st.binary(max_size=200), batch_size=st.integers(1, 5))
def test_arbitrary_bytes_never_raise_anything_but_a_data_error(tmp_path_factory, content, batch_size) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("csv") / "any.csv"
    path.write_bytes(content)
    try:
        read_all(path, batch_size)
    except DataError as exc:  # a refused file: one line naming the problem
        assert "\n" not in str(exc)


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)


@FAST
@given(
    rows=st.lists(st.tuples(values, values, values, values, values), min_size=1, max_size=20),
)
def test_the_rules_hold_for_every_good_row_and_every_row_is_judged(rows) -> None:  # type: ignore[no-untyped-def]
    frame = pd.DataFrame(
        {
            column: pd.Series([row[i] for row in rows], dtype=object)
            for i, column in enumerate(["user_id", "item_id", "rating", "timestamp", "kind"])
        }
    )
    spec = CsvSpec(kind_col="kind")
    chunk = next(frame_chunks(frame, spec.columns, len(frame)))
    checked = validate_interactions(chunk, spec, RULES, now=NOW)
    assert len(checked.good) + len(checked.rejected) == len(rows)
    for row in checked.good.itertuples():
        for text in (row.user, row.item, row.kind):
            assert text and text == unicodedata.normalize("NFC", text) and text == text.strip()
            assert not pd.Series([text]).str.contains(FORBIDDEN_IN_IDS, regex=True).iloc[0]
        assert math.isfinite(row.value) and RULES.value_min <= row.value <= RULES.value_max
        assert RULES.timestamp_min <= row.ts <= RULES.timestamp_max(NOW)
    for position in checked.good_positions:
        original = rows[int(position)]
        assert not isinstance(original[2], bool) and not isinstance(original[3], bool)
    assert np.all(checked.rejected["reason"].str.len() > 0)
