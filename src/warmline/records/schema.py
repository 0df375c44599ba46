"""The records tables as SQLAlchemy models: what the Alembic migrations build.

``metadata`` is the target the migrations in ``migrations/versions`` must
reach; a test runs Alembic's autogenerate compare against a migrated SQLite
and PostgreSQL database and expects no difference. Change a table here and
add a revision there, together.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)

SCHEMA_VERSION = 2  # warmline_schema, kept for warmlines before Alembic: 2, the uid column
metadata = MetaData()
events_table = Table(
    "warmline_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("call_id", String(64), nullable=False, index=True),
    Column("handoff_id", String(64), nullable=True, index=True),
    Column("kind", String(64), nullable=False, index=True),
    Column("data", Text, nullable=False),
    Column("uid", String(32), nullable=True),  # NULL only on rows stored by version 1
)
uid_index = Index("ix_warmline_events_uid", events_table.c.uid, unique=True)
schema_table = Table("warmline_schema", metadata, Column("version", Integer, nullable=False))


def add_uid_column(connection: Connection) -> None:
    """Version 1 to 2. Old rows keep a NULL uid (a unique index allows many NULLs on
    both databases). If two engines migrate at once, the loser's connect fails and
    the writer simply retries it."""
    columns = {column["name"] for column in inspect(connection).get_columns("warmline_events")}
    if "uid" not in columns:
        connection.execute(text("ALTER TABLE warmline_events ADD COLUMN uid VARCHAR(32)"))
    uid_index.create(connection, checkfirst=True)
