"""Database access: tables, engines and migrations.

The migration helpers (``ensure_current``, ``upgrade``) import Alembic, which only the commands
that check or change the schema need: they load on first use, so a service worker that only
needs an engine does not import Alembic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recsys.db.engine import get_engine, is_postgres, session_scope

if TYPE_CHECKING:
    from recsys.db.schema import ensure_current, upgrade

_SCHEMA = ("ensure_current", "upgrade")


def __getattr__(name: str) -> Any:
    if name in _SCHEMA:
        from recsys.db import schema

        return getattr(schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ensure_current", "get_engine", "is_postgres", "session_scope", "upgrade"]
