"""`recsys score`: every user's top k for a model version, into the database or a Parquet file."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from recsys.cli.common import (
    AddressOption,
    DatabaseUrlOption,
    EngineOption,
    JsonOption,
    WorkersOption,
    console,
    load_settings,
    print_json,
    show_progress,
)


def score_command(
    version: Annotated[
        str | None, typer.Option("--version", help="Model version (default: the production one).")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="Items per user.")] = 10,
    out: Annotated[
        str, typer.Option("--out", help="'database' (recommendations table) or PATH.parquet.")
    ] = "database",
    block_size: Annotated[
        int, typer.Option("--block-size", min=1, help="Users scored per block (bounds memory).")
    ] = 4096,
    include_genre: Annotated[
        list[str] | None,
        typer.Option("--include-genre", help="Only items with this genre (repeat for several)."),
    ] = None,
    exclude_genre: Annotated[
        list[str] | None,
        typer.Option("--exclude-genre", help="No items with this genre (repeat for several)."),
    ] = None,
    engine: EngineOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score every user (seen items excluded) with the lists the service answers: users with
    feedback newer than the version are folded in, users without history get popular items.
    An interrupted Parquet run resumes where it stopped. With --engine ray the users are shared
    among Ray workers, which must reach the database, the artifacts and the output folder; the
    output is the same."""
    from pipelines.score import score_version
    from recsys.runtime.cluster import engine_from_options

    report = score_version(
        load_settings(database_url),
        version=version,
        k=k,
        out=out,
        block_size=block_size,
        include_genres=include_genre or (),
        exclude_genres=exclude_genre or (),
        progress=show_progress(as_json),
        engine=engine_from_options(engine, address, workers),
    )
    if as_json:
        print_json(asdict(report))
        return
    console.print(
        f"scored {report.users} users with {report.version} ({report.engine} engine): "
        f"{report.rows} rows to {report.target} "
        f"(load {report.load_seconds:.2f}s, scoring {report.score_seconds:.2f}s)"
    )


def register(root: typer.Typer) -> None:
    root.command("score")(score_command)
