"""lean interaction indexes: drop the index on interactions.ts

Every insert into ``interactions`` updates each of its indexes. The timestamp index is the one
whose insert position is random (events do not arrive in time order across users), so its cost
per row grew with the table: once it outgrows the cache, each batch rewrites most of its pages.
What used it now scans: training reads whole ranges by scanning anyway; the retrain pipeline's
count of events newer than the watermark, `recsys stats`' newest time and training's check for
future events read the table once (seconds at tens of millions of rows) instead of the index;
the dashboard's "recent users" orders by id (arrival order), which the primary key serves.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 16:40:00
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_interactions_ts", table_name="interactions")


def downgrade() -> None:
    op.create_index("ix_interactions_ts", "interactions", ["ts"], unique=False)
