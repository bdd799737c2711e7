"""Options and helpers shared by every CLI command."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy import Engine

from recsys.db import ensure_current, get_engine
from recsys.settings import Settings, get_settings

console = Console()
err_console = Console(stderr=True)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy database URL (default: RECSYS_DATABASE_URL, else a SQLite file in RECSYS_DATA_DIR).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON result.")]


def load_settings(database_url: str | None = None) -> Settings:
    """The settings, with the command's ``--database-url`` taking precedence."""
    settings = get_settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    return settings


def open_database(settings: Settings, check_schema: bool = True) -> Engine:
    """The engine for the configured database, refusing to go on with an outdated schema."""
    engine = get_engine(settings.database_url)
    if check_schema:
        ensure_current(engine)
    return engine


def print_json(payload: Any) -> None:
    # Plain print: rich would wrap long lines and break the JSON for machines.
    print(json.dumps(payload, indent=2, default=str))
