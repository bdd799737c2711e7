"""Removing data: erasing a user or an item with everything recorded about them, one event, or
interactions by id (``recsys.ingest.cleanup`` finds the stored ones that break the input rules).
Each removal is written to the ``deletions`` audit table in the same transaction. Used by the
API (``DELETE``) and by ``recsys delete``.

An erased user or item is gone from the database at once, so the next trained version never sees
it; the running service forgets it at once too (``ServingState.forget_user``/``forget_item``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Engine, delete, func, insert, select

from recsys.db.engine import bounded_transaction
from recsys.db.models import Deletion, Interaction, Item, Recommendation, User

Target = Literal["user", "item", "interaction"]


@dataclass(frozen=True)
class Erased:
    target: str
    external_id: str | None
    found: bool
    interactions: int = 0


def _audit(connection: Connection, erased: Erased, source: str, detail: str | None = None) -> None:
    connection.execute(
        insert(Deletion).values(
            target=erased.target,
            external_id=erased.external_id,
            interactions=erased.interactions,
            source=source,
            detail=detail,
        )
    )


#: PostgreSQL advisory lock keeping erasures and ingestion batches apart: batches hold it shared,
#: erasures exclusively. ``interactions`` has no foreign keys, so this is what keeps a batch from
#: storing interactions of a user or item erased while it ran. SQLite has one writer at a time.
ERASURE_LOCK_KEY = 0x7265_6373_7973  # "recsys"


def _exclude_ingestion(connection: Connection) -> None:
    """Wait for running ingestion batches, and keep new ones out until this transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ERASURE_LOCK_KEY})")


def lock_out_erasures(connection: Connection) -> int:
    """For an ingestion batch: wait for a running erasure and keep new ones out until the
    caller's transaction ends (PostgreSQL); returns the newest deletion's id (0 if none), which
    changes with every erasure."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({ERASURE_LOCK_KEY})")
    return int(connection.scalar(select(func.coalesce(func.max(Deletion.id), 0))) or 0)


def erase(engine: Engine, target: Target, external_id: str, *, source: str, timeout: float = 60.0) -> Erased:
    """Erase a user or an item (its interactions, offline recommendations and the row itself) or
    one interaction by its ``event_id``; ``found`` is False when there was nothing to erase."""
    with bounded_transaction(engine, timeout) as connection:
        _exclude_ingestion(connection)
        if target == "interaction":
            removed = connection.execute(delete(Interaction).where(Interaction.event_id == external_id))
            erased = Erased(target, external_id, removed.rowcount > 0, int(removed.rowcount))
        else:
            table = User if target == "user" else Item
            key = connection.scalar(select(table.id).where(table.external_id == external_id))
            if key is None:
                return Erased(target, external_id, False)
            column = Interaction.user_id if target == "user" else Interaction.item_id
            removed = connection.execute(delete(Interaction).where(column == key))
            listed = Recommendation.user_id if target == "user" else Recommendation.item_id
            connection.execute(delete(Recommendation).where(listed == external_id))
            connection.execute(delete(table).where(table.id == key))
            erased = Erased(target, external_id, True, int(removed.rowcount))
        if erased.found:
            _audit(connection, erased, source)
    return erased


def delete_interactions(engine: Engine, ids: list[int], *, source: str, detail: str) -> int:
    """Delete interactions by database id, audited as one removal of invalid data."""
    removed = 0
    with engine.begin() as connection:
        for start in range(0, len(ids), 10_000):
            part = ids[start : start + 10_000]
            removed += int(connection.execute(delete(Interaction).where(Interaction.id.in_(part))).rowcount)
        if removed:
            _audit(connection, Erased("invalid", None, True, removed), source, detail)
    return removed


def audit_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Deletion)) or 0)


def erasures_since(engine: Engine, after: int) -> list[tuple[int, str, str | None]]:
    """The deletions recorded after deletion id ``after``, oldest first: (id, target, external id).

    Targets are ``user`` and ``item`` (erasures by external id), ``interaction`` (one event by
    its event id) and ``invalid`` (stored rows that broke the input rules, removed by id)."""
    query = (
        select(Deletion.id, Deletion.target, Deletion.external_id)
        .where(Deletion.id > after)
        .order_by(Deletion.id)
    )
    with engine.connect() as connection:
        return [(int(row[0]), str(row[1]), row[2]) for row in connection.execute(query)]
