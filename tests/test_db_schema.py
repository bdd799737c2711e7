"""Schema creation, every migration path and the schema check, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from recsys.db import ensure_current, get_engine, upgrade
from recsys.db import schema as schema_module
from recsys.db.models import Base
from recsys.errors import SchemaError


def test_upgrade_creates_every_table_at_head(database_url: str) -> None:
    engine = get_engine(database_url)
    revision = upgrade(engine)
    assert revision == schema_module.head_revision(engine)
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    ensure_current(engine)  # no error once current
    assert upgrade(engine) == revision  # running it again changes nothing


def test_every_revision_upgrades_to_head_and_downgrades_to_nothing(database_url: str) -> None:
    engine = get_engine(database_url)
    config = schema_module.alembic_config(engine)
    revisions = [
        script.revision for script in ScriptDirectory.from_config(config).walk_revisions("base", "heads")
    ]
    for revision in reversed(revisions):  # oldest first
        upgrade(engine, revision)
        assert schema_module.current_revision(engine) == revision
    assert schema_module.current_revision(engine) == schema_module.head_revision(engine)
    command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set()
    with pytest.raises(SchemaError, match="has no recsys schema; run `recsys db upgrade` to create it"):
        ensure_current(engine)
    upgrade(engine)
    ensure_current(engine)


def test_ensure_current_names_both_revisions_and_the_fix(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine(database_url)
    current = upgrade(engine)
    monkeypatch.setattr(schema_module, "head_revision", lambda _engine: "9999_newer")
    with pytest.raises(SchemaError) as error:
        ensure_current(engine)
    message = str(error.value)
    assert f"is at schema revision {current}, the newest is 9999_newer; run `recsys db upgrade`" in message


def test_interaction_natural_key_is_unique(database_url: str) -> None:
    engine = get_engine(database_url)
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO users (external_id, attributes) VALUES ('u', '{}')"))
        connection.execute(text("INSERT INTO items (external_id, attributes) VALUES ('i', '{}')"))
    event = "INSERT INTO interactions (user_id, item_id, kind, value, ts) VALUES (1, 1, 'rating', 4, 10)"
    with engine.begin() as connection:
        connection.execute(text(event))
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text(event))
