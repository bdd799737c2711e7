"""`recsys pipeline run`: the unattended retraining job."""

from __future__ import annotations

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
from recsys.cli.data import parse_kinds, parse_weights
from recsys.cli.train import CombineOption, KindsOption, WeightOption

app = typer.Typer(help="The retraining pipeline (safe to run from cron).", no_args_is_help=True)


@app.command("run")
def run_command(
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model to train (default: production's, else RECSYS_DEFAULT_MODEL)."),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Retrain from scratch even when a warm start would do.")
    ] = False,
    tune: Annotated[
        bool | None,
        typer.Option(
            "--tune/--no-tune",
            help="Run the bounded tuning step, or not (default: when the data changed a lot, "
            "RECSYS_PIPELINE_TUNE_TRIALS trials within RECSYS_PIPELINE_TUNE_SECONDS).",
            show_default=False,
        ),
    ] = None,
    kinds: KindsOption = None,
    weight: WeightOption = None,
    combine: CombineOption = None,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train on the interactions new since production's watermark (tuning the model's parameters
    first when the data changed a lot), evaluate on a temporal split, promote when not worse than
    production (within RECSYS_PROMOTION_TOLERANCE) and popularity, build the index, score users if
    RECSYS_PIPELINE_SCORE_K > 0, and ask services to reload."""
    from pipelines.retrain import run_pipeline

    settings = load_settings(database_url)
    result = run_pipeline(
        open_database(settings),
        settings,
        model=model,
        full=full,
        progress=show_progress(as_json),
        kinds=parse_kinds(kinds),
        weights=parse_weights(weight or []),
        combine=combine,
        tune=tune,
    )
    if as_json:
        print_json(result.to_dict())
        return
    # Each step was logged as it ran (on stderr, for cron); stdout gets the outcome.
    console.print(f"[bold]{result.outcome}[/bold]: production is {result.production_after}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="pipeline")
