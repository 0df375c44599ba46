"""Alembic's environment: always given a connection by records/migrate.py.

warmline runs its migrations itself (at start, or `warmline db upgrade`), on the
connection it opened, inside the transaction that holds the migration lock; no
alembic.ini is needed. Offline (SQL script) mode is not offered.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from warmline.records.schema import metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("warmline migrations run through warmline.records.migrate "
                           "(warmline db upgrade), which passes the connection")
    context.configure(connection=connection, target_metadata=metadata,
                      compare_type=True, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run()
