"""What a source file looks like (its columns and format) and what an ingestion run reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys.errors import ConfigError

MAX_ID_LENGTH = 255  # users.external_id / items.external_id are VARCHAR(255)
MAX_KIND_LENGTH = 32  # interactions.kind is VARCHAR(32)


@dataclass(frozen=True, kw_only=True)
class FileFormat:
    """How to split a text file into fields. Parquet files ignore it.

    ``names`` gives the column names of a file without a header row (``u.data``); with it set,
    line 1 is already data.
    """

    sep: str = ","
    names: tuple[str, ...] | None = None
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        if len(self.sep) != 1:
            raise ConfigError(f"the field separator must be one character, got {self.sep!r}")


@dataclass(frozen=True, kw_only=True)
class CsvSpec(FileFormat):
    """Columns of an interaction log. A column option set to None means the file has no such column.

    Without ``value_col`` every event has value 1.0; without ``timestamp_col`` every event has
    timestamp 0, so repeated events of one user, item and kind collapse into one (the unique key
    is user, item, kind, timestamp). ``kind_col`` names a column holding the kind per row;
    otherwise ``kind`` applies to every row. ``min_value``/``max_value`` bound the accepted values
    (default: any finite number).
    """

    user_col: str = "user_id"
    item_col: str = "item_id"
    value_col: str | None = "rating"
    timestamp_col: str | None = "timestamp"
    kind: str = "rating"
    kind_col: str | None = None
    min_value: float | None = None
    max_value: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.kind_col and not 0 < len(self.kind) <= MAX_KIND_LENGTH:
            raise ConfigError(f"kind must have 1 to {MAX_KIND_LENGTH} characters, got {self.kind!r}")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ConfigError(f"min_value {self.min_value} is above max_value {self.max_value}")

    @property
    def columns(self) -> list[str]:
        """The columns the file must have."""
        wanted = [self.user_col, self.item_col, self.value_col, self.timestamp_col, self.kind_col]
        return [column for column in wanted if column]


@dataclass(frozen=True, kw_only=True)
class ItemSpec(FileFormat):
    """Columns of an items file. Every other column goes into the item's ``attributes`` as text.

    ``genres_col`` is split on ``genres_sep`` into ``attributes["genres"]`` (a list of strings).
    """

    id_col: str = "item_id"
    title_col: str | None = "title"
    genres_col: str | None = "genres"
    genres_sep: str = "|"

    @property
    def columns(self) -> list[str]:
        return [column for column in (self.id_col, self.title_col, self.genres_col) if column]


@dataclass(frozen=True, kw_only=True)
class UserSpec(FileFormat):
    """Columns of a users file: the id, and every other column goes into ``attributes`` as text."""

    id_col: str = "user_id"

    @property
    def columns(self) -> list[str]:
        return [self.id_col]


EntitySpec = ItemSpec | UserSpec
AnySpec = CsvSpec | ItemSpec | UserSpec


def target_of(spec: AnySpec) -> str:
    """The table a spec loads: interactions, items or users."""
    if isinstance(spec, CsvSpec):
        return "interactions"
    return "items" if isinstance(spec, ItemSpec) else "users"


@dataclass
class IngestReport:
    """The outcome of one run; ``rows_read == rows_loaded + rows_duplicate + rows_rejected``.

    ``rows_conflicting`` counts rows whose key matched a stored or earlier event with another
    value; ``duplicate_policy`` says whether they were loaded (update), counted as duplicates
    (keep-first) or rejected (reject).

    ``first_reasons`` holds up to ten rejections as ``"line N: reason"`` strings.
    """

    run_id: int
    source: str
    target: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    rows_conflicting: int = 0
    duplicate_policy: str | None = None
    first_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        text = (
            f"{self.source} -> {self.target}: {self.rows_loaded:,} loaded, "
            f"{self.rows_duplicate:,} duplicates, {self.rows_rejected:,} rejected "
            f"of {self.rows_read:,} rows in {self.seconds:.2f} s"
        )
        if self.rows_conflicting:
            outcome = {"update": "updated", "keep-first": "kept the first value", "reject": "rejected"}
            text += (
                f"; {self.rows_conflicting:,} conflicting (same user, item, kind and timestamp as a "
                f"stored or earlier event but another value: {outcome.get(self.duplicate_policy or '', '?')})"
            )
        return text
