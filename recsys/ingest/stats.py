"""What the database holds: counts, kinds, value ranges, density and the newest event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from recsys.db.models import Interaction, Item, User


def database_stats(engine: Engine) -> dict[str, Any]:
    """Summary figures in one dict (the JSON of ``recsys stats --json``).

    ``density`` is distinct (user, item) pairs over users x items, the fill of the matrix that
    training sees.
    """
    with engine.connect() as connection:
        users = connection.scalar(select(func.count()).select_from(User)) or 0
        items = connection.scalar(select(func.count()).select_from(Item)) or 0
        per_kind = connection.execute(
            select(
                Interaction.kind,
                func.count(),
                func.min(Interaction.value),
                func.max(Interaction.value),
                func.max(Interaction.ts),
            )
            .group_by(Interaction.kind)
            .order_by(Interaction.kind)
        ).all()
        pairs_query = select(Interaction.user_id, Interaction.item_id).distinct()
        pairs = connection.scalar(select(func.count()).select_from(pairs_query.subquery())) or 0
    total = sum(int(row[1]) for row in per_kind)
    newest = max((int(row[4]) for row in per_kind), default=None)
    return {
        "users": int(users),
        "items": int(items),
        "interactions": total,
        "interactions_by_kind": {row[0]: int(row[1]) for row in per_kind},
        "value_range_by_kind": {row[0]: {"min": float(row[2]), "max": float(row[3])} for row in per_kind},
        "distinct_pairs": int(pairs),
        "density": float(pairs) / (users * items) if users and items else 0.0,
        "newest_timestamp": newest,
        "newest_time": (datetime.fromtimestamp(newest, tz=UTC).isoformat() if newest is not None else None),
    }
