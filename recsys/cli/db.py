"""`recsys db`: schema migrations."""

from __future__ import annotations

import typer

from recsys.cli.common import DatabaseUrlOption, console, load_settings

app = typer.Typer(help="Create, upgrade and inspect the database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_command(database_url: DatabaseUrlOption = None) -> None:
    """Create the schema or upgrade it to the newest migration."""
    from recsys.db import get_engine
    from recsys.db.schema import upgrade

    settings = load_settings(database_url)
    engine = get_engine(settings.database_url)
    revision = upgrade(engine)
    console.print(f"schema at revision {revision} on {engine.url.render_as_string(hide_password=True)}")


@app.command("status")
def status_command(database_url: DatabaseUrlOption = None) -> None:
    """Print the database's schema revision and the newest one."""
    from recsys.db import get_engine
    from recsys.db.schema import current_revision, head_revision

    engine = get_engine(load_settings(database_url).database_url)
    console.print(f"current: {current_revision(engine)}  newest: {head_revision(engine)}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")
