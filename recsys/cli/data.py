"""`recsys export-matrix` and `recsys generate-synthetic`: matrices out of the database, data into files."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    console,
    load_settings,
    open_database,
    print_json,
    show_progress,
)
from recsys.errors import ConfigError

# The command that loads a generated file, exactly as `recsys generate-synthetic` writes it.
INGEST_COMMAND = (
    "recsys ingest csv {path} --user-col user_id --item-col item_id --value-col rating "
    "--timestamp-col timestamp --kind rating"
)
GENERATE_HELP = f"""Write a synthetic interaction log with planted low-rank structure, power-law item
popularity, heavy-tailed user activity, 1-5 ratings and timestamps.

Columns: user_id, item_id, rating, timestamp (epoch seconds). The item catalogue (item_id,
title, genres) goes beside it as items.csv unless --items-out or --no-items says otherwise.
Load them into the database with (`recsys db upgrade` once creates the schema of a new one):

recsys db upgrade

{INGEST_COMMAND.format(path="PATH")}

recsys ingest items ITEMS_PATH
"""


def parse_weights(pairs: list[str]) -> dict[str, float]:
    """``["view=0.5", "click=2"]`` -> ``{"view": 0.5, "click": 2.0}``."""
    weights: dict[str, float] = {}
    for pair in pairs:
        kind, sep, weight = pair.partition("=")
        try:
            if not sep or not kind.strip():
                raise ValueError
            weights[kind.strip()] = float(weight)
        except ValueError:
            raise ConfigError(f"--weight takes kind=weight, for example view=0.5; got {pair!r}") from None
    return weights


def parse_kinds(values: list[str] | None) -> list[str] | None:
    """Kinds given as repeated options and/or comma-separated lists."""
    if not values:
        return None
    return [kind.strip() for value in values for kind in value.split(",") if kind.strip()]


def parse_timestamp(value: str | None) -> int | None:
    """Epoch seconds or an ISO 8601 date/time (UTC unless it names an offset) -> epoch seconds."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise ConfigError(
            f"--until must be epoch seconds or ISO 8601 (2024-01-31T12:00:00), got {value!r}"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.timestamp())


def export_matrix(
    out: Annotated[
        Path,
        typer.Option("--out", help="The .npz file; the id maps go next to it as <name>.users/items.txt."),
    ],
    kinds: Annotated[
        list[str] | None,
        typer.Option("--kinds", help="Only these interaction kinds (repeat or comma-separate; default all)."),
    ] = None,
    weight: Annotated[
        list[str] | None,
        typer.Option(
            "--weight", help="Weight of a kind as kind=weight, e.g. --weight view=0.2 (repeatable)."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Only events up to this time (epoch seconds or ISO 8601).")
    ] = None,
    combine: Annotated[
        str, typer.Option("--combine", help="Repeated (user, item) events: last, sum or max.")
    ] = "last",
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the user x item matrix (scipy CSR, save_npz) and its id maps, built from the database.

    Row r of the matrix is the user on line r of <name>.users.txt, column c the item on line c of
    <name>.items.txt. Load it with recsys.data.matrix.load_matrix or scipy.sparse.load_npz.
    """
    from recsys.data.matrix import build_interactions, data_fingerprint, save_matrix, watermark

    engine = open_database(load_settings(database_url))
    started = time.perf_counter()
    with console.status("reading interactions and building the matrix"):
        data = build_interactions(
            engine,
            kinds=parse_kinds(kinds),
            weights=parse_weights(weight or []),
            until=parse_timestamp(until),
            combine=combine,
        )
        paths = save_matrix(data, out)
    summary = {
        "users": data.shape[0],
        "items": data.shape[1],
        "interactions": len(data),
        "watermark": watermark(data),
        "data_fingerprint": data_fingerprint(data),
        "files": [str(path) for path in paths],
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        print_json(summary)
        return
    console.print(
        f"{summary['interactions']:,} interactions, {summary['users']:,} users x {summary['items']:,} items "
        f"(watermark {summary['watermark']}) in {summary['seconds']} s"
    )
    for path in paths:
        console.print(f"  wrote {path}")


def generate_synthetic(
    users: Annotated[int, typer.Option("--users", min=1, help="Number of users.")],
    items: Annotated[int, typer.Option("--items", min=1, help="Number of items.")],
    interactions: Annotated[
        int,
        typer.Option(
            "--interactions", min=1, help="Number of (user, item, rating) rows, all distinct pairs."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output file: .csv, or .parquet for Parquet.")],
    items_out: Annotated[
        Path | None,
        typer.Option(
            "--items-out",
            help="Item catalogue file (item_id,title,genres) [default: items.csv beside --out].",
            show_default=False,
        ),
    ] = None,
    write_items: Annotated[
        bool, typer.Option("--catalogue/--no-catalogue", help="Also write the item catalogue.")
    ] = True,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Random seed; the same seed gives the same file.")
    ] = 42,
    rank: Annotated[int, typer.Option("--rank", min=1, help="Number of planted latent factors.")] = 16,
) -> None:
    # The help text is GENERATE_HELP (it embeds INGEST_COMMAND, so the two cannot drift apart).
    from recsys.data.synthetic import default_items_path, write_synthetic, write_synthetic_items

    catalogue = (items_out or default_items_path(out)) if write_items else None
    if catalogue is not None and catalogue.resolve() == out.resolve():
        raise ConfigError(f"--items-out {catalogue} is the events file (--out); choose another name")
    started = time.perf_counter()
    with _progress_bar(interactions) as advance:
        rows = write_synthetic(out, users, items, interactions, seed, rank, progress=advance)
    seconds = time.perf_counter() - started
    console.print(f"wrote {rows:,} interactions to {out} in {seconds:.1f} s", soft_wrap=True)
    if catalogue is not None:
        n_items = write_synthetic_items(catalogue, items, seed, rank)
        console.print(f"wrote {n_items:,} items (id, title, genres) to {catalogue}", soft_wrap=True)
    console.print("load them with (the first command once, for a new database):")
    console.print("  recsys db upgrade", soft_wrap=True)
    console.print(f"  {INGEST_COMMAND.format(path=out)}", soft_wrap=True)
    if catalogue is not None:
        console.print(f"  recsys ingest items {catalogue}", soft_wrap=True)


@contextlib.contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int], None] | None]:
    """A bar advanced by the rows written, at a terminal only (nothing to advance otherwise)."""
    if not show_progress():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("generating", total=total)
        yield lambda n: bar.advance(task, n)


def register(root: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    root.command("export-matrix")(export_matrix)
    root.command("generate-synthetic", help=GENERATE_HELP)(generate_synthetic)
