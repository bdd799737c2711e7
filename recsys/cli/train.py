"""`recsys train` and `recsys tune`: database -> registered model version."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from recsys.cli.common import (
    AddressOption,
    DatabaseUrlOption,
    EngineOption,
    JsonOption,
    WorkersOption,
    console,
    err_console,
    load_settings,
    open_database,
)
from recsys.cli.data import parse_kinds, parse_timestamp, parse_weights
from recsys.models import MODEL_CLASSES

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=f"Model: {', '.join(sorted(MODEL_CLASSES))} (default: RECSYS_DEFAULT_MODEL).",
        show_default=False,
    ),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        help="Model parameter as key=value (repeatable), checked by the model's config; "
        "e.g. --param factors=64 --param regularization=20.",
        show_default=False,
    ),
]
KindsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--kinds",
        help="Interaction kinds to train on (repeatable or comma-separated; default: the model's recipe, "
        "which takes all).",
        show_default=False,
    ),
]
WeightOption = Annotated[
    list[str] | None,
    typer.Option(
        "--weight",
        help="Weight of a kind as KIND=W (repeatable): each event counts value x W (default 1).",
        show_default=False,
    ),
]
CombineOption = Annotated[
    str | None,
    typer.Option(
        "--combine",
        help="Repeated events of a (user, item) pair: last, sum or max (default: the model's recipe).",
        show_default=False,
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option(
        "--until",
        help="Only interactions up to this time: epoch seconds or an ISO date/time (UTC if no zone).",
        show_default=False,
    ),
]


def train_command(
    model: ModelOption = None,
    param: ParamOption = None,
    kinds: KindsOption = None,
    weight: WeightOption = None,
    combine: CombineOption = None,
    until: UntilOption = None,
    warm_start: Annotated[
        str | None,
        typer.Option(
            "--warm-start", help="Start from this version's vectors (same model).", show_default=False
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a killed training from its checkpoints.")
    ] = False,
    promote: Annotated[
        bool, typer.Option("--promote", help="Make the new version production (if it beats popularity).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="With --promote: promote even below the popularity baseline.")
    ] = False,
    engine_name: EngineOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    json_output: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Train a model on the database's interactions, register it and print its version id.
    --engine ray shares iALS's solves among Ray workers; MF and two-tower train on several
    machines through TF_CONFIG instead (docs/scaling.md)."""
    from recsys.cli.common import print_json
    from recsys.errors import ConfigError
    from recsys.runtime.cluster import engine_from_options
    from recsys.runtime.device import worker_role
    from recsys.training.trainer import parse_param_options, train, train_as_worker, version_summary

    settings = load_settings(database_url)
    engine = open_database(settings)
    cluster = engine_from_options(engine_name, address, workers)
    role = worker_role()
    if role is not None and not role.is_chief:  # a TF_CONFIG worker: trains, the chief registers
        if cluster is not None or promote:
            raise ConfigError("a non-chief TF_CONFIG worker takes neither --engine ray nor --promote")
        train_as_worker(
            engine,
            settings,
            model,
            parse_param_options(param or []),
            kinds=parse_kinds(kinds),
            weights=parse_weights(weight or []),
            combine=combine,
            until=parse_timestamp(until),
            warm_start=warm_start,
            resume=resume,
        )
        message = f"trained as TF_CONFIG {role.task_type} {role.index} of {role.workers}; the chief registers"
        if json_output:
            print_json({"worker": role.task_type, "index": role.index, "registered": None})
        else:
            err_console.print(message)
        return
    info = train(
        engine,
        settings,
        model,
        parse_param_options(param or []),
        kinds=parse_kinds(kinds),
        weights=parse_weights(weight or []),
        combine=combine,
        until=parse_timestamp(until),
        warm_start=warm_start,
        resume=resume,
        promote=promote,
        force=force,
        progress=not json_output and sys.stderr.isatty(),
        cluster=cluster,
    )
    if json_output:
        print_json(version_summary(info))
        return
    metrics = info.metrics
    if "ndcg@10" not in metrics:
        err_console.print(
            f"{info.model} {info.status}: NOT VALIDATED (too little data to hold some out; see the log); "
            f"promoting it needs --force; fit {metrics.get('fit_seconds', float('nan')):.1f} s"
        )
        print(info.version)
        return
    err_console.print(
        f"{info.model} {info.status}: validation nDCG@10 {metrics.get('ndcg@10', float('nan')):.4f} "
        f"(popularity {metrics.get('baseline_ndcg@10', float('nan')):.4f}), "
        f"fit {metrics.get('fit_seconds', float('nan')):.1f} s"
    )
    print(info.version)


def tune_command(
    model: ModelOption = None,
    trials: Annotated[int, typer.Option("--trials", "-n", min=1, help="Number of trials.")] = 20,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", min=0, help="Stop starting trials after this many seconds.", show_default=False
        ),
    ] = None,
    param: ParamOption = None,
    kinds: KindsOption = None,
    weight: WeightOption = None,
    combine: CombineOption = None,
    until: UntilOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the TPE sampler.")] = 42,
    register: Annotated[
        bool, typer.Option("--register", help="Train the best parameters and register the model.")
    ] = False,
    json_output: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Search the model's hyper-parameters on the validation split (Optuna TPE)."""
    from recsys.cli.common import print_json
    from recsys.training.trainer import parse_param_options
    from recsys.training.tuning import tune

    settings = load_settings(database_url)
    engine = open_database(settings)
    model = model or settings.default_model
    result = tune(
        engine,
        settings,
        model,
        trials=trials,
        timeout=timeout,
        params=parse_param_options(param or []),
        kinds=parse_kinds(kinds),
        weights=parse_weights(weight or []),
        combine=combine,
        until=parse_timestamp(until),
        seed=seed,
        register=register,
    )
    if json_output:
        print_json(result.to_dict())
        return
    table = Table(title=f"{model} trials ({result.metric}, {result.direction})")
    for column in ("trial", result.metric, "seconds", "params"):
        table.add_column(column, justify="left" if column == "params" else "right")
    for trial in result.trials:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        table.add_row(str(trial.number), value, f"{trial.seconds:.1f}", params or "-")
    console.print(table)
    best = ", ".join(f"{k}={_short(v)}" for k, v in result.best_params.items()) or "(defaults)"
    console.print(f"best {result.metric} {result.best_value:.4f}: {best}")
    if result.version is not None:
        console.print(f"registered {result.version.version} ({result.version.status})")


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def register(root: typer.Typer) -> None:
    """Attach `recsys train` and `recsys tune` to the root app."""
    root.command("train")(train_command)
    root.command("tune")(tune_command)
