"""`recsys ingest csv|sql|items|users|movielens` and `recsys stats`.

A load exits with code 1 only when no row of the source is in the database afterwards (every
row rejected, or an empty source) or when ``--strict`` met a bad row; rows that were already
stored count as duplicates, so reloading a file succeeds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from recsys.cli.common import DatabaseUrlOption, JsonOption, console, load_settings, open_database, print_json

if TYPE_CHECKING:
    from recsys.ingest import IngestReport
    from recsys.ingest.rules import DuplicatePolicy

app = typer.Typer(
    help="Load interaction logs, items, users or MovieLens into the database.", no_args_is_help=True
)

PathArgument = Annotated[
    Path,
    typer.Argument(
        help="CSV file (or Parquet, by the .parquet extension), or a folder of part files loaded in "
        "name order, one run per file.",
        show_default=False,
    ),
]
SepOption = Annotated[str, typer.Option("--sep", help="Field separator of a CSV file (use '\\t' for tabs).")]
NoHeaderOption = Annotated[
    str | None,
    typer.Option(
        "--names",
        help="Comma-separated column names for a file WITHOUT a header row (line 1 is then data).",
        show_default=False,
    ),
]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Reject the whole file at the first bad row and load nothing.")
]
BatchOption = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        help="Rows per committed batch (default RECSYS_INGEST_BATCH_SIZE).",
        show_default=False,
    ),
]
EncodingOption = Annotated[str, typer.Option("--encoding", help="Text encoding of a CSV file.")]
PolicyOption = Annotated[
    str | None,
    typer.Option(
        "--duplicate-policy",
        help="An event with the key (user, item, kind, timestamp) of a stored or earlier one but another "
        "value: update, keep-first or reject (default RECSYS_DUPLICATE_POLICY, update). Always reported.",
        show_default=False,
    ),
]


def _policy(value: str | None) -> DuplicatePolicy | None:
    from recsys.ingest.rules import DUPLICATE_POLICIES

    if value is not None and value not in DUPLICATE_POLICIES:
        raise typer.BadParameter(
            f"choose one of {', '.join(DUPLICATE_POLICIES)}", param_hint="--duplicate-policy"
        )
    return value


def _optional(column: str) -> str | None:
    """Column options take '' to say the file has no such column."""
    return column or None


def _separator(sep: str) -> str:
    return "\t" if sep in ("\\t", "tab") else sep


def _names(names: str | None) -> tuple[str, ...] | None:
    return tuple(name.strip() for name in names.split(",")) if names else None


def _finish(reports: list[IngestReport], as_json: bool, seconds: float) -> None:
    """Print the summary; exit 1 when a source ended up with none of its rows in the database."""
    if as_json:
        print_json({"reports": [vars(report) for report in reports], "seconds": round(seconds, 3)})
    else:
        for report in reports:
            console.print(report.summary(), soft_wrap=True)
            for reason in report.first_reasons[:5]:
                console.print(f"  rejected {reason}", soft_wrap=True)
            if report.rows_rejected > 5:
                console.print(
                    f"  ... {report.rows_rejected - 5:,} more in rejected_rows, run_id {report.run_id}"
                )
        console.print(f"elapsed {seconds:.2f} s")
    if any(report.rows_loaded + report.rows_duplicate == 0 for report in reports):
        raise typer.Exit(1)


UserColOption = Annotated[str, typer.Option("--user-col", help="Column of user ids.")]
ItemColOption = Annotated[str, typer.Option("--item-col", help="Column of item ids.")]
ValueColOption = Annotated[
    str, typer.Option("--value-col", help="Column of values ('' = none: every event has value 1).")
]
TimestampColOption = Annotated[
    str,
    typer.Option(
        "--timestamp-col", help="Column of times, epoch seconds or ISO 8601 ('' = none: timestamp 0)."
    ),
]
KindOption = Annotated[str, typer.Option("--kind", help="Kind of every event (rating, view, click, ...).")]
KindColOption = Annotated[
    str | None, typer.Option("--kind-col", help="Column holding each event's kind (overrides --kind).")
]
MinValueOption = Annotated[
    float | None,
    typer.Option("--min-value", help="Also reject values below this (narrows the configured range)."),
]
MaxValueOption = Annotated[
    float | None,
    typer.Option("--max-value", help="Also reject values above this (narrows the configured range)."),
]


@app.command("csv")
def csv_command(
    path: PathArgument,
    user_col: UserColOption = "user_id",
    item_col: ItemColOption = "item_id",
    value_col: ValueColOption = "rating",
    timestamp_col: TimestampColOption = "timestamp",
    kind: KindOption = "rating",
    kind_col: KindColOption = None,
    min_value: MinValueOption = None,
    max_value: MaxValueOption = None,
    duplicate_policy: PolicyOption = None,
    sep: SepOption = ",",
    names: NoHeaderOption = None,
    encoding: EncodingOption = "utf-8",
    strict: StrictOption = False,
    batch_size: BatchOption = None,
    as_json: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Load an interaction log: one row per event (user, item, value, time, kind)."""
    from recsys.ingest import CsvSpec, ingest_folder, ingest_interactions

    spec = CsvSpec(
        user_col=user_col,
        item_col=item_col,
        value_col=_optional(value_col),
        timestamp_col=_optional(timestamp_col),
        kind=kind,
        kind_col=kind_col or None,
        min_value=min_value,
        max_value=max_value,
        sep=_separator(sep),
        names=_names(names),
        encoding=encoding,
    )
    engine = open_database(load_settings(database_url))
    started = time.perf_counter()
    policy = _policy(duplicate_policy)
    progress = console.is_terminal
    if path.is_dir():
        reports = ingest_folder(
            engine,
            path,
            spec=spec,
            strict=strict,
            batch_size=batch_size,
            progress=progress,
            duplicate_policy=policy,
        )
    else:
        reports = [
            ingest_interactions(
                engine,
                path,
                spec=spec,
                strict=strict,
                batch_size=batch_size,
                progress=progress,
                duplicate_policy=policy,
            )
        ]
    _finish(reports, as_json, time.perf_counter() - started)


@app.command("sql")
def sql_command(
    source_url: Annotated[
        str,
        typer.Option(
            "--source-url",
            help="Database to read from (SQLAlchemy URL, e.g. postgresql://user@host/shop or "
            "sqlite:///events.db; a SQLite file is opened read-only).",
            show_default=False,
        ),
    ],
    query: Annotated[
        str,
        typer.Option(
            "--query",
            help="SELECT returning one row per event; name its columns with the options below.",
            show_default=False,
        ),
    ],
    user_col: UserColOption = "user_id",
    item_col: ItemColOption = "item_id",
    value_col: ValueColOption = "rating",
    timestamp_col: TimestampColOption = "timestamp",
    kind: KindOption = "rating",
    kind_col: KindColOption = None,
    min_value: MinValueOption = None,
    max_value: MaxValueOption = None,
    duplicate_policy: PolicyOption = None,
    strict: StrictOption = False,
    batch_size: BatchOption = None,
    as_json: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Load interactions from a query on your own database, streamed in batches (one run)."""
    from recsys.ingest import CsvSpec, ingest_sql

    spec = CsvSpec(
        user_col=user_col,
        item_col=item_col,
        value_col=_optional(value_col),
        timestamp_col=_optional(timestamp_col),
        kind=kind,
        kind_col=kind_col or None,
        min_value=min_value,
        max_value=max_value,
    )
    engine = open_database(load_settings(database_url))
    started = time.perf_counter()
    report = ingest_sql(
        engine,
        source_url,
        query,
        spec=spec,
        strict=strict,
        batch_size=batch_size,
        progress=console.is_terminal,
        duplicate_policy=_policy(duplicate_policy),
    )
    _finish([report], as_json, time.perf_counter() - started)


@app.command("items")
def items_command(
    path: PathArgument,
    id_col: Annotated[str, typer.Option("--id-col", help="Column of item ids.")] = "item_id",
    title_col: Annotated[str, typer.Option("--title-col", help="Column of titles ('' = none).")] = "title",
    genres_col: Annotated[
        str, typer.Option("--genres-col", help="Column of genres, split on --genres-sep ('' = none).")
    ] = "genres",
    genres_sep: Annotated[str, typer.Option("--genres-sep", help="Separator between genres.")] = "|",
    sep: SepOption = ",",
    names: NoHeaderOption = None,
    encoding: EncodingOption = "utf-8",
    strict: StrictOption = False,
    batch_size: BatchOption = None,
    as_json: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create or update items by id; other columns become attributes."""
    from recsys.ingest import ItemSpec, ingest_folder, ingest_items

    spec = ItemSpec(
        id_col=id_col,
        title_col=_optional(title_col),
        genres_col=_optional(genres_col),
        genres_sep=genres_sep,
        sep=_separator(sep),
        names=_names(names),
        encoding=encoding,
    )
    engine = open_database(load_settings(database_url))
    started = time.perf_counter()
    progress = console.is_terminal
    if path.is_dir():
        reports = ingest_folder(
            engine, path, spec=spec, strict=strict, batch_size=batch_size, progress=progress
        )
    else:
        reports = [
            ingest_items(engine, path, spec=spec, strict=strict, batch_size=batch_size, progress=progress)
        ]
    _finish(reports, as_json, time.perf_counter() - started)


@app.command("users")
def users_command(
    path: PathArgument,
    id_col: Annotated[str, typer.Option("--id-col", help="Column of user ids.")] = "user_id",
    sep: SepOption = ",",
    names: NoHeaderOption = None,
    encoding: EncodingOption = "utf-8",
    strict: StrictOption = False,
    batch_size: BatchOption = None,
    as_json: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create or update users by id; other columns become attributes."""
    from recsys.ingest import UserSpec, ingest_folder, ingest_users

    spec = UserSpec(id_col=id_col, sep=_separator(sep), names=_names(names), encoding=encoding)
    engine = open_database(load_settings(database_url))
    started = time.perf_counter()
    progress = console.is_terminal
    if path.is_dir():
        reports = ingest_folder(
            engine, path, spec=spec, strict=strict, batch_size=batch_size, progress=progress
        )
    else:
        reports = [
            ingest_users(engine, path, spec=spec, strict=strict, batch_size=batch_size, progress=progress)
        ]
    _finish(reports, as_json, time.perf_counter() - started)


@app.command("movielens")
def movielens_command(
    variant: Annotated[
        str,
        typer.Option(
            "--variant", help="ml-100k, ml-latest-small, ml-1m, ml-20m or ml-25m.", show_default=True
        ),
    ] = "ml-100k",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Folder with the original files (as extracted from the zip); omit to download.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Load MovieLens: movies with titles and genres, users with demographics, ratings."""
    from recsys.ingest import ingest_movielens

    settings = load_settings(database_url)
    engine = open_database(settings)
    started = time.perf_counter()
    reports = ingest_movielens(engine, variant, data_dir=data_dir, progress=console.is_terminal)
    _finish(reports, as_json, time.perf_counter() - started)


def stats_command(as_json: JsonOption = False, database_url: DatabaseUrlOption = None) -> None:
    """Counts of users, items and interactions per kind, value ranges, density, newest event."""
    from recsys.ingest import database_stats

    stats = database_stats(open_database(load_settings(database_url)))
    if as_json:
        print_json(stats)
        return
    console.print(f"users         {stats['users']:,}")
    console.print(f"items         {stats['items']:,}")
    console.print(f"interactions  {stats['interactions']:,}")
    for kind, count in stats["interactions_by_kind"].items():
        bounds = stats["value_range_by_kind"][kind]
        console.print(f"  {kind:<12}{count:,}  values {bounds['min']:g}..{bounds['max']:g}")
    console.print(f"density       {stats['density']:.6f}")
    console.print(f"newest event  {stats['newest_time'] or '-'}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="ingest")
    root.command("stats")(stats_command)
