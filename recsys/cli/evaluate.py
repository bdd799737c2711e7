"""`recsys evaluate` commands (filled in by the issue that owns them)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    del root
