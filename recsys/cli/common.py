"""Options and helpers shared by every CLI command."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    # Imported inside the functions: `recsys --help` must not pay for SQLAlchemy and pydantic.
    from sqlalchemy import Engine

    from recsys.settings import Settings

# soft_wrap: a line longer than the terminal (a path, a command to copy) is never broken in two;
# tables still fit the width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy database URL (default: RECSYS_DATABASE_URL, else a SQLite file in RECSYS_DATA_DIR).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json/--no-json", help="Print a machine-readable JSON result instead of text.")
]

EngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        help="'local' (this process) or 'ray' (Ray workers; needs the distributed extra).",
    ),
]
AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray cluster to run on (ray://host:10001, host:6379 or auto); default: RAY_ADDRESS, "
        "else a Ray started on this machine for the run.",
        show_default=False,
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers", min=1, help="Ray workers (default: one per CPU of the cluster).", show_default=False
    ),
]


def load_settings(database_url: str | None = None) -> Settings:
    """The settings, with the command's ``--database-url`` taking precedence."""
    from recsys.settings import get_settings

    settings = get_settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    return settings


def open_database(settings: Settings, check_schema: bool = True) -> Engine:
    """The engine for the configured database, refusing to go on with an outdated schema."""
    from recsys.db import ensure_current, get_engine

    engine = get_engine(settings.database_url)
    if check_schema:
        ensure_current(engine)
    return engine


def print_json(payload: Any) -> None:
    # Plain print: rich would wrap long lines and break the JSON for machines.
    print(json.dumps(payload, indent=2, default=str))


def show_progress(as_json: bool = False) -> bool:
    """Whether to draw progress bars: only for a person at a terminal, never into a file or a pipe
    (cron, CI, ``| tee``) and never around JSON output. Plain log lines report progress otherwise."""
    return not as_json and console.is_terminal and sys.stderr.isatty()
