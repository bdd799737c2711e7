"""Removing data: erasing a user or an item with everything recorded about them, one event, or
the stored events that break the input rules. Each removal is written to the ``deletions`` audit
table in the same transaction. Used by the API (``DELETE``) and by ``recsys delete``.

An erased user or item is gone from the database at once, so the next trained version never sees
it; the running service forgets it at once too (``ServingState.forget_user``/``forget_item``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
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


def erase(engine: Engine, target: Target, external_id: str, *, source: str, timeout: float = 60.0) -> Erased:
    """Erase a user or an item (its interactions, offline recommendations and the row itself) or
    one interaction by its ``event_id``; ``found`` is False when there was nothing to erase."""
    with bounded_transaction(engine, timeout) as connection:
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


def invalid_interactions(engine: Engine, rules: object, batch_size: int = 100_000) -> pd.DataFrame:
    """Stored interactions that break ``rules`` (a :class:`~recsys.ingest.validation.Rules`):
    columns id, user, item, kind, value, ts, reason. Checked by the same function as new input."""
    from recsys.ingest.readers import frame_chunks
    from recsys.ingest.specs import CsvSpec
    from recsys.ingest.validation import Rules, validate_interactions

    assert isinstance(rules, Rules)
    spec = CsvSpec(user_col="user", item_col="item", value_col="value", timestamp_col="ts", kind_col="kind")
    query = (
        select(
            Interaction.id,
            User.external_id,
            Item.external_id,
            Interaction.kind,
            Interaction.value,
            Interaction.ts,
        )
        .join(User, User.id == Interaction.user_id)
        .join(Item, Item.id == Interaction.item_id)
        .order_by(Interaction.id)
    )
    found = []
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=batch_size).execute(query)
        for rows in result.partitions():
            frame = pd.DataFrame(rows, columns=["id", "user", "item", "kind", "value", "ts"])
            chunk = next(frame_chunks(frame, spec.columns, len(frame)))
            checked = validate_interactions(chunk, spec, rules)
            if len(checked.rejected):
                bad = frame.iloc[checked.rejected["row_number"].to_numpy() - 1]
                found.append(bad.assign(reason=checked.rejected["reason"].to_numpy()))
    columns = ["id", "user", "item", "kind", "value", "ts", "reason"]
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=columns)


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
