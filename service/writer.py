"""Storing posted interactions: a small idempotent bulk upsert through SQLAlchemy.

The ingest package loads files through staging tables, which suits millions of rows; a request
carries at most a few thousand events, so one transaction of plain multi-row statements is
simpler and faster here. Users and items are created on first sight; an event already stored
(same user, item, kind and timestamp) is skipped, so a retried request stores nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from recsys.db.engine import is_postgres
from recsys.db.models import Interaction, Item, User
from service.schemas import InteractionEvent


@dataclass(frozen=True)
class StoreResult:
    stored: int
    duplicates: int
    new_users: list[str]
    new_items: list[str]


def store_interactions(engine: Engine, events: Sequence[InteractionEvent]) -> StoreResult:
    """Insert the events (and unknown users and items) in one transaction."""
    insert = postgresql.insert if is_postgres(engine) else sqlite.insert
    now = int(time.time())
    with engine.begin() as connection:
        user_ids, new_users = _resolve(connection, insert, User, [event.user_id for event in events])
        item_ids, new_items = _resolve(connection, insert, Item, [event.item_id for event in events])
        rows = [
            {
                "user_id": user_ids[event.user_id],
                "item_id": item_ids[event.item_id],
                "kind": event.kind,
                "value": event.value,
                "ts": now if event.timestamp is None else event.timestamp,
            }
            for event in events
        ]
        statement = (
            insert(Interaction)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["user_id", "item_id", "kind", "ts"])
            .returning(Interaction.id)
        )
        stored = len(connection.execute(statement).all())
    return StoreResult(stored, len(events) - stored, new_users, new_items)


def _resolve(
    connection: Connection, insert: object, table: type[User] | type[Item], external_ids: list[str]
) -> tuple[dict[str, int], list[str]]:
    """Database ids of the external ids, creating the missing rows; also returns the created ids."""
    wanted = list(dict.fromkeys(external_ids))
    query = select(table.external_id, table.id).where(table.external_id.in_(wanted))
    found: dict[str, int] = {external: key for external, key in connection.execute(query)}
    missing = [external for external in wanted if external not in found]
    if missing:
        statement = (
            insert(table)  # type: ignore[operator]
            .values([{"external_id": external, "attributes": {}} for external in missing])
            .on_conflict_do_nothing(index_elements=["external_id"])
        )
        connection.execute(statement)
        found.update({external: key for external, key in connection.execute(query)})
    return found, missing
