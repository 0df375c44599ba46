"""The records schema under Alembic: upgrade at start, adopt a pre-Alembic database.

Every start (``connect`` in store.py) and ``warmline db upgrade`` run
``upgrade``: the migrations shipped inside the package
(``warmline/records/migrations``, so a ``pip install`` carries them) up to the
newest. A database made before Alembic (tables from ``metadata.create_all``,
``warmline_schema`` at version 1 or 2) is first brought to version 2 (the uid
column) and stamped at revision 0001, which is that schema, without touching
its rows. A new schema change is a new revision in ``migrations/versions``.

Several nodes share one PostgreSQL and may start at once: the migration runs
in one transaction that first takes a transaction-scoped advisory lock, so the
second node waits and then finds the database at head. PostgreSQL's DDL is
transactional, so a failed migration leaves nothing half done. On SQLite (one
node's file) a second process migrating at the same moment fails its
connect, and the records writer retries it.
"""

from __future__ import annotations

import logging

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, select, text, update

log = logging.getLogger("warmline.records")
BASELINE = "0001"  # the schema before Alembic (warmline_schema version 2)
MIGRATION_LOCK = 0x77726D6C  # "wrml": pg_advisory_xact_lock key for the migration


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration with no alembic.ini: the packaged scripts, our connection."""
    config = Config()
    config.set_main_option("script_location", "warmline.records:migrations")
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> str | None:
    """Bring the database to the newest revision; returns the revision it was at before
    (None: new, or made before Alembic)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
        before = current_revision(connection)
        config = alembic_config(connection)
        if before is None and _made_before_alembic(connection):
            _adopt(connection, config)
        command.upgrade(config, "head")
        after = current_revision(connection)
    if after != before:
        log.info("records: database schema at revision %s (was %s)", after, before or "none")
    return before


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _made_before_alembic(connection: Connection) -> bool:
    return inspect(connection).has_table("warmline_events")


def _adopt(connection: Connection, config: Config) -> None:
    """A pre-Alembic database: to schema version 2 (the uid column), then stamped at the
    baseline revision, which describes exactly that schema. No row is touched."""
    from warmline.records.schema import add_uid_column, schema_table

    if not inspect(connection).has_table("warmline_schema"):
        schema_table.create(connection)
        connection.execute(schema_table.insert().values(version=1))
    version = connection.execute(select(schema_table.c.version)).scalar() or 1
    if version < 2:
        add_uid_column(connection)
        connection.execute(update(schema_table).values(version=2))
    command.stamp(config, BASELINE)
    log.info("records: a database made before Alembic (schema version %d) adopted at "
             "revision %s", version, BASELINE)
