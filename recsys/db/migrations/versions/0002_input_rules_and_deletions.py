"""input rules and deletions: event ids, recommendation ids, run owners and conflicts, audit table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 13:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("recommendation_id", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_interactions_event_id", ["event_id"])

    with op.batch_alter_table("ingestion_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rows_conflicting", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("duplicate_policy", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("owner", sa.String(length=255), nullable=True))

    op.create_table(
        "deletions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("interactions", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("deletions")
    with op.batch_alter_table("ingestion_runs", schema=None) as batch_op:
        batch_op.drop_column("owner")
        batch_op.drop_column("duplicate_policy")
        batch_op.drop_column("rows_conflicting")
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_interactions_event_id", type_="unique")
        batch_op.drop_column("recommendation_id")
        batch_op.drop_column("event_id")
