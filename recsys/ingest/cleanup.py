"""Finding stored interactions that break the input rules (for example values stored before the
rules existed), so that ``recsys delete invalid`` can remove them."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine, select

from recsys.db.models import Interaction, Item, User
from recsys.ingest.readers import frame_chunks
from recsys.ingest.specs import CsvSpec
from recsys.ingest.validation import Rules, validate_interactions


def invalid_interactions(engine: Engine, rules: Rules, batch_size: int = 100_000) -> pd.DataFrame:
    """Stored interactions that break ``rules``: columns id, user, item, kind, value, ts, reason.
    Checked by the same function as new input, a batch at a time."""
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
