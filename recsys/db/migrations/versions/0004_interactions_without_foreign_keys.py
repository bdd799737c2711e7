"""lean interactions: no foreign keys, no item index, event ids indexed only where given

Both foreign keys of ``interactions`` (to ``users`` and ``items``) were checked for every inserted
row: on PostgreSQL by a trigger running a query per row and per key, which made a bulk insert
2-3 times slower than without them. The guarantee they gave (no interaction names a user or item
that does not exist) is kept by the code that writes and erases instead:

- erasing a user or an item deletes its interactions, then the row, in one transaction that also
  records the erasure in ``deletions``;
- an ingestion batch creates or reads the ids it writes in its own transaction; ids remembered
  from earlier batches are forgotten as soon as ``deletions`` holds a newer erasure;
- on PostgreSQL an erasure and an ingestion batch never run at the same time: batches hold a
  shared advisory lock, erasures the exclusive one. SQLite runs one writer at a time and refuses
  to commit a write based on an outdated read.

The index on ``interactions.item_id`` received every row at a random position (items are in no
order in a log), so its cost per row grew with the table, which made SQLite loads slow down as
they went; it served only the erasure of an item (and the cascade of a foreign key), which now
scans the table: seconds at tens of millions of rows, for an operation that is rare.

The unique index on ``event_id`` held a NULL entry for every row a file loads (only events posted
to the API carry an event id); it is now partial (``WHERE event_id IS NOT NULL``), so file loads
no longer maintain it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 19:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# SQLite's foreign keys have no names; this convention names them so batch mode can drop them.
_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


_GIVEN = sa.text("event_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_interactions_item", table_name="interactions")
    if op.get_context().dialect.name == "postgresql":
        op.drop_constraint("interactions_user_id_fkey", "interactions", type_="foreignkey")
        op.drop_constraint("interactions_item_id_fkey", "interactions", type_="foreignkey")
        op.drop_constraint("uq_interactions_event_id", "interactions", type_="unique")
    else:
        with op.batch_alter_table("interactions", naming_convention=_NAMES, recreate="always") as batch_op:
            batch_op.drop_constraint("fk_interactions_user_id_users", type_="foreignkey")
            batch_op.drop_constraint("fk_interactions_item_id_items", type_="foreignkey")
            batch_op.drop_constraint("uq_interactions_event_id", type_="unique")
    op.create_index(
        "uq_interactions_event_id",
        "interactions",
        ["event_id"],
        unique=True,
        postgresql_where=_GIVEN,
        sqlite_where=_GIVEN,
    )


def downgrade() -> None:
    op.drop_index("uq_interactions_event_id", table_name="interactions")
    if op.get_context().dialect.name == "postgresql":
        op.create_foreign_key(
            "interactions_user_id_fkey", "interactions", "users", ["user_id"], ["id"], ondelete="CASCADE"
        )
        op.create_foreign_key(
            "interactions_item_id_fkey", "interactions", "items", ["item_id"], ["id"], ondelete="CASCADE"
        )
        op.create_unique_constraint("uq_interactions_event_id", "interactions", ["event_id"])
    else:
        with op.batch_alter_table("interactions", recreate="always") as batch_op:
            batch_op.create_foreign_key(
                "fk_interactions_user_id_users", "users", ["user_id"], ["id"], ondelete="CASCADE"
            )
            batch_op.create_foreign_key(
                "fk_interactions_item_id_items", "items", ["item_id"], ["id"], ondelete="CASCADE"
            )
            batch_op.create_unique_constraint("uq_interactions_event_id", ["event_id"])
    op.create_index("ix_interactions_item", "interactions", ["item_id"], unique=False)
