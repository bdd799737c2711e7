"""Database access: tables, engines and migrations."""

from recsys.db.engine import get_engine, is_postgres, session_scope
from recsys.db.schema import ensure_current, upgrade

__all__ = ["ensure_current", "get_engine", "is_postgres", "session_scope", "upgrade"]
