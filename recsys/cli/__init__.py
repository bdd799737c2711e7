"""The `recsys` command. Each command group lives in its own module with a ``register`` hook.

Modules import their heavy dependencies (TensorFlow, FAISS, SQLAlchemy, pandas) inside the
commands, so ``recsys --help`` and ``recsys --version`` start fast
(``python -X importtime -m recsys --help`` shows what start-up imports).
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from recsys import __version__
from recsys.errors import RecsysError

COMMAND_MODULES = [
    "db",
    "ingest",
    "data",
    "quickstart",
    "train",
    "models",
    "evaluate",
    "score",
    "serve",
    "pipeline",
    "doctor",
]

app = typer.Typer(
    name="recsys",
    help="recsys: ingest interactions, train recommenders, serve and score them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help in the conventional layout: flags as `--json / --no-json`, no type boxes.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"recsys {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    # Runs before every command (not for --help or --version): settings checked, logging set up.
    from pydantic import ValidationError

    from recsys.errors import ConfigError
    from recsys.log import configure_logging
    from recsys.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"RECSYS_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    configure_logging(settings.log_level, settings.log_format)


for _module in COMMAND_MODULES:
    importlib.import_module(f"recsys.cli.{_module}").register(app)


def main() -> None:
    """Console entry point: recsys errors become one red line and exit code 1, not a traceback."""
    from recsys.cli.common import err_console

    try:
        app()
    except RecsysError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from None
