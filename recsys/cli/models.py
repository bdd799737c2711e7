"""`recsys models`: list, inspect, promote, roll back and archive registered model versions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from recsys.cli.common import DatabaseUrlOption, JsonOption, console, load_settings, open_database, print_json

if TYPE_CHECKING:
    from recsys.registry.registry import ModelRegistry, VersionInfo

app = typer.Typer(help="Registered model versions and their status.", no_args_is_help=True)

#: Metrics the narrow table shows; --wide adds every other recorded one.
NARROW_METRICS = {"ndcg@10", "baseline_ndcg@10", "backtest_ndcg@10"}
BACKTEST_SPLIT_KEY = "backtest_split"
#: Marks after a validation nDCG@10 that cannot be read next to production's, and their legend
#: (the notes of recsys.registry.comparison.metric_note).
NOTE_MARKS = {"in-sample": "*", "other split": "~", "split not recorded": "?"}
NOTE_TEXT = {
    "in-sample": "in-sample: measured on pairs the version was trained on (optimistic)",
    "other split": "measured on another split than production's: not comparable with it",
    "split not recorded": "split not recorded (an older version): not comparable",
}

VersionArgument = Annotated[str, typer.Argument(help="Version id, as printed by `recsys train`.")]


def _registry(database_url: str | None) -> ModelRegistry:
    from recsys.registry.registry import ModelRegistry

    settings = load_settings(database_url)
    return ModelRegistry(open_database(settings), settings.artifacts)


@app.command("list")
def list_command(
    model: Annotated[str | None, typer.Option("--model", help="Only versions of this model.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only versions with this status (candidate, production, archived)."),
    ] = None,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide/--narrow",
            help="Every column (model, promotion time, watermark, all metrics), wider than 80 characters.",
        ),
    ] = False,
    json_output: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List versions, newest first (in 80 columns; --wide shows everything)."""
    versions = _registry(database_url).list(model=model, status=status)
    if json_output:
        print_json([info.to_dict() for info in versions])
        return
    table = versions_table(versions, wide=wide)
    if wide:
        # As wide as the table needs, whatever the terminal: lines are meant for a pager or a file.
        Console(width=100_000).print(table)
        console.print(f"{len(versions)} model versions")
    else:
        console.print(table)
    for line in notes_legend(versions):
        console.print(line)


def versions_table(versions: list[VersionInfo], *, wide: bool = False) -> Table:
    """The `models list` table. The narrow form fits 80 columns with the longest version ids:
    the model is the first part of the id, and the id holds the creation time, so only
    ``--wide`` repeats them. A mark after nDCG@10 says when it cannot be read next to
    production's (:data:`NOTE_MARKS`); ``backtest`` is the retraining pipeline's figure, measured
    for candidate and production on one split."""
    from recsys.registry.comparison import SPLIT_KEY, metric_notes

    notes = metric_notes(versions)
    table = Table(
        # A title is centred over the console's width, which --wide does not know in advance.
        title=None if wide else f"{len(versions)} model versions",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),  # with the box's blank divider: two spaces between columns
    )
    # Version ids are what people copy into other commands: never cut or wrap them.
    table.add_column("version", no_wrap=True, min_width=max((len(v.version) for v in versions), default=7))
    if wide:
        table.add_column("model", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("nDCG@10", no_wrap=True, justify="right")
    table.add_column("popularity", no_wrap=True, justify="right")
    table.add_column("backtest", no_wrap=True, justify="right")
    shown = NARROW_METRICS | {SPLIT_KEY, BACKTEST_SPLIT_KEY}
    extra_metrics = sorted({key for v in versions for key in v.metrics} - shown) if wide else []
    if wide:
        for column in ("split", "created", "promoted"):
            table.add_column(column, no_wrap=True)
        table.add_column("watermark", no_wrap=True, justify="right")
        for key in extra_metrics:
            table.add_column(key, no_wrap=True, justify="right")
    for info in versions:
        row = [info.version, *([info.model] if wide else []), info.status]
        ndcg = _metric(info, "ndcg@10")
        mark = NOTE_MARKS.get(notes[info.version], "")
        row += [f"{ndcg}{mark or ' '}" if ndcg else "", _metric(info, "baseline_ndcg@10")]
        row.append(_metric(info, "backtest_ndcg@10"))
        if wide:
            split = info.metrics.get(SPLIT_KEY)
            row += [
                str(split.get("kind", "")) if isinstance(split, dict) else "",
                _time(info.created_at),
                _time(info.promoted_at),
                "" if info.watermark is None else str(info.watermark),
                *(_format(info.metrics.get(key)) for key in extra_metrics),
            ]
        table.add_row(*row)
    return table


def notes_legend(versions: list[VersionInfo]) -> list[str]:
    """One line per mark that the table shows."""
    from recsys.registry.comparison import metric_notes

    used = set(metric_notes(versions).values())
    return [f"{mark} {NOTE_TEXT[note]}" for note, mark in NOTE_MARKS.items() if note in used]


@app.command("show")
def show_command(
    version: VersionArgument, json_output: JsonOption = False, database_url: DatabaseUrlOption = None
) -> None:
    """Everything recorded about one version (its row and its version.json), after checking its
    files against their checksums (a damaged version is shown, then refused with exit code 1)."""
    from recsys.errors import ArtifactError
    from recsys.registry.registry import VERSION_FILE

    registry = _registry(database_url)
    info = registry.get(version)
    damage = None
    try:
        registry.verify(version)
    except ArtifactError as exc:
        damage = exc
    manifest_file = info.path / VERSION_FILE
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    payload = {
        **info.to_dict(),
        "libraries": manifest.get("libraries"),
        "training": manifest.get("training"),
        "n_users": manifest.get("n_users"),
        "n_items": manifest.get("n_items"),
        "checksums": "ok" if damage is None else f"FAILED: {damage}",
    }
    if json_output:
        print_json(payload)
    else:
        _print_fields(version, payload)
    if damage is not None:
        raise damage


def _print_fields(version: str, payload: dict[str, object]) -> None:
    table = Table(title=version, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in payload.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={_format(v)}" for k, v in value.items() if v is not None)
        table.add_row(key, _format(value))
    console.print(table)


@app.command("promote")
def promote_command(
    version: VersionArgument,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even below the popularity baseline.")
    ] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Make a version production (refused below the popularity baseline unless --force)."""
    info = _registry(database_url).promote(version, force=force)
    console.print(f"{info.version} is production")


@app.command("rollback")
def rollback_command(database_url: DatabaseUrlOption = None) -> None:
    """Return production to the version promoted before the current one (which is archived)."""
    info = _registry(database_url).rollback()
    console.print(f"{info.version} is production again")


@app.command("archive")
def archive_command(version: VersionArgument, database_url: DatabaseUrlOption = None) -> None:
    """Retire a version: kept on disk, never chosen by rollback."""
    info = _registry(database_url).archive(version)
    console.print(f"{info.version} is archived")


@app.command("clean")
def clean_command(
    min_age_hours: Annotated[
        float, typer.Option("--min-age-hours", min=0, help="Only leftovers at least this old.")
    ] = 24.0,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Delete what killed trainings left behind (temporary and unregistered folders)."""
    removed = _registry(database_url).remove_orphans(min_age_seconds=min_age_hours * 3600)
    for path in removed:
        console.print(f"removed {path}")
    console.print(f"{len(removed)} leftover folders removed")


def _metric(info: VersionInfo, key: str) -> str:
    value = info.metrics.get(key)
    return "" if value is None else f"{float(value):.4f}"


def _time(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
