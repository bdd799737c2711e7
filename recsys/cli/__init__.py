"""The `recsys` command. Each command group lives in its own module with a ``register`` hook.

Modules import their heavy dependencies (TensorFlow, FAISS) inside the commands, so
``recsys --help`` and the data commands start fast.
"""

from __future__ import annotations

import importlib
import logging

import typer

from recsys.cli.common import err_console
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
]

app = typer.Typer(
    name="recsys",
    help="recsys: ingest interactions, train recommenders, serve and score them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for _module in COMMAND_MODULES:
    importlib.import_module(f"recsys.cli.{_module}").register(app)


def main() -> None:
    """Console entry point: recsys errors become one red line and exit code 1, not a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except RecsysError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from None
    except (ValueError, OSError) as exc:
        # Bad input that reached a check outside recsys's own errors (a settings value pydantic
        # rejects, a file that cannot be read, a shape numpy refuses): a message, not a traceback;
        # RECSYS_LOG_LEVEL=DEBUG logs the traceback too.
        logging.getLogger("recsys").debug("the error in full", exc_info=True)
        err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
