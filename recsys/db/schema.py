"""Schema migrations (Alembic) and the check every command runs before touching tables."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from recsys.errors import SchemaError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    """An Alembic config built in code, so the installed package needs no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Create or upgrade the schema; returns the revision the database is now at."""
    command.upgrade(alembic_config(engine), revision)
    return current_revision(engine)


def ensure_current(engine: Engine) -> None:
    """Raise a SchemaError that says how to fix it unless the schema is at the newest migration."""
    current, head = current_revision(engine), head_revision(engine)
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise SchemaError(f"the database {where} has no recsys schema; run `recsys db upgrade` to create it")
    raise SchemaError(
        f"the database {where} is at schema revision {current}, the newest is {head}; run `recsys db upgrade`"
    )
