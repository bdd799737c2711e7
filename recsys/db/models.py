"""Storage tables (SQLAlchemy 2.0 typed ORM). Request/response schemas live elsewhere."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY, so big ids become BIGINT on other databases only.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    title: Mapped[str | None] = mapped_column(Text, nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Interaction(Base):
    """One event. ``ts`` is epoch seconds (UTC), kept as an integer so reads vectorise."""

    __tablename__ = "interactions"
    # The natural key that makes re-loading a file idempotent.
    __table_args__ = (
        UniqueConstraint("user_id", "item_id", "kind", "ts", name="uq_interaction_event"),
        # Partial: file loads give no event ids and so never touch it (migration 0004).
        Index(
            "uq_interactions_event_id",
            "event_id",
            unique=True,
            postgresql_where=text("event_id IS NOT NULL"),
            sqlite_where=text("event_id IS NOT NULL"),
        ),
        # No index on ts or item_id: their insert positions are random, so they made every bulk
        # load slower as the table grew (migrations 0003 and 0004); erasing an item scans.
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # users.id and items.id, without foreign keys (a check per inserted row): ingestion reads the
    # ids in each batch's transaction and erasure deletes the interactions (migration 0004).
    user_id: Mapped[int] = mapped_column(Integer)
    item_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float)
    ts: Mapped[int] = mapped_column(BigInteger)
    # A client's own id for the event: a retried POST with the same event_id stores nothing twice.
    event_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The recommendation list the event answers (the id a recommendation response carried).
    recommendation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class IngestionRun(Base):
    __tablename__ = "ingestion_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(32))  # interactions, items or users
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rows_read: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_loaded: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_duplicate: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    # Rows whose key matched a stored (or earlier) event with another value; how they were treated
    # (updated, kept the first, rejected) is the run's duplicate policy.
    rows_conflicting: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    duplicate_policy: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # host:pid of the process running it, so the next run can tell a killed run from a live one.
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)


class RejectedRow(Base):
    __tablename__ = "rejected_rows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("ingestion_runs.id", ondelete="CASCADE"))
    row_number: Mapped[int] = mapped_column(BigInteger)
    raw: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)


class Deletion(Base):
    """The audit trail of erasures and removals (API and ``recsys delete``)."""

    __tablename__ = "deletions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    target: Mapped[str] = mapped_column(String(16))  # user, item, interaction or invalid
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    interactions: Mapped[int] = mapped_column(BigInteger, default=0)  # interactions removed
    source: Mapped[str] = mapped_column(String(16))  # api or cli
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class ModelVersion(Base):
    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    path: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    watermark: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    data_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Recommendation(Base):
    """Offline top-k lists written by ``recsys score --out database``."""

    __tablename__ = "recommendations"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(String(255))
    score: Mapped[float] = mapped_column(Float)


class Lock(Base):
    """Named locks held across processes (for example one retraining run at a time)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
