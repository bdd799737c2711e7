"""`recsys quickstart`: the whole pipeline on an embedded default, with no server and no download."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from recsys.cli.common import DatabaseUrlOption, console, load_settings, show_progress

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from recsys.settings import Settings

#: The embedded synthetic dataset: MovieLens-100k-sized, so the default model trains in seconds.
SYNTHETIC_USERS, SYNTHETIC_ITEMS, SYNTHETIC_INTERACTIONS, SYNTHETIC_SEED = 943, 1682, 100_000, 42


def quickstart(
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            help="'synthetic' (embedded, seeded) or a MovieLens variant such as ml-100k "
            "(read from --data-dir, else downloaded from GroupLens and checksum-verified).",
        ),
    ] = "synthetic",
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Folder with the original MovieLens files.", show_default=False),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model to train (default RECSYS_DEFAULT_MODEL).", show_default=False),
    ] = None,
    users: Annotated[int, typer.Option("--users", min=1, max=50, help="Users to show.")] = 3,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="Recommendations per user.")] = 5,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create the database, load a dataset, train and index a model, and print recommendations."""
    from recsys.db import get_engine, upgrade

    started = time.perf_counter()
    settings = load_settings(database_url)
    engine = get_engine(settings.database_url)
    revision = upgrade(engine)
    where = engine.url.render_as_string(hide_password=True)
    console.print(f"[bold]1. database[/bold] {where} (schema {revision})")

    _load(engine, settings, dataset, data_dir)
    version = _train(engine, settings, model or settings.default_model)
    _show_recommendations(engine, settings, version, users, k)
    console.print(f"\ndone in {time.perf_counter() - started:.1f} s. Serve these recommendations with:")
    url_option = "" if database_url is None else f" --database-url '{database_url}'"
    console.print(f"  recsys serve{url_option}")
    console.print(f"  curl 'http://{settings.host}:{settings.port}/users/<user id>/recommendations?k={k}'")


def _load(engine: Engine, settings: Settings, dataset: str, data_dir: Path | None) -> None:
    from recsys.ingest import CsvSpec, ItemSpec, database_stats, ingest_frame, ingest_movielens

    console.print(f"[bold]2. ingest[/bold] {dataset}")
    if dataset == "synthetic":
        from recsys.data.synthetic import generate_synthetic, synthetic_items

        frame = generate_synthetic(SYNTHETIC_USERS, SYNTHETIC_ITEMS, SYNTHETIC_INTERACTIONS, SYNTHETIC_SEED)
        source = (
            f"synthetic:users={SYNTHETIC_USERS},items={SYNTHETIC_ITEMS},"
            f"interactions={SYNTHETIC_INTERACTIONS},seed={SYNTHETIC_SEED}"
        )
        catalogue = synthetic_items(SYNTHETIC_ITEMS, SYNTHETIC_SEED)
        reports = [
            ingest_frame(engine, catalogue, spec=ItemSpec(), source=f"{source}:items"),
            ingest_frame(engine, frame, spec=CsvSpec(), source=source, progress=show_progress()),
        ]
    else:
        reports = ingest_movielens(
            engine, dataset, data_dir=data_dir, cache_dir=settings.downloads, progress=show_progress()
        )
    for report in reports:
        console.print(
            f"   {report.target}: {report.rows_loaded:,} loaded, {report.rows_duplicate:,} already "
            f"there, {report.rows_rejected:,} rejected ({report.seconds:.1f} s)"
        )
    stats = database_stats(engine)
    console.print(
        f"   database holds {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions"
    )


def _train(engine: Engine, settings: Settings, model: str) -> str:
    from recsys.training.trainer import train

    console.print(f"[bold]3. train[/bold] {model} (validation split, then refit on everything)")
    info = train(engine, settings, model, progress=show_progress())
    metrics = info.metrics
    baseline = {key: value for key, value in metrics.items() if key.startswith("baseline_")}
    console.print(
        f"   version {info.version} ({info.status}): validation nDCG@10 "
        f"{metrics.get('ndcg@10', float('nan')):.3f}, popularity "
        f"{baseline.get('baseline_ndcg@10', float('nan')):.3f}, fit {metrics['fit_seconds']:.1f} s"
    )
    return info.version


def _show_recommendations(engine: Engine, settings: Settings, version: str, n_users: int, k: int) -> None:
    import numpy as np

    from recsys.data.catalog import item_catalog
    from recsys.data.matrix import build_interactions
    from recsys.index import INDEX_DIR, load_index
    from recsys.registry.registry import ModelRegistry
    from recsys.scoring import align_to_model

    loaded = ModelRegistry(engine, settings.artifacts).load(version)
    index = load_index(loaded.path / INDEX_DIR)
    console.print(f"[bold]4. index[/bold] {type(index).__name__} over {index.n_items:,} items")
    users, rows = align_to_model(build_interactions(engine), loaded.users, loaded.items)
    catalog = item_catalog(engine, loaded.items)
    chosen = np.arange(min(n_users, len(users)))
    queries = loaded.model.user_vectors(chosen, rows[chosen])
    ids, scores = index.search(queries, k, rows[chosen])
    table = Table(title=f"5. top {k} for {len(chosen)} users ({version})")
    for column in ("user", "rank", "item", "title", "score"):
        table.add_column(column)
    for row, user in enumerate(chosen):
        for rank, (item, score) in enumerate(zip(ids[row], scores[row], strict=True), start=1):
            if item < 0:
                break
            title = catalog.title.iloc[item] or ""
            table.add_row(
                str(users.external_ids[user]),
                str(rank),
                str(loaded.items.external_ids[item]),
                title,
                f"{score:.3f}",
            )
    console.print(table)


def register(root: typer.Typer) -> None:
    root.command("quickstart")(quickstart)
