"""Storing posted interactions through the same rules and the same writer as file ingestion.

A request is one small batch: its events are checked by :func:`recsys.ingest.validation.
validate_interactions` (so the API accepts exactly what ingestion accepts, with the same
messages) and written by :func:`recsys.ingest.loader.write_interactions` in one transaction that
gives up after the request timeout. Users and items are created on first sight; an event already
stored (same key and value, or same ``event_id``) is a duplicate, so a retried request stores
nothing twice.

That path runs on pandas and pyarrow, which nothing else a worker does needs: they are imported
by :func:`load_pipeline` before a worker's first write (about a second, once), not at its start.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select

from recsys.db.engine import bounded_transaction
from recsys.db.models import Item, User
from recsys.ingest.rules import Rules
from recsys.ingest.specs import CsvSpec
from service.schemas import InteractionEvent

if TYPE_CHECKING:
    import pandas as pd

#: The request body's field names, read as an interaction source.
REQUEST_SPEC = CsvSpec(
    user_col="user_id", item_col="item_id", value_col="value", timestamp_col="timestamp", kind_col="kind"
)


@dataclass(frozen=True)
class StoreResult:
    stored: int
    duplicates: int
    conflicting: int
    new_users: list[str]
    new_items: list[str]


@dataclass(frozen=True)
class Problem:
    """One event the rules rejected: its position in the request, the field and the reason."""

    index: int
    field: str | None
    reason: str


class EventsRejected(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].reason if problems else "rejected")
        self.problems = problems


class EventsConflict(Exception):
    """The duplicate policy is ``reject`` and an event conflicts with a stored or earlier one."""


class DeadlinePassed(Exception):
    """The client was already told the database was too slow: do not commit behind its back."""


_loaded = False


def load_pipeline() -> None:
    """Import the validation and writing code (pandas, pyarrow); the first call takes about a
    second, later ones nothing. Called in a thread before a request's deadline starts, so that a
    worker's first write is not refused for the time its imports took."""
    global _loaded
    if not _loaded:
        import recsys.ingest.loader
        import recsys.ingest.validation  # noqa: F401

        _loaded = True


def pipeline_loaded() -> bool:
    return _loaded


def store_interactions(
    engine: Engine,
    events: Sequence[InteractionEvent],
    rules: Rules,
    *,
    now: float | None = None,
    timeout: float = 5.0,
    deadline: float | None = None,
) -> StoreResult:
    """Check the events against ``rules`` and insert them (and unknown users and items) in one
    transaction; raises EventsRejected (nothing stored) when any event breaks a rule."""
    import pandas as pd

    from recsys.ingest.loader import IdCache, write_interactions
    from recsys.ingest.readers import frame_chunks
    from recsys.ingest.validation import validate_interactions

    clock = time.time() if now is None else now
    frame = pd.DataFrame(
        {
            "user_id": pd.Series([event.user_id for event in events], dtype=object),
            "item_id": pd.Series([event.item_id for event in events], dtype=object),
            "kind": pd.Series([event.kind for event in events], dtype=object),
            "value": pd.Series([event.value for event in events], dtype="float64"),
            "timestamp": pd.Series([event.epoch_seconds(int(clock)) for event in events], dtype=object),
        }
    )
    chunk = next(frame_chunks(frame, REQUEST_SPEC.columns, max(len(frame), 1)))
    checked = validate_interactions(chunk, REQUEST_SPEC, rules, now=clock)
    if len(checked.rejected):
        raise EventsRejected(
            [
                Problem(int(str(row.row_number)) - 1, _field_name(row.field), str(row.reason))
                for row in checked.rejected.itertuples()
            ]
        )
    good = checked.good.assign(
        event_id=[events[i].event_id for i in checked.good_positions],
        recommendation_id=[events[i].recommendation_id for i in checked.good_positions],
    )
    with bounded_transaction(engine, timeout) as connection:
        new_users = _unknown(connection, User, good["user"])
        new_items = _unknown(connection, Item, good["item"])
        written = write_interactions(connection, good, IdCache(), rules.duplicate_policy)
        if written.rejected:
            raise EventsConflict(next(iter(written.rejected.values())))
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlinePassed
    return StoreResult(
        written.loaded, len(events) - written.loaded, written.conflicting, new_users, new_items
    )


def _field_name(column: object) -> str | None:
    return str(column) if isinstance(column, str) else None


def _unknown(connection: object, table: type[User] | type[Item], external_ids: pd.Series) -> list[str]:
    """The ids of ``external_ids`` not stored yet, in first-seen order."""
    wanted = list(dict.fromkeys(str(external) for external in external_ids))
    query = select(table.external_id).where(table.external_id.in_(wanted))
    found = {row[0] for row in connection.execute(query)}  # type: ignore[attr-defined]
    return [external for external in wanted if external not in found]
